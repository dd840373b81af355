/**
 * Runs benchmarks: `npm run bench` lists them, `npm run bench -- NAME [args]` runs bench/AREA/NAME.ts
 * (AREA: defenses, detection, models, server, eval, examples). Names stay flat so that a command in
 * the docs does not say where a benchmark lives; a file whose name starts with `_` is a helper, and
 * children/ holds the child processes the server benchmarks start. Each benchmark prints its own
 * figures and ratios against a baseline measured in the same process.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const dir = fileURLToPath(new URL('.', import.meta.url));
const files = new Map<string, string>();
for (const area of readdirSync(dir, { withFileTypes: true })) {
  if (!area.isDirectory() || area.name === 'children') continue;
  for (const file of readdirSync(join(dir, area.name))) {
    if (!file.endsWith('.ts') || file.startsWith('_')) continue;
    const name = file.slice(0, -3);
    // A name in two areas would make `npm run bench -- NAME` ambiguous.
    if (files.has(name)) throw new Error(`two benchmarks named ${name}: ${files.get(name)} and ${join(dir, area.name, file)}`);
    files.set(name, join(dir, area.name, file));
  }
}
const names = [...files.keys()].sort();
const name = process.argv[2];
if (!name || !files.has(name)) {
  console.log(`usage: npm run bench -- <name> [args]\nbenchmarks: ${names.join(', ')}`);
  process.exit(name ? 2 : 0);
}
process.argv.splice(2, 1);
await import(pathToFileURL(files.get(name)!).href);
