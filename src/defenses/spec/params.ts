/**
 * Named, validated defense parameters. Each defense declares its parameters in a small table (type,
 * range, default, description: what `msd perturb --list` prints); the table is compiled once into a
 * zod schema, against which spec strings and JSON configs are both checked, so every error names the
 * defense, the field and what is allowed, and the allowed keys come from the schema.
 */
import { z } from 'zod';
import { numberIn, numericText, oneOfList, parseOptions, SENTENCE, type OptionStyle } from '../../validation/index.js';
import { DefenseSpecError } from '../errors.js';

export type ParamValue = number | string | boolean;

interface BaseParam<T extends ParamValue> {
  readonly description: string;
  /** undefined: the parameter is required. */
  readonly default?: T;
}
export interface NumberParam extends BaseParam<number> {
  readonly type: 'number' | 'integer';
  readonly min?: number;
  readonly max?: number;
  /** min is excluded (e.g. eps > 0). */
  readonly exclusiveMin?: boolean;
}
export interface EnumParam extends BaseParam<string> {
  readonly type: 'enum';
  readonly values: readonly string[];
}
export interface BooleanParam extends BaseParam<boolean> {
  readonly type: 'boolean';
}
export type ParamSchema = NumberParam | EnumParam | BooleanParam;
export type ParamSchemas = Readonly<Record<string, ParamSchema>>;

/** Resolved parameter values, typed by their schema. */
export type ParamsOf<S extends ParamSchemas> = {
  -readonly [K in keyof S]: S[K] extends NumberParam ? number : S[K] extends EnumParam ? string : boolean;
};

export function describeParam(schema: ParamSchema): string {
  switch (schema.type) {
    case 'enum':
      return `one of ${schema.values.join(' | ')}`;
    case 'boolean':
      return 'true or false';
    default: {
      const kind = schema.type === 'integer' ? 'an integer' : 'a number';
      const lo = schema.min === undefined ? '' : schema.exclusiveMin ? `> ${schema.min}` : `>= ${schema.min}`;
      const hi = schema.max === undefined ? '' : `<= ${schema.max}`;
      const range = [lo, hi].filter(Boolean).join(' and ');
      return range ? `${kind} ${range}` : kind;
    }
  }
}

/** Spec strings carry text: "true"/"1" and "false"/"0" are booleans there. */
const booleanText = (value: unknown): unknown => (value === 'true' || value === '1' ? true : value === 'false' || value === '0' ? false : value);
const lowerCase = (value: unknown): unknown => (typeof value === 'string' ? value.toLowerCase() : value);

/** One parameter's schema: its value from text or JSON, checked against the table's type and range. */
function fieldSchema(param: ParamSchema): z.ZodType<ParamValue> {
  const what = describeParam(param);
  let value: z.ZodType<ParamValue>;
  if (param.type === 'boolean') value = z.preprocess(booleanText, z.boolean({ error: what }));
  else if (param.type === 'enum') value = z.preprocess(lowerCase, oneOfList(param.values, what));
  else {
    const bounds = { integer: param.type === 'integer', min: param.min, minExclusive: param.exclusiveMin, max: param.max };
    value = z.preprocess(numericText, numberIn(bounds, what));
  }
  if (param.default !== undefined) return value.default(param.default) as unknown as z.ZodType<ParamValue>;
  const present = z.custom((given) => given !== undefined, { error: `is required (${what})`, params: SENTENCE, abort: true });
  return present.pipe(value) as unknown as z.ZodType<ParamValue>;
}

/** Compiled once per defense (parsing happens once per configuration, never per row). */
const compiled = new WeakMap<ParamSchemas, z.ZodType<Record<string, ParamValue>>>();

function schemaOf(schemas: ParamSchemas): z.ZodType<Record<string, ParamValue>> {
  let schema = compiled.get(schemas);
  if (!schema) {
    const shape = Object.fromEntries(Object.entries(schemas).map(([name, param]) => [name, fieldSchema(param)]));
    schema = z.strictObject(shape) as unknown as z.ZodType<Record<string, ParamValue>>;
    compiled.set(schemas, schema);
  }
  return schema;
}

/** Messages read `mad: parameter "eps" must be a number > 0, got "abc"`. */
function paramStyle(defense: string, schemas: ParamSchemas): OptionStyle {
  return {
    error: DefenseSpecError,
    name: (path) => (path.length === 0 ? defense : `${defense}: parameter "${String(path[0])}"`),
    unknownKeys: (_name, keys, allowed) => {
      const hint = allowed.length ? `allowed: ${allowed.map((k) => `${k} (${describeParam(schemas[k])})`).join(', ')}` : 'it takes no parameters';
      return `${defense}: unknown parameter${keys.length > 1 ? 's' : ''} ${keys.map((k) => `"${k}"`).join(', ')}; ${hint}`;
    },
  };
}

/** Checks raw values (strings from a spec, or JSON values) against a schema; fills defaults. */
export function resolveParams<S extends ParamSchemas>(defense: string, schemas: S, raw: Readonly<Record<string, unknown>>): ParamsOf<S> {
  return parseOptions(schemaOf(schemas), raw, paramStyle(defense, schemas)) as ParamsOf<S>;
}

/** "name:a=1,b=x" with every parameter spelled out, in schema order. */
export function canonicalSpec(name: string, schemas: ParamSchemas, params: Readonly<Record<string, ParamValue>>): string {
  const parts = Object.keys(schemas).map((key) => `${key}=${params[key]}`);
  return parts.length ? `${name}:${parts.join(',')}` : name;
}
