/** A data file that cannot be used: named, with the problem, raised before any query is sent. */
export class DataFileError extends Error {
  override name = 'DataFileError';

  constructor(
    readonly file: string,
    problem: string,
  ) {
    super(`${file}: ${problem}`);
  }
}
