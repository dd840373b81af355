/**
 * HODA's hardness for the demo, from the victim's training checkpoints, computed a chunk of rows at a
 * time with the event loop given back between chunks. The checkpoints' forward passes are synchronous
 * TF.js calls (11 models × the request's rows): in one piece, a 4,000-row request held every other
 * request, /v2/health/live included, for seconds.
 */
import { checkpointHardness, type LayersModel } from '../models/index.js';

export interface ChunkedHardnessOptions {
  /** Rows per chunk (each chunk is one forward pass per checkpoint). Default 128. */
  chunkRows?: number;
}

export const DEFAULT_HARDNESS_CHUNK_ROWS = 128;

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** clients.hardness over `checkpoints`: the same values as checkpointHardness, chunk by chunk, pending I/O served between chunks. */
export function chunkedHardness(
  checkpoints: readonly LayersModel[],
  options: ChunkedHardnessOptions = {},
): (inputs: { readonly rows: number; readonly cols: number; readonly data: Float32Array }) => Promise<Int8Array> {
  const chunkRows = options.chunkRows ?? DEFAULT_HARDNESS_CHUNK_ROWS;
  if (!Number.isInteger(chunkRows) || chunkRows < 1) throw new RangeError(`chunkRows must be a positive integer, got ${chunkRows}`);
  return async ({ rows, cols, data }) => {
    const hardness = new Int8Array(rows);
    for (let start = 0; start < rows; start += chunkRows) {
      // Before each chunk, the first included: the request that brought the rows has waited its turn too.
      await nextTurn();
      const n = Math.min(chunkRows, rows - start);
      hardness.set(checkpointHardness(checkpoints, data.subarray(start * cols, (start + n) * cols), n), start);
    }
    return hardness;
  };
}
