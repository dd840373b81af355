/**
 * Public types of the defense layer. Pure data: no I/O, no HTTP, no tensors.
 */

/** A batch of probability (or logit) rows, row-major: row r is data[r*cols .. (r+1)*cols). */
export interface ProbBatch {
  readonly rows: number;
  readonly cols: number;
  readonly data: Float32Array;
}

/** What a defense may ask the caller to compute before it runs. */
/**
 * - surrogate: the surrogate's softmax per row (last-layer MAD)
 * - surrogateGram: per-row K×K Gram matrices of the surrogate's gradients (full-Jacobian MAD)
 * - misinformation: the misinformation model's softmax per row
 * - inputKey: a stable string per row identifying the input (deterministic noise)
 */
export type ContextNeed = 'surrogate' | 'surrogateGram' | 'misinformation' | 'inputKey';

/**
 * Per-batch side information. Each field is filled only when a defense in the pipeline declares
 * the matching need, so the serving layer computes nothing it does not use.
 */
export interface DefenseContext {
  /** Surrogate softmax p, B×K (MAD, last-layer closed form). */
  surrogateProbs?: ProbBatch;
  /** Per-row K×K Gram matrices M = G Gᵀ of the surrogate's log-probability gradients, B×K×K row-major (MAD, full Jacobian). */
  gram?: Float64Array | Float32Array;
  /** Misinformation model's softmax, B×K (adaptive misinformation). */
  misinformationProbs?: ProbBatch;
  /** One stable key per row identifying the input (deterministic noise). */
  inputKeys?: readonly string[];
}

export interface Defense {
  /** Short name as in a spec string, e.g. "mad". */
  readonly name: string;
  /** Canonical spec string that rebuilds this defense, e.g. "mad:eps=0.5,norm=l1,oracle=extreme". */
  readonly spec: string;
  readonly needs: readonly ContextNeed[];
  /** Whether every output row keeps the input row's top-1 class. */
  readonly keepsTop1: boolean;
  /** Returns a new batch; never mutates its input. Throws DefenseError subclasses on bad input. */
  apply(batch: ProbBatch, ctx?: DefenseContext): ProbBatch;
}
