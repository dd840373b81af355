/**
 * Field schemas the option objects share. Each carries its "what to write" as its error, so a message
 * reads `<field> must be an integer ≥ 1, got 0` wherever the field appears.
 */
import { z } from 'zod';
import { SENTENCE } from './parse.js';

/** Every issue of the schema says `what` (the type check and each bound alike). */
const says = (what: string) => ({ error: what });

export interface NumberBounds {
  min?: number;
  max?: number;
  /** The bound itself is refused (a share in (0, 1], say). */
  minExclusive?: boolean;
  maxExclusive?: boolean;
  integer?: boolean;
}

/** "≥ 1", "> 0 and < 1", "" when unbounded. */
export function boundsText({ min, max, minExclusive, maxExclusive }: NumberBounds): string {
  const low = min === undefined ? '' : `${minExclusive ? '>' : '≥'} ${min}`;
  const high = max === undefined ? '' : `${maxExclusive ? '<' : '≤'} ${max}`;
  return [low, high].filter(Boolean).join(' and ');
}

/** "an integer ≥ 1", "a number > 0 and < 1", ... */
export function numberText(bounds: NumberBounds): string {
  const range = boundsText(bounds);
  return `${bounds.integer ? 'an integer' : 'a number'}${range ? ` ${range}` : ''}`;
}

/** A finite number within the bounds; `what` defaults to numberText(bounds). */
export function numberIn(bounds: NumberBounds, what?: string): z.ZodNumber {
  const text = what ?? numberText(bounds);
  let schema = z.number(says(text));
  if (bounds.integer) schema = schema.int(says(text));
  if (bounds.min !== undefined) schema = bounds.minExclusive ? schema.gt(bounds.min, says(text)) : schema.gte(bounds.min, says(text));
  if (bounds.max !== undefined) schema = bounds.maxExclusive ? schema.lt(bounds.max, says(text)) : schema.lte(bounds.max, says(text));
  return schema;
}

/** An integer of at least `min` (and at most `max`). */
export const integerAtLeast = (min: number, what?: string, max?: number): z.ZodNumber =>
  numberIn({ integer: true, min, max }, what ?? (max === undefined ? `an integer ≥ ${min}` : `an integer from ${min} to ${max}`));

export const positiveInteger = (what = 'a positive integer'): z.ZodNumber => integerAtLeast(1, what);

export const positiveNumber = (what = 'a positive number'): z.ZodNumber => numberIn({ min: 0, minExclusive: true }, what);

/** A share in (0, 1] (or [0, high] with `closed`), e.g. "a number in (0, 1], e.g. 0.1". */
export const share = (example: string, { low = 0, lowOpen = true, high = 1 } = {}): z.ZodNumber =>
  numberIn({ min: low, minExclusive: lowOpen, max: high }, `a number in ${lowOpen ? '(' : '['}${low}, ${high}], e.g. ${example}`);

/** One of the given strings; `what` defaults to "one of a, b, c". */
export function oneOf<const T extends readonly [string, ...string[]]>(choices: T, what?: string): z.ZodEnum<{ [K in T[number]]: K }> {
  return z.enum(choices, says(what ?? `one of ${choices.join(', ')}`)) as unknown as z.ZodEnum<{ [K in T[number]]: K }>;
}

/** `oneOf` for a list typed as a plain readonly array (the project's exported lists of names). */
export const oneOfList = <T extends string>(choices: readonly T[], what?: string): z.ZodType<T> =>
  oneOf(choices as unknown as readonly [string, ...string[]], what) as unknown as z.ZodType<T>;

export const nonEmptyText = (what = 'a non-empty string'): z.ZodString => z.string(says(what)).min(1, says(what));

export const trueOrFalse = (what = 'true or false'): z.ZodBoolean => z.boolean(says(what));

/** A function (options such as hooks and clocks); `what` says what it is called with. */
export const callable = <F extends (...args: never[]) => unknown>(what: string): z.ZodType<F> =>
  z.custom<F>((value) => typeof value === 'function', says(what));

/** A number from a number or its text (flags arrive as text); other values pass unchanged to the schema. */
export function numericText(value: unknown): unknown {
  return typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value)) ? Number(value) : value;
}

/** The schema, also fed a number written as text ("5" from a flag). */
export const fromText = <S extends z.ZodType>(schema: S) => z.preprocess(numericText, schema);

/**
 * A secret string of at least `minLength` characters. Its error never repeats the value (a short
 * secret is still a secret): "<field> must be <what>".
 */
export const secretText = (minLength: number, what: string): z.ZodType<string> =>
  z.custom<string>((value) => typeof value === 'string' && value.length >= minLength, { error: `must be ${what}`, params: SENTENCE });
