/** What every command does with a bad flag or bad input: one line on stderr, exit code 2, nothing on stdout. */
import type { z } from 'zod';
import { fromText, integerAtLeast, optionStyle, parseOptions } from '../../validation/index.js';

export function failCommand(command: string, message: string): never {
  process.stderr.write(`${command}: ${message.replace(/\s+/g, ' ').trim()}\n`);
  process.exit(2);
}

/** A bad flag, on its way to the command's `fail`. */
class FlagError extends Error {
  override name = 'FlagError';
}

/** A flag's value checked by `schema`; a bad one goes to `fail` as `<flag> must be <what to write>, got "<text>"`. */
export function parseFlag<S extends z.ZodType>(schema: S, value: unknown, flag: string, fail: (message: string) => never): z.output<S> {
  try {
    return parseOptions(schema, value, optionStyle(FlagError, flag));
  } catch (error) {
    if (error instanceof FlagError) fail(error.message);
    throw error;
  }
}

/** An integer flag of at least `min`; anything else goes to `fail` with a message naming the flag. */
export function integerFlag(value: string, flag: string, min: number, fail: (message: string) => never): number {
  return parseFlag(fromText(integerAtLeast(min)), value, flag, fail);
}
