/**
 * What a wire-format codec does: find the probability rows in a model answer (and write defended
 * rows back in the same place and form), and find the model inputs in a request, one flattened row
 * per answer row. A body it cannot read is an error, never a pass-through.
 */
import type { ProbBatch } from '../../defenses/index.js';

/** Model inputs, one flattened row per example: rows × cols, row-major. */
export interface InputRows {
  readonly rows: number;
  readonly cols: number;
  readonly data: Float32Array;
  /** The wire datatype when the protocol names one (KServe V2: "UINT8", "FP32", ...). */
  readonly datatype?: string;
  /** Shape of one example when known (e.g. [224, 224, 3]); its product is cols. */
  readonly shape?: readonly number[];
}

/** Encoded images (base64 JPEG/PNG/WebP as sent), one per example; server/inputs/ decodes them. */
export interface EncodedImages {
  readonly kind: 'encoded-images';
  readonly rows: number;
  /** Base64 text, one per row, as found in the request (a data: URL prefix is allowed). */
  readonly images: readonly string[];
  /** Where they were found, for error messages, e.g. 'input "image"' or "instances[].b64". */
  readonly where: string;
}

/** What a codec finds in a request: a numeric tensor, or encoded images still to decode. */
export type RequestInputs = InputRows | EncodedImages;

export function isEncodedImages(inputs: RequestInputs): inputs is EncodedImages {
  return (inputs as EncodedImages).kind === 'encoded-images';
}

/** The probability rows of one answer, and how to put defended rows back. */
export interface AnswerView {
  readonly batch: ProbBatch;
  /** A new body with `batch` in place of the original rows; the original body is not mutated. */
  write(batch: ProbBatch): unknown;
}

export interface Codec {
  /** Protocol name, e.g. "kserve-v2". */
  readonly name: string;
  /** Throws AnswerFormatError when the body holds no readable probability rows. */
  readAnswer(body: unknown): AnswerView;
  /** Throws RequestFormatError when the request holds no readable inputs. Cheap: images are found, not decoded. */
  readInputs(body: unknown): RequestInputs;
  /** An error body in the protocol's style. */
  errorBody(message: string): unknown;
}
