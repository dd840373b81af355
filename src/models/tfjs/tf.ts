/**
 * The one place that imports TensorFlow.js. Every other file takes `tf` from here, so the
 * backend packages loaded in backend.ts register against this very instance.
 */
import * as tf from '@tensorflow/tfjs';

export { tf };
export type { Tensor, Tensor1D, Tensor2D, Rank, LayersModel, Variable } from '@tensorflow/tfjs';
