/** Top-1 classes and agreement shares, shared by the serving side of the shadow and its trainer thread. */

/** The index of the largest value of each row (the first one on ties). */
export function top1Of(data: Float32Array, rows: number, cols: number): Int32Array {
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    for (let c = 1; c < cols; c++) if (data[r * cols + c] > data[r * cols + best]) best = c;
    out[r] = best;
  }
  return out;
}

/** The share of positions where the predicted class is the true one (0 when there are none). */
export function share(predicted: Int32Array, truth: ArrayLike<number>): number {
  let same = 0;
  for (let i = 0; i < predicted.length; i++) if (predicted[i] === truth[i]) same++;
  return predicted.length ? same / predicted.length : 0;
}
