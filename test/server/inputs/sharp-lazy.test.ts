import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { it } from 'node:test';

const root = fileURLToPath(new URL('../../..', import.meta.url));

it('loads sharp only when an image is decoded, not with the library', () => {
  const script = `
    import { createRequire } from 'node:module';
    const require = createRequire(import.meta.url);
    const sharpFiles = () => Object.keys(require.cache).filter((k) => /[\\\\/]sharp[\\\\/]/.test(k)).length;
    await import('./src/index.ts');
    const before = sharpFiles();
    const inputs = await import('./src/server/inputs/index.ts');
    const read = inputs.createInputReader(inputs.resolveInputOptions({ image: { width: 2, height: 2 } }));
    await Promise.resolve(read({ kind: 'encoded-images', rows: 1, images: ['iVBORw0KGgo='], where: 'x' })).catch(() => {});
    console.log(JSON.stringify({ before, after: sharpFiles() }));`;
  const result = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: root, encoding: 'utf8', timeout: 60_000 });
  assert.equal(result.status, 0, result.stderr);
  const { before, after } = JSON.parse(result.stdout.trim().split('\n').at(-1)!) as { before: number; after: number };
  assert.equal(before, 0, 'importing the library loads no sharp file');
  assert.ok(after > 0, 'decoding an image loads sharp');
});
