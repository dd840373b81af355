/**
 * Field schemas the models layer's option objects share, beside the project's own (src/validation).
 * A choice keeps the layer's message form: `engine "gpu" is not one of auto, tfjs, onnxruntime`.
 */
import { z } from 'zod';
import { integerAtLeast, oneOfList, positiveInteger, SENTENCE } from '../validation/index.js';
import { SURROGATE_OUTPUTS } from './surrogate-output.js';

/** One of `choices`; a wrong value reads `<field> "<value>" is not one of <choices>`. */
export const namedChoice = <T extends string>(choices: readonly T[]): z.ZodType<T> =>
  z.custom<T>((value) => (choices as readonly unknown[]).includes(value), {
    error: (issue) => `"${String(issue.input)}" is not one of ${choices.join(', ')}`,
    params: SENTENCE,
  });

/**
 * The fields every surrogate loader takes (loadSurrogate, TfjsSurrogate.create, OnnxSurrogate.load),
 * in one set of words. Free of TensorFlow.js, so that the ONNX path loads none.
 */
export const surrogateFields = {
  reinit: integerAtLeast(0, 'an integer seed in 0..4294967295', 0xffffffff).optional(),
  output: oneOfList(SURROGATE_OUTPUTS).optional(),
  chunkRows: positiveInteger().optional(),
  outputName: z.string({ error: 'the name of an output node' }).optional(),
  inputShape: z.array(positiveInteger(), { error: 'a list of positive integers, e.g. [224, 224, 3]' }).optional(),
  classes: integerAtLeast(2).optional(),
  threads: integerAtLeast(0, 'an integer ≥ 0 (0: onnxruntime’s default)').optional(),
};
