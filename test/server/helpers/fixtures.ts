/** Answers with distinctive numbers, and defenses that misbehave on purpose, for the serving tests. */
import type { Defense, DefenseContext, ProbBatch } from '../../../src/defenses/index.js';

/** Rows whose digits are easy to search for in a response body. */
export const ORIGINAL_ROWS = [
  [0.7123457, 0.2034567, 0.0841976],
  [0.1357913, 0.6420864, 0.2221223],
];

/** Digit strings of every original value: none may appear in a defended or failed response. */
export const ORIGINAL_DIGITS = ORIGINAL_ROWS.flat().map((v) => String(v).slice(2, 9));

export function assertNoOriginalNumbers(text: string): void {
  for (const digits of ORIGINAL_DIGITS) {
    if (text.includes(digits)) throw new Error(`the response holds the original value …${digits}: ${text}`);
  }
}

export function kserveAnswer(rows: number[][] = ORIGINAL_ROWS, extra: Record<string, unknown> = {}) {
  return {
    model_name: 'mnist',
    id: 'req-1',
    outputs: [{ name: 'probabilities', shape: [rows.length, rows[0].length], datatype: 'FP32', data: rows.flat() }],
    ...extra,
  };
}

export function kserveRequest(rows = 2, features = 4) {
  return {
    inputs: [{ name: 'image', shape: [rows, features], datatype: 'FP32', data: Array.from({ length: rows * features }, (_, i) => i / (rows * features)) }],
  };
}

/** A defense whose apply throws a plain Error (a bug in a defense, say). */
export const throwingDefense: Defense = {
  name: 'broken',
  spec: 'broken',
  needs: [],
  keepsTop1: false,
  apply(): ProbBatch {
    throw new Error('boom: the defense exploded');
  },
};

/** A surrogate-style defense that records the context it received and returns the surrogate's rows. */
export function contextEchoDefense(): Defense & { seen: DefenseContext[] } {
  const seen: DefenseContext[] = [];
  return {
    name: 'echo-surrogate',
    spec: 'echo-surrogate',
    needs: ['surrogate'],
    keepsTop1: false,
    seen,
    apply(batch: ProbBatch, ctx: DefenseContext = {}): ProbBatch {
      seen.push(ctx);
      if (!ctx.surrogateProbs) throw new Error('no surrogate');
      return { rows: batch.rows, cols: batch.cols, data: Float32Array.from(ctx.surrogateProbs.data) };
    },
  };
}

/** A context provider that answers the uniform distribution for every input row. */
export function uniformSurrogate(cols: number) {
  const calls: { rows: number; cols: number }[] = [];
  const provider = (_needs: readonly string[], inputs: { rows: number; cols: number }): DefenseContext => {
    calls.push({ rows: inputs.rows, cols: inputs.cols });
    return { surrogateProbs: { rows: inputs.rows, cols, data: new Float32Array(inputs.rows * cols).fill(1 / cols) } };
  };
  return { provider, calls };
}

/** Captures pino's output lines. */
export function lineCollector() {
  const lines: Record<string, unknown>[] = [];
  const raw: string[] = [];
  return {
    lines,
    raw,
    stream: {
      write(chunk: string) {
        raw.push(chunk);
        lines.push(JSON.parse(chunk) as Record<string, unknown>);
      },
    },
  };
}
