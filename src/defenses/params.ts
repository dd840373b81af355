/**
 * Named, validated defense parameters. Each defense declares a schema; spec strings and JSON
 * configs are both checked against it, so every error names the defense, the field and what is allowed.
 */
import { DefenseSpecError } from './errors.js';

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

function coerce(defense: string, name: string, schema: ParamSchema, raw: unknown): ParamValue {
  const fail = (): never => {
    throw new DefenseSpecError(`${defense}: parameter "${name}" must be ${describeParam(schema)}, got ${JSON.stringify(raw)}`);
  };
  if (schema.type === 'boolean') {
    if (typeof raw === 'boolean') return raw;
    if (raw === 'true' || raw === '1') return true;
    if (raw === 'false' || raw === '0') return false;
    return fail();
  }
  if (schema.type === 'enum') {
    const value = typeof raw === 'string' ? raw.toLowerCase() : raw;
    if (typeof value === 'string' && schema.values.includes(value)) return value;
    return fail();
  }
  const value = typeof raw === 'number' ? raw : typeof raw === 'string' && raw.trim() !== '' ? Number(raw) : NaN;
  if (!Number.isFinite(value)) return fail();
  if (schema.type === 'integer' && !Number.isInteger(value)) return fail();
  if (schema.min !== undefined && (schema.exclusiveMin ? value <= schema.min : value < schema.min)) return fail();
  if (schema.max !== undefined && value > schema.max) return fail();
  return value;
}

/** Checks raw values (strings from a spec, or JSON values) against a schema; fills defaults. */
export function resolveParams<S extends ParamSchemas>(defense: string, schemas: S, raw: Readonly<Record<string, unknown>>): ParamsOf<S> {
  const allowed = Object.keys(schemas);
  for (const key of Object.keys(raw)) {
    if (!(key in schemas)) {
      const hint = allowed.length ? `allowed: ${allowed.map((k) => `${k} (${describeParam(schemas[k])})`).join(', ')}` : 'it takes no parameters';
      throw new DefenseSpecError(`${defense}: unknown parameter "${key}"; ${hint}`);
    }
  }
  const out: Record<string, ParamValue> = {};
  for (const [name, schema] of Object.entries(schemas)) {
    if (raw[name] === undefined) {
      if (schema.default === undefined) throw new DefenseSpecError(`${defense}: parameter "${name}" is required (${describeParam(schema)})`);
      out[name] = schema.default;
    } else {
      out[name] = coerce(defense, name, schema, raw[name]);
    }
  }
  return out as ParamsOf<S>;
}

/** "name:a=1,b=x" with every parameter spelled out, in schema order. */
export function canonicalSpec(name: string, schemas: ParamSchemas, params: Readonly<Record<string, ParamValue>>): string {
  const parts = Object.keys(schemas).map((key) => `${key}=${params[key]}`);
  return parts.length ? `${name}:${parts.join(',')}` : name;
}
