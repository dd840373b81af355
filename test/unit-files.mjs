#!/usr/bin/env node
/**
 * The fast part of the suite, for `npm run test:unit`: every test/**\/*.test.ts that, by its own text
 * and that of the test helpers it imports (transitively), starts no child process, no worker thread,
 * no server or socket, no Redis, no `npm pack`, and loads or trains no TF.js model. A new test file is
 * sorted by what it does, so the list needs no upkeep; `npm test` still runs every file.
 *
 *   node test/unit-files.mjs          the unit files, one a line
 *   node test/unit-files.mjs --why    every test file, and why the slow ones are left out
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const testDir = join(root, 'test');

/** What makes a test slow or environment-bound, and how to spot it in its source (or its helpers'). */
const SLOW = [
  { why: 'starts child processes', pattern: /\bnode:child_process\b|from 'child_process'|\brunCli\(|\bspawn\(|\bexecFile/ },
  { why: 'uses Redis', pattern: /\bstartRedis\b|redis-server|\bioredis\b/ },
  { why: 'runs npm pack or install', pattern: /\bnpm pack\b|'pack'|npm install/ },
  { why: 'starts worker threads', pattern: /\bnode:worker_threads\b|\bthread: true\b|\bloadThreadedSurrogate\b/ },
  { why: 'starts a server or opens sockets', pattern: /\bnode:(http|https|net)\b|\bsupertest\b|\.listen\(|\bstartDefenseProxy\b|\bstartStubUpstream\b/ },
  {
    why: 'loads or trains TF.js models',
    pattern:
      /\binitBackend\b|\bsetUpBackend\b|\bcreateModel\b|\bloadSurrogate\b|\bSurrogate\.random\b|\btrain(Model|Knockoff)\b|src\/models\/(index|tfjs\/[\w/-]+)\.js|src\/eval\/(grid\/evaluate|knockoff)\.js|@tensorflow\//,
  },
  { why: 'decodes images with sharp', pattern: /from 'sharp'/ },
];

function walk(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'node_modules' ? [] : walk(path);
    return entry.name.endsWith('.test.ts') ? [path] : [];
  });
}

/** The file's text and that of every test helper it imports, through relative imports that stay under test/. */
function sourcesOf(file, seen = new Set()) {
  if (seen.has(file)) return [];
  seen.add(file);
  // Type-only imports load nothing at run time.
  const text = readFileSync(file, 'utf8').replace(/^\s*import type [^;]*;/gm, '');
  const helpers = [...text.matchAll(/(?:import|export)[^'"]*?from\s+['"](\.{1,2}\/[^'"]+)['"]/g)]
    .map((m) => resolve(dirname(file), m[1].replace(/\.js$/, '.ts')))
    .filter((path) => path.startsWith(`${testDir}/`) && existsSync(path));
  return [{ file, text }, ...helpers.flatMap((path) => sourcesOf(path, seen))];
}

/** Why `file` is not a unit test file: each slow trait, with the helper it comes from when not the file itself. */
function reasonsFor(file) {
  const reasons = new Map();
  for (const { file: source, text } of sourcesOf(file)) {
    for (const { why, pattern } of SLOW) {
      if (!reasons.has(why) && pattern.test(text)) reasons.set(why, source === file ? why : `${why} (${relative(root, source)})`);
    }
  }
  return [...reasons.values()];
}

const files = walk(testDir).sort();
if (process.argv.includes('--why')) {
  for (const file of files) {
    const reasons = reasonsFor(file);
    console.log(`${reasons.length ? 'slow' : 'unit'}  ${relative(root, file)}${reasons.length ? `: ${reasons.join('; ')}` : ''}`);
  }
} else {
  const unit = files.filter((file) => reasonsFor(file).length === 0);
  if (unit.length === 0) throw new Error('test/unit-files.mjs found no unit test files');
  console.log(unit.map((file) => relative(root, file)).join('\n'));
}
