/**
 * Field schemas the models layer's option objects share, beside the project's own (src/validation).
 * A choice keeps the layer's message form: `engine "gpu" is not one of auto, tfjs, onnxruntime`.
 */
import { z } from 'zod';
import { SENTENCE } from '../validation/index.js';

/** One of `choices`; a wrong value reads `<field> "<value>" is not one of <choices>`. */
export const namedChoice = <T extends string>(choices: readonly T[]): z.ZodType<T> =>
  z.custom<T>((value) => (choices as readonly unknown[]).includes(value), {
    error: (issue) => `"${String(issue.input)}" is not one of ${choices.join(', ')}`,
    params: SENTENCE,
  });
