/** `info`: which TensorFlow.js backend this machine runs, its versions and threads, why faster ones are unavailable, and whether ONNX models can run. */
import type { Command } from 'commander';
import { ModelError, formatBackendInfo, initBackend, onnxRuntimeStatus } from '../../models/index.js';

export function registerInfoCommand(program: Command): void {
  program
    .command('info')
    .description(
      'print the TensorFlow.js backend in use (MSD_BACKEND forces one), versions, threads, why other backends are unavailable, and whether onnxruntime-node (ONNX surrogates, fast training) is installed',
    )
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      try {
        const info = await initBackend({ log: () => {} });
        const onnx = await onnxRuntimeStatus();
        if (opts.json) {
          process.stdout.write(`${JSON.stringify({ ...info, onnxruntime: onnx }, null, 2)}\n`);
          return;
        }
        const onnxLine = onnx.available
          ? `onnx:      onnxruntime-node ${onnx.version} (ONNX surrogates, --surrogate-engine onnx, training engine)`
          : `onnx:      not available: onnxruntime-node is not installed; to enable ONNX surrogates and the faster training engine: ${onnx.install}`;
        process.stdout.write(`${formatBackendInfo(info)}\n${onnxLine}\n`);
      } catch (error) {
        if (!(error instanceof ModelError)) throw error;
        process.stderr.write(`info: ${error.message}\n`);
        process.exit(2);
      }
    });
}
