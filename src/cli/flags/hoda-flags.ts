/**
 * HODA for `msd proxy`: the proxy has no model of its own, so the owner names the victim's training
 * checkpoints and held-out benign examples; the proxy loads the checkpoints, calibrates HODA's
 * thresholds on the examples at start, and gives the detectors each request's hardness.
 *
 *   --hoda-checkpoints a,b,c   TF.js model directories or .onnx files in training order (the last is
 *                              the final model), or one TF.js directory holding checkpoints.bin
 *   --hoda-calibration PATH    held-out benign examples: IDX or .npy (values as the model takes them;
 *                              uint8 and IDX scaled to 0..1), or an image folder decoded with the
 *                              proxy's --image-* preprocessing, exactly as requests are
 *   --hoda-engine tfjs|onnx    where TF.js checkpoints run (onnx: converted, faster on CPU)
 *
 * A calibration given in --detection (hoda.benignHistogram and thresholds) replaces --hoda-calibration.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { oneOf } from '../../validation/index.js';
import { parseFlag } from './flags.js';
import { readDetectionOptions } from './detection-flags.js';
import { ServingOptionError } from '../../server/errors.js';
import type { ClientsOptions, PopulationServingOptions } from '../../server/clients/options.js';
import { calibratePopulationHoda, POPULATION_DEFAULTS } from '../../detection/above/population.js';
import type { InputOptions } from '../../server/inputs/index.js';
import type { SurrogateModel } from '../../models/index.js';

export interface HodaFlags {
  hodaCheckpoints?: string;
  hodaCalibration?: string;
  hodaEngine?: string;
  clientId?: string;
  detection?: string;
}

export const HODA_FLAG_NAMES = ['hodaCheckpoints', 'hodaCalibration', 'hodaEngine'] as const;

export function addHodaFlags(command: Command): Command {
  return command
    .option(
      '--hoda-checkpoints <list>',
      'with --client-id: turn HODA on from the victim’s training checkpoints in training order (the last is the final model): comma-separated TF.js model directories or .onnx files, or one TF.js model directory holding checkpoints.bin',
    )
    .option(
      '--hoda-calibration <path>',
      'with --hoda-checkpoints: held-out benign examples of the victim’s own data to calibrate HODA at start (IDX, .npy, or an image folder decoded with the --image-* preprocessing)',
    )
    .option('--hoda-engine <tfjs|onnx>', 'with --hoda-checkpoints: where TF.js checkpoints run (default tfjs; onnx converts them to run on onnxruntime-node)');
}

const fail = (message: string): never => {
  throw new ServingOptionError(message);
};

/** Checks the combination without loading anything (the cluster primary runs only this). */
export function checkHodaFlags(flags: HodaFlags): void {
  if (!flags.hodaCheckpoints) {
    if (flags.hodaCalibration !== undefined || flags.hodaEngine !== undefined)
      fail('--hoda-calibration and --hoda-engine need --hoda-checkpoints (the models whose agreement gives a query’s hardness)');
    return;
  }
  if (!flags.clientId) fail('--hoda-checkpoints needs --client-id (client detection is on with it), e.g. --client-id header:x-api-key');
  if (flags.hodaEngine !== undefined) parseFlag(oneOf(['tfjs', 'onnx'], 'tfjs or onnx'), flags.hodaEngine, '--hoda-engine', fail);
  const sources = checkpointSources(flags.hodaCheckpoints);
  if (sources.length === 1 && !existsSync(join(sources[0], 'checkpoints.bin'))) {
    fail(
      `--hoda-checkpoints ${sources[0]}: one source must be a TF.js model directory holding checkpoints.bin; otherwise list the checkpoints, comma-separated, in training order`,
    );
  }
  const given = readDetectionOptions(flags.detection).hoda;
  // { enabled: false } alone turns per-client HODA off; the checkpoints may still serve population HODA.
  const calibrated = typeof given === 'object' && given !== null && ('benignHistogram' in given || 'thresholds' in given);
  if (flags.hodaCalibration === undefined && !given)
    fail(
      '--hoda-checkpoints needs a calibration: --hoda-calibration PATH (held-out benign examples of the victim’s own data), or hoda.benignHistogram and hoda.thresholds in --detection',
    );
  if (flags.hodaCalibration !== undefined && calibrated) fail('--hoda-calibration and a hoda calibration in --detection both calibrate HODA; give one');
}

function checkpointSources(list: string): string[] {
  const sources = list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (sources.length === 0) fail('--hoda-checkpoints is empty; list the checkpoints, comma-separated, in training order');
  return sources;
}

export interface HodaSetup {
  /** clients.hardness: each row's hardness from the checkpoints. */
  hardness: NonNullable<ClientsOptions['hardness']>;
  /** --detection with the calibration merged in (as JSON). */
  detection: string;
  /** Start-up line. */
  summary: string;
  /** Per-client HODA turned off (hoda.enabled false in --detection): only population HODA reads the hardness. */
  perClientOff: boolean;
  /** The held-out examples' hardness (with --hoda-calibration): population detection's HODA is calibrated on it too. */
  heldOut?: { hardness: Int8Array; bins: number };
  dispose(): void;
}

/**
 * Population detection's HODA (the hardness histogram of all recent traffic, and of young identities',
 * against the benign one: what catches a thief who spreads its queries over many keys) calibrated on
 * the held-out examples (--hoda-calibration), unless the population options carry their own `hoda`
 * (a calibration, or `{ "enabled": false }` to keep it off).
 * The options as they are when there is nothing to calibrate; `note` says what was done, for the start-up line.
 */
export function withPopulationHoda(
  population: PopulationServingOptions,
  heldOut: HodaSetup['heldOut'],
  /** Why there are no held-out examples, when there are none. */
  missing = 'its calibration needs --hoda-calibration',
): { population: PopulationServingOptions; note: string } {
  // Turned off there ({ enabled: false }): not calibrated behind the owner's back.
  if (population.hoda?.enabled === false) return { population, note: 'population HODA off (--population sets hoda.enabled false)' };
  if (population.hoda !== undefined) return { population, note: 'population HODA from --population' };
  if (!heldOut) return { population, note: `population HODA off (${missing}, or hoda in --population)` };
  const windowQueries = population.minQueries ?? POPULATION_DEFAULTS.minQueries;
  try {
    const calibrated = calibratePopulationHoda(heldOut.hardness, heldOut.bins, { windowQueries });
    return {
      population: { ...population, hoda: calibrated.options },
      note: `population HODA calibrated on the same examples (max distance ${calibrated.options.maxDistance.toFixed(3)} over windows of ${windowQueries})`,
    };
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    return {
      population,
      note: `population HODA off: ${heldOut.hardness.length} held-out examples, and windows of ${windowQueries} (population minQueries) need at least ${2 * windowQueries}`,
    };
  }
}

/**
 * Refuses checkpoints that no detector reads (per-client HODA off, and population HODA off or absent):
 * every request would pay for their forward passes and need readable inputs for nothing.
 */
export function checkHardnessRead(hoda: Pick<HodaSetup, 'perClientOff'>, population: PopulationServingOptions | false | undefined): void {
  if (!hoda.perClientOff) return;
  if (population && population.hoda !== undefined && population.hoda.enabled !== false) return;
  fail(
    '--hoda-checkpoints: no detector would read the hardness: per-client HODA is off (hoda.enabled false in --detection) and population HODA is off (it needs --population with --hoda-calibration, or hoda in --population); drop --hoda-checkpoints or turn one on',
  );
}

/** Loads the checkpoints and calibrates; undefined without --hoda-checkpoints. ServingOptionError for anything wrong, naming the file. */
export async function hodaFromFlags(flags: HodaFlags, inputs: InputOptions | undefined): Promise<HodaSetup | undefined> {
  checkHodaFlags(flags);
  if (!flags.hodaCheckpoints) return undefined;
  const models = await import('../../models/index.js');
  await models.initBackend();
  const engine = flags.hodaEngine as 'tfjs' | 'onnx' | undefined;
  const sources = checkpointSources(flags.hodaCheckpoints);
  const checkpoints: SurrogateModel[] = [];
  const dispose = () => checkpoints.forEach((c) => c.dispose());
  try {
    if (sources.length === 1) {
      const dir = sources[0];
      const layers = await models.loadCheckpointModels(dir, () => models.loadModel(dir));
      if (!layers) fail(`--hoda-checkpoints ${dir}: no checkpoints.bin`);
      try {
        for (const model of layers!) checkpoints.push(await models.loadSurrogate({ model, usePlan: false, ...(engine === 'onnx' ? { engine } : {}) }));
      } finally {
        // With engine onnx the converted copies hold the weights; the TF.js checkpoints are not needed.
        if (engine === 'onnx') layers!.forEach((m) => m.dispose());
      }
    } else {
      for (const source of sources)
        checkpoints.push(await models.loadSurrogate({ dir: source, ...(engine && !source.toLowerCase().endsWith('.onnx') ? { engine } : {}) }));
    }
    if (checkpoints.length < 2) fail(`--hoda-checkpoints: HODA needs at least 2 checkpoints, got ${checkpoints.length}`);
    const [first] = checkpoints;
    for (const [i, c] of checkpoints.entries()) {
      if (c.classes !== first.classes || c.inputShape.join('×') !== first.inputShape.join('×')) {
        fail(
          `--hoda-checkpoints: checkpoint ${i + 1} takes ${c.inputShape.join('×')} and answers ${c.classes} classes; checkpoint 1 takes ${first.inputShape.join('×')} and answers ${first.classes}`,
        );
      }
    }
    const width = first.inputShape.reduce((a, b) => a * b, 1);
    let detection = flags.detection;
    let calibrated = 'calibration from --detection';
    let heldOutHardness: Int8Array | undefined;
    if (flags.hodaCalibration !== undefined) {
      const held = await calibrationRows(flags.hodaCalibration, width, inputs);
      heldOutHardness = await models.surrogateHardnessInChunks(checkpoints, held.x, held.rows);
      const calibration = models.calibrateHodaFromHardness(heldOutHardness, checkpoints.length);
      if (calibration.thresholds.length === 0)
        fail(
          `--hoda-calibration ${flags.hodaCalibration}: ${held.rows} examples, fewer than HODA’s shortest test (100 queries); give at least 100, better 1000 or more`,
        );
      const given = readDetectionOptions(flags.detection);
      detection = JSON.stringify({
        ...given,
        hoda: {
          ...(given.hoda as object | undefined),
          benignHistogram: calibration.benignHistogram,
          thresholds: calibration.thresholds.map(({ length, threshold }) => ({ length, threshold })),
        },
      });
      calibrated = `calibrated on ${held.rows} held-out examples`;
    }
    const perClientOff = readDetectionOptions(flags.detection).hoda?.enabled === false;
    return {
      hardness: (rows) => models.surrogateHardness(checkpoints, rows.data, rows.rows),
      detection: detection ?? '{}',
      perClientOff,
      summary: perClientOff
        ? `HODA per client off (hoda.enabled false in --detection; ${checkpoints.length} checkpoints give each request’s hardness)`
        : `HODA on (${checkpoints.length} checkpoints, ${calibrated})`,
      ...(heldOutHardness ? { heldOut: { hardness: heldOutHardness, bins: checkpoints.length } } : {}),
      dispose,
    };
  } catch (error) {
    dispose();
    if (error instanceof models.ModelError) fail(`--hoda-checkpoints: ${error.message}`);
    throw error;
  }
}

/** The held-out examples as the checkpoints' input rows (the loader --shadow-held-out shares). */
async function calibrationRows(path: string, width: number, inputs: InputOptions | undefined): Promise<{ x: Float32Array; rows: number }> {
  const { readHeldOutRows } = await import('./held-out.js');
  const held = await readHeldOutRows(path, { flag: '--hoda-calibration', width, inputs, taker: 'the checkpoints take' });
  return { x: held.x, rows: held.rows };
}
