/**
 * A forward-only surrogate on ONNX, through onnxruntime-node (an optional dependency, imported
 * only when an ONNX surrogate is asked for). `session.run` returns a promise but keeps the main
 * thread busy while it computes (measured: the event-loop stall grows with the rows per run), so
 * work goes in chunks with a yield between them. No gradients: full-Jacobian MAD needs a
 * differentiable TF.js surrogate.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { parseOptions } from '../../validation/index.js';
import { ModelError, ModelFileError, UnsupportedModelError } from '../errors.js';
import { surrogateFields } from '../option-fields.js';
import { readOnnxGraph, reinitOnnx } from './graph.js';
import { loadOnnxRuntime, type OnnxRuntime, type OrtSession } from './runtime.js';
import type { SurrogateModel } from '../surrogate-model.js';
import { defaultChunkRows, probabilitiesInChunks, type SurrogateOutput } from '../surrogate-output.js';
import type { ProbBatch } from '../../defenses/types.js';

type Ort = OnnxRuntime;
type Session = OrtSession;

export interface OnnxSurrogateOptions {
  /** Re-draw every float initializer from this seed before loading (see graph.ts). */
  reinit?: number;
  /** What the model outputs (default 'auto': detected per batch). */
  output?: SurrogateOutput;
  /** Rows per run (default as TfjsSurrogate: about 128k input values, one 224×224×3 image). */
  chunkRows?: number;
  /** The input shape when the file leaves dimensions open. */
  inputShape?: readonly number[];
  /** The output to read (default the first). */
  outputName?: string;
  /** Threads onnxruntime uses inside one operator (default its own choice). */
  threads?: number;
}

/** The options loadSurrogate passes on, checked in its words. */
const onnxSurrogateSchema = z.strictObject(
  {
    reinit: surrogateFields.reinit,
    output: surrogateFields.output,
    chunkRows: surrogateFields.chunkRows,
    inputShape: surrogateFields.inputShape,
    outputName: surrogateFields.outputName,
    threads: surrogateFields.threads,
  } satisfies Record<keyof OnnxSurrogateOptions, z.ZodType>,
  { error: 'an object, e.g. { output: "logits", threads: 2 }' },
);

/**
 * onnxruntime's thread pool spins between runs by default, keeping part of a core busy while idle. A
 * server shares its cores with the victim and the event loop, so the threads sleep instead.
 */
function sessionOptions(threads: number | undefined): Record<string, unknown> {
  return {
    ...(threads ? { intraOpNumThreads: threads } : {}),
    extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
  };
}

export class OnnxSurrogate implements SurrogateModel {
  readonly differentiable = false;
  private readonly width: number;

  private constructor(
    private readonly ort: Ort,
    private readonly session: Session,
    readonly inputShape: readonly number[],
    readonly classes: number,
    private readonly inputName: string,
    private readonly outputName: string,
    private readonly output: SurrogateOutput,
    private readonly chunkRows: number,
  ) {
    this.width = inputShape.reduce((a, b) => a * b, 1);
  }

  /** From a file path or the model's bytes. */
  static async load(source: string | Uint8Array, options: OnnxSurrogateOptions = {}): Promise<OnnxSurrogate> {
    parseOptions(onnxSurrogateSchema, options, { error: ModelError });
    const file = typeof source === 'string' ? source : 'the ONNX model';
    let bytes: Uint8Array;
    if (typeof source === 'string') {
      try {
        bytes = await readFile(source);
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        throw new ModelFileError(source, code === 'ENOENT' ? 'file not found' : `cannot be read (${code ?? String(error)})`);
      }
    } else bytes = source;
    if (options.reinit !== undefined) bytes = reinitOnnx(bytes, options.reinit, file);
    const graph = readOnnxGraph(bytes, file);
    if (graph.inputs.length !== 1)
      throw new UnsupportedModelError(
        `${file}: the surrogate feeds one input, but the model takes ${graph.inputs.length} (${graph.inputs.map((i) => i.name).join(', ')})`,
      );
    const input = graph.inputs[0];
    const inputShape = options.inputShape ?? input.shape.slice(1);
    if (inputShape.length === 0 || !inputShape.every((d): d is number => typeof d === 'number' && d > 0)) {
      throw new UnsupportedModelError(`${file}: input "${input.name}" has shape ${JSON.stringify(input.shape)} with open dimensions; pass inputShape`);
    }
    const output = options.outputName ? graph.outputs.find((o) => o.name === options.outputName) : graph.outputs[0];
    if (!output) throw new UnsupportedModelError(`${file}: no output named "${options.outputName}"; outputs: ${graph.outputs.map((o) => o.name).join(', ')}`);
    const ort = await loadOnnxRuntime();
    let session: Session;
    try {
      session = await ort.InferenceSession.create(bytes, sessionOptions(options.threads));
    } catch (error) {
      throw new ModelFileError(file, `onnxruntime cannot load it (${error instanceof Error ? error.message.split('\n')[0] : String(error)})`);
    }
    const surrogate = new OnnxSurrogate(
      ort,
      session,
      inputShape,
      0,
      input.name,
      output.name,
      options.output ?? 'auto',
      options.chunkRows ?? defaultChunkRows(inputShape.reduce((a, b) => a * b, 1)),
    );
    let classes = output.shape[output.shape.length - 1];
    if (typeof classes !== 'number' || classes <= 0 || output.shape.length !== 2) {
      classes = (await surrogate.run(new Float32Array(surrogate.width), 1)).length;
    }
    return new OnnxSurrogate(
      ort,
      session,
      inputShape,
      classes,
      input.name,
      output.name,
      options.output ?? 'auto',
      options.chunkRows ?? defaultChunkRows(inputShape.reduce((a, b) => a * b, 1)),
    );
  }

  private async run(inputs: Float32Array, rows: number): Promise<Float32Array> {
    const tensor = new this.ort.Tensor('float32', inputs, [rows, ...this.inputShape]);
    const results = await this.session.run({ [this.inputName]: tensor });
    const out = results[this.outputName];
    try {
      if (out.type !== 'float32') throw new UnsupportedModelError(`output "${this.outputName}" is ${out.type}, not float32`);
      return Float32Array.from(out.data as Float32Array);
    } finally {
      for (const value of Object.values(results)) value.dispose();
      tensor.dispose();
    }
  }

  probsAsync(inputs: Float32Array, rows: number): Promise<ProbBatch> {
    return probabilitiesInChunks(inputs, rows, {
      width: this.width,
      classes: this.classes,
      chunkRows: this.chunkRows,
      output: this.output,
      // The session may keep the buffer it was given: each chunk gets its own copy.
      run: async (chunk, n) => {
        const values = await this.run(chunk.slice(), n);
        if (values.length !== n * this.classes)
          throw new UnsupportedModelError(`output "${this.outputName}" holds ${values.length} values for ${n} rows, not ${n * this.classes}`);
        return values;
      },
    });
  }

  dispose(): void {
    void this.session.release();
  }
}
