/** What every command does with a bad flag or bad input: one line on stderr, exit code 2, nothing on stdout. */

export function failCommand(command: string, message: string): never {
  process.stderr.write(`${command}: ${message.replace(/\s+/g, ' ').trim()}\n`);
  process.exit(2);
}

/** An integer flag of at least `min`; anything else goes to `fail` with a message naming the flag. */
export function integerFlag(value: string, flag: string, min: number, fail: (message: string) => never): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isInteger(n) || n < min) {
    fail(`${flag} must be an integer ≥ ${min}, got "${value}"`);
  }
  return n;
}
