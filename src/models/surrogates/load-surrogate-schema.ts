/**
 * The schema of loadSurrogate's options: checked once per load, and the source of the option names
 * a threaded surrogate copies into its worker. Its own file so that loadSurrogate and the threaded
 * surrogate (which loadSurrogate imports) both read it without an import cycle.
 */
import { z } from 'zod';
import { callable, keysOf, oneOfList, trueOrFalse } from '../../validation/index.js';
import { surrogateFields } from '../option-fields.js';
import { BACKEND_ORDER } from '../tfjs/backend.js';
import type { LoadSurrogateOptions, SurrogateEngine } from './load-surrogate.js';

export const SURROGATE_ENGINES: readonly SurrogateEngine[] = ['tfjs', 'onnx'];
const isObject = (value: unknown): boolean => typeof value === 'object' && value !== null;

export const loadSurrogateSchema = z.strictObject(
  {
    path: z.string({ error: 'a path to a TF.js model (JSON file or directory) or an ONNX file' }).optional(),
    dir: z.string({ error: 'a path to a TF.js model (JSON file or directory) or an ONNX file' }).optional(),
    model: z.custom<NonNullable<LoadSurrogateOptions['model']>>(isObject, { error: 'a TF.js LayersModel or GraphModel' }).optional(),
    onnx: z.union([z.string(), z.instanceof(Uint8Array)], { error: 'an ONNX file path or its bytes (Uint8Array)' }).optional(),
    reinit: surrogateFields.reinit,
    usePlan: trueOrFalse().optional(),
    engine: oneOfList(SURROGATE_ENGINES).optional(),
    threads: surrogateFields.threads,
    thread: trueOrFalse().optional(),
    backend: oneOfList(BACKEND_ORDER).optional(),
    check: z
      .union(
        [
          z.boolean(),
          z.strictObject({
            probes: z.union([z.instanceof(Float32Array), z.literal(false)], { error: 'a Float32Array of rows, or false' }).optional(),
            // What it names is read (and refused, naming it) by checkSurrogate.
            victim: z.unknown().optional(),
            log: callable<(line: string) => void>('a function (line) => void').optional(),
          }),
        ],
        { error: 'true, false or { victim, probes, log }' },
      )
      .optional(),
    output: surrogateFields.output,
    chunkRows: surrogateFields.chunkRows,
    outputName: surrogateFields.outputName,
    inputShape: surrogateFields.inputShape,
    classes: surrogateFields.classes,
  } satisfies Record<keyof LoadSurrogateOptions, z.ZodType>,
  { error: 'an object, e.g. { dir: "models/surrogate" } or { onnx: "surrogate.onnx" }' },
);

/** The options a worker thread can load from: all but a model object and what stays in this thread. */
export const SERIALISABLE_SURROGATE_OPTIONS = keysOf(loadSurrogateSchema).filter(
  (key) => !['model', 'thread', 'backend', 'check'].includes(key),
) as readonly Exclude<keyof LoadSurrogateOptions, 'model' | 'thread' | 'backend' | 'check'>[];
