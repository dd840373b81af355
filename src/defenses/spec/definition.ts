/**
 * How one defense is declared: its parameters and a factory for the stage that does the math.
 * The registry turns definitions into public `Defense` objects (validation, context checks,
 * composition), so a defense file holds only its own formula.
 */
import type { ParamSchemas, ParamsOf, ParamValue } from './params.js';
import type { ContextNeed, DefenseContext, ProbBatch } from '../types.js';

export interface DefenseOptions {
  /** Secret for the keyed hash that seeds deterministic noise. */
  noiseSecret?: string | Buffer;
}

/** One step of a pipeline, built from resolved parameters. */
export interface Stage {
  readonly needs: readonly ContextNeed[];
  /** Every output row keeps the input row's top-1 class. */
  readonly keepsTop1: boolean;
  /** Every output row sums to 1 (false only for top-k without renormalisation). */
  readonly onSimplex: boolean;
  /**
   * Writes the defended rows into `out` (same shape as `input`). `input` holds validated
   * probability rows; the context holds what `needs` asked for, already checked to be present.
   */
  run(input: ProbBatch, out: Float32Array, ctx: DefenseContext): void;
}

export interface DefenseDefinition<S extends ParamSchemas = ParamSchemas> {
  readonly name: string;
  readonly summary: string;
  readonly params: S;
  /** Other names that preset some parameters, e.g. "mad-argmax" → { oracle: "argmax" }. */
  readonly aliases?: Readonly<Record<string, Readonly<Record<string, ParamValue>>>>;
  /** Checks that span several parameters; throws DefenseSpecError. */
  check?(params: ParamsOf<S>): void;
  create(params: ParamsOf<S>, options: DefenseOptions): Stage;
}

/** Identity helper that keeps the parameter types of a definition. */
export function defineDefense<S extends ParamSchemas>(definition: DefenseDefinition<S>): DefenseDefinition<S> {
  return definition;
}
