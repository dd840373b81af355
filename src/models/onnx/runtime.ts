/**
 * onnxruntime-node, an optional dependency, as this project uses it. The types are written here so
 * that the type-check, the build and the published declarations never need the package present; the
 * package itself is imported only when an ONNX model is asked for.
 */
import { ModelError } from '../errors.js';
import { keepOnnxRuntimeOffline } from './telemetry.js';

export interface OrtTensor {
  readonly type: string;
  readonly data: unknown;
  readonly dims: readonly number[];
  dispose(): void;
}

export interface OrtSession {
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  release(): Promise<void>;
}

/** The part of onnxruntime-node's API this project calls. */
export interface OnnxRuntime {
  Tensor: new (type: 'float32', data: Float32Array, dims: readonly number[]) => OrtTensor;
  InferenceSession: { create(model: Uint8Array, options?: Record<string, unknown>): Promise<OrtSession> };
}

/** How to install the package so that npm keeps it (its install script would fetch CUDA binaries). */
export const ONNX_RUNTIME_INSTALL_HINT =
  'ONNXRUNTIME_NODE_INSTALL=skip npm install onnxruntime-node (the CPU binaries ship in its package; "skip" stops its install script from fetching CUDA binaries, which fails offline and makes npm drop the package)';

/** A variable, not a literal: TypeScript then never looks for the package's own declarations. */
const PACKAGE = 'onnxruntime-node';

let ortModule: Promise<OnnxRuntime> | undefined;

/** onnxruntime-node, imported once; a clear error naming the package and how to install it when it is absent. */
export function loadOnnxRuntime(): Promise<OnnxRuntime> {
  keepOnnxRuntimeOffline();
  ortModule ??= (import(PACKAGE) as Promise<{ default?: OnnxRuntime } & OnnxRuntime>).then(
    (module) => (module.InferenceSession ? module : (module.default as OnnxRuntime)),
    (error: unknown) => {
      ortModule = undefined;
      const message = error instanceof Error ? error.message : String(error);
      throw new ModelError(
        `ONNX models need the optional package onnxruntime-node, which is not installed (${message.split('\n')[0]}); install it with: ${ONNX_RUNTIME_INSTALL_HINT}`,
      );
    },
  );
  return ortModule;
}

/** Whether onnxruntime-node can be imported here, and its version when it can. */
export async function onnxRuntimeStatus(): Promise<{ available: true; version: string } | { available: false; reason: string; install: string }> {
  try {
    const ort = (await loadOnnxRuntime()) as OnnxRuntime & { env?: { versions?: { node?: string; common?: string } } };
    return { available: true, version: ort.env?.versions?.node ?? ort.env?.versions?.common ?? 'unknown' };
  } catch (error) {
    return { available: false, reason: error instanceof Error ? error.message : String(error), install: ONNX_RUNTIME_INSTALL_HINT };
  }
}
