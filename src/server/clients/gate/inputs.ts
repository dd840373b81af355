/** The request's inputs for client detection: HODA's hardness of each row, and the refusal of a request whose inputs cannot be read. */
import type { Logger } from 'pino';
import { RequestFormatError, ServingError } from '../../errors.js';
import type { InputRows } from '../../protocols/index.js';
import type { ClientMetrics } from '../metrics.js';
import type { ClientsOptions } from '../options.js';

/** clients.hardness of the rows, checked: one Int8Array value per row (its failure is a defense failure, 500). */
export async function hardnessOf(hardness: NonNullable<ClientsOptions['hardness']>, rows: InputRows): Promise<Int8Array> {
  let values: Int8Array;
  try {
    values = await hardness(rows);
  } catch (error) {
    throw new ServingError(`clients.hardness failed: ${(error as Error).message}`, 500, 'defense_failed');
  }
  if (!(values instanceof Int8Array) || values.length !== rows.rows)
    throw new ServingError(`clients.hardness must return an Int8Array of ${rows.rows} values (one per row)`, 500, 'defense_failed');
  return values;
}

/** Counts and logs a request refused because its inputs cannot be read; returns the error to answer with (400, or 413). */
export function unreadableInputs({ metrics, logger }: { metrics: ClientMetrics; logger?: Logger }, error: unknown): ServingError {
  metrics.unreadableInputs.inc();
  const status = error instanceof ServingError && error.status === 413 ? 413 : 400;
  // No body content in the log: the reader's message may quote the request (tensor names, values).
  logger?.warn(
    { status, err: (error as Error)?.name ?? 'Error' },
    'request refused: client detection cannot read its inputs (configure where they are, e.g. the input name)',
  );
  const why = error instanceof ServingError ? error.message : 'they are not in a form the server reads';
  return new RequestFormatError(
    `client detection needs this request's model inputs, which could not be read (${why}); the request was not served. The server must be told where the inputs are (e.g. the input tensor's name: --input-name / protocol.inputName, or the image options)`,
    status,
  );
}
