/**
 * Checks a value against a zod schema and turns the first problem into the calling layer's own error
 * class, in the project's one style: `<field> must be <what to write>, got <what was given>`, and for
 * a key the schema does not know, the keys it does know (read from the schema, never kept by hand).
 */
import type { z } from 'zod';

/** The error class a layer throws for a bad option (ServingOptionError, DetectionConfigError, ...). */
export type ErrorClass = new (message: string) => Error;

export type FieldPath = readonly PropertyKey[];

export interface OptionStyle {
  /** The layer's error class. */
  error: ErrorClass;
  /** How a field is named in a message, from its path, e.g. `clients.store.ttlMs` or `config file p.yaml: "workers"`. */
  name?: (path: FieldPath) => string;
  /** The message for keys the schema does not know; `allowed` comes from the schema, `path` is the object's. */
  unknownKeys?: (name: string, keys: readonly string[], allowed: readonly string[], path: FieldPath) => string;
}

/** `where` followed by the path: `clients` + [store, ttlMs] → "clients.store.ttlMs"; indices in brackets. */
export function joinPath(where: string, path: FieldPath): string {
  let name = where;
  for (const key of path) name += typeof key === 'number' ? `[${key}]` : name === '' ? String(key) : `.${String(key)}`;
  return name;
}

const defaultUnknown = (name: string, keys: readonly string[], allowed: readonly string[]): string =>
  `${name ? `${name}: ` : ''}unknown option(s) ${keys.join(', ')}; allowed: ${allowed.join(', ')}`;

/** The style of a layer whose fields are named from `where` (e.g. "clients"; "" for top-level options). */
export function optionStyle(error: ErrorClass, where = '', overrides: Partial<OptionStyle> = {}): Required<OptionStyle> {
  return {
    error: overrides.error ?? error,
    name: overrides.name ?? ((path) => joinPath(where, path)),
    unknownKeys: overrides.unknownKeys ?? defaultUnknown,
  };
}

/** A value for a message: JSON, shortened; functions and undefined by name. */
export function shown(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'bigint') return `${value}n`;
  // JSON would print NaN and Infinity as null: say what was given.
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch {
    text = undefined;
  }
  if (text === undefined) return String(value);
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}

/** What a zod issue asks for, in words, when the schema did not say it itself. */
function expected(issue: z.core.$ZodRawIssue): string | undefined {
  switch (issue.code) {
    case 'invalid_type':
      if (issue.expected === 'object' || issue.expected === 'array') return `an ${issue.expected === 'array' ? 'array' : 'object'}`;
      return `a${/^[aeiou]/.test(issue.expected) ? 'n' : ''} ${issue.expected}`;
    case 'too_small':
      if (issue.origin === 'array') return `a list of at least ${issue.minimum} item(s)`;
      if (issue.origin === 'string') return Number(issue.minimum) <= 1 ? 'a non-empty string' : `a string of at least ${issue.minimum} characters`;
      return `a number ${issue.inclusive ? '≥' : '>'} ${issue.minimum}`;
    case 'too_big':
      if (issue.origin === 'array') return `a list of at most ${issue.maximum} item(s)`;
      if (issue.origin === 'string') return `a string of at most ${issue.maximum} characters`;
      return `a number ${issue.inclusive ? '≤' : '<'} ${issue.maximum}`;
    case 'invalid_value':
      return `one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'not_multiple_of':
      return `a multiple of ${issue.divisor}`;
    case 'invalid_format':
      return `a ${issue.format}`;
    default:
      return undefined;
  }
}

type Def = { type: string; [key: string]: unknown };
const defOf = (schema: unknown): Def => (schema as { _zod: { def: Def } })._zod.def;

/** Looks through wrappers (optional, default, a preprocessing step) to the schema that holds the shape. */
function unwrap(schema: unknown): unknown {
  for (;;) {
    const def = defOf(schema);
    if (['optional', 'nullable', 'default', 'prefault', 'readonly', 'catch', 'nonoptional'].includes(def.type)) schema = def.innerType;
    else if (def.type === 'pipe') schema = defOf(def.in).type === 'transform' ? def.out : def.in;
    else if (def.type === 'lazy') schema = (def.getter as () => unknown)();
    else return schema;
  }
}

/** The schema and, for a union, each of its forms, looked through their wrappers. */
function forms(schema: unknown): unknown[] {
  const inner = unwrap(schema);
  const def = defOf(inner);
  return def.type === 'union' ? (def.options as unknown[]).flatMap(forms) : [inner];
}

/** The keys of the object schema at `path` (the allowed ones), read from the schema itself. */
export function keysAt(schema: z.ZodType, path: FieldPath): string[] {
  let candidates = forms(schema);
  for (const key of path) {
    candidates = candidates.flatMap((candidate) => {
      const def = defOf(candidate);
      const shape = def.shape as Record<string, unknown> | undefined;
      if (def.type === 'object' && typeof key === 'string' && shape && Object.hasOwn(shape, key)) return forms(shape[key]);
      if (def.type === 'array' && typeof key === 'number') return forms(def.element);
      if (def.type === 'record') return forms(def.valueType);
      return [];
    });
  }
  const keys = new Set<string>();
  for (const candidate of candidates) {
    const def = defOf(candidate);
    if (def.type === 'object') for (const key of Object.keys(def.shape as object)) keys.add(key);
  }
  return [...keys];
}

/** The allowed keys of an object schema (the top level), e.g. for a list a caller prints or checks. */
export const keysOf = (schema: z.ZodType): string[] => keysAt(schema, []);

/** The value the user wrote at `path` (before any preprocessing: flags arrive as text). */
function givenAt(value: unknown, path: FieldPath): unknown {
  let current = value;
  for (const key of path) {
    if (current === null || typeof current !== 'object') return undefined;
    current = (current as Record<PropertyKey, unknown>)[key];
  }
  return current;
}

/**
 * A custom issue whose message is a whole sentence about its field (a rule between fields, say),
 * written after the field's name instead of as "must be ... got ...". Use from `superRefine`.
 */
export const SENTENCE = { sentence: true } as const;

/**
 * A union none of whose forms fit says "must be <the union's own words>", unless exactly one form
 * fits the value's type (its problems are all inside it, or keys it does not know): then that form's
 * first problem is the one to report, e.g. `budget.action` rather than "false or an object".
 */
function narrowed(issue: z.core.$ZodIssue): z.core.$ZodIssue {
  if (issue.code !== 'invalid_union') return issue;
  const fitting = issue.errors.filter((form) => form.length > 0 && form.every((inner) => inner.path.length > 0 || inner.code === 'unrecognized_keys'));
  if (fitting.length !== 1) return issue;
  const [first] = fitting[0];
  return narrowed({ ...first, path: [...issue.path, ...first.path] } as z.core.$ZodIssue);
}

/** The message of one issue, in the layer's style. */
export function describeIssue(found: z.core.$ZodIssue, schema: z.ZodType, value: unknown, style: Required<OptionStyle>): string {
  const issue = narrowed(found);
  const name = style.name(issue.path);
  if (issue.code === 'unrecognized_keys') return style.unknownKeys(name, issue.keys, keysAt(schema, issue.path), issue.path);
  if (issue.code === 'custom' && (issue.params as { sentence?: boolean } | undefined)?.sentence)
    return `${name}${issue.message.startsWith(':') ? '' : ' '}${issue.message}`;
  return `${name} must be ${issue.message}, got ${shown(givenAt(value, issue.path))}`;
}

/**
 * Parses `value` with `schema`; the first problem throws the layer's error class, naming the field
 * and saying what to write. Returns the parsed value (coerced where the schema says so).
 */
export function parseOptions<S extends z.ZodType>(schema: S, value: unknown, style: OptionStyle): z.output<S> {
  const full = optionStyle(style.error, '', style);
  const result = schema.safeParse(value, { error: (issue) => expected(issue), reportInput: true });
  if (result.success) return result.data;
  throw new full.error(describeIssue(result.error.issues[0], schema, value, full));
}
