/**
 * Child of onnx-telemetry.test.ts: runs an ONNX surrogate in this thread or in a worker thread
 * (argv[2]: main | worker), then prints the ORT_DISABLE_TELEMETRY the library was started with.
 */
import { loadSurrogate, writeOnnxModel } from '../../../src/models/index.js';

const thread = process.argv[2] === 'worker';
const onnx = writeOnnxModel({
  inputs: [{ name: 'x', shape: ['batch', 2] }],
  outputs: [{ name: 'probs', shape: ['batch', 2] }],
  nodes: [{ op: 'Softmax', inputs: ['x'], outputs: ['probs'], attributes: { axis: 1 } }],
});
const surrogate = await loadSurrogate({ onnx, thread });
const probs = await surrogate.probsAsync(Float32Array.from([0, 0]), 1);
if (Math.abs(probs.data[0] - 0.5) > 1e-6) throw new Error(`unexpected probabilities ${probs.data}`);
surrogate.dispose();
process.stdout.write(JSON.stringify({ ORT_DISABLE_TELEMETRY: process.env.ORT_DISABLE_TELEMETRY ?? null }));
