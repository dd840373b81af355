#!/usr/bin/env node
// Entry point. An installed package ships only compiled JavaScript (dist/), which runs as is. A checkout
// of the repository runs its TypeScript source through tsx (a dev dependency), so a stale dist/ never answers.
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const source = join(root, 'src', 'cli', 'main.ts');
const compiled = join(root, 'dist', 'src', 'cli', 'main.js');
if (existsSync(source)) {
  const { register } = await import('tsx/esm/api');
  register();
  await import(pathToFileURL(source).href);
} else if (existsSync(compiled)) {
  await import(pathToFileURL(compiled).href);
} else {
  process.stderr.write(`msd: ${compiled} is missing; build the package first (npm run build)\n`);
  process.exit(1);
}
