/**
 * Client detection for the `serve` demo: the proxy's --client-id flags, and HODA from the demo
 * victim's training checkpoints (calibrated on the first half of the MNIST test split) when the
 * cached victim has them.
 */
import { calibrateHodaFromHardness, checkpointHardness, loadCheckpointModels, loadModel, type LayersModel } from '../../models/index.js';
import { chunkedHardness } from '../../demo/hardness.js';
import type { ClientsOptions } from '../../server/clients/options.js';
import { clientOptionsFromFlags, type ClientFlags } from '../flags/client-flags.js';
import { detectionFromFlags, type DetectionFlags, type DetectionSetup } from '../flags/detection-flags.js';
import { withPopulationHoda, type HodaSetup } from '../flags/hoda-flags.js';

export interface ServeDetection {
  clients: ClientsOptions;
  setup: DetectionSetup;
  /** Start-up line. */
  summary: string;
  dispose(): void;
}

export async function serveDetection(
  flags: ClientFlags & DetectionFlags,
  modelDir: string,
  heldOut: { x: Float32Array; rows: number },
  noiseSecret?: string,
): Promise<ServeDetection | undefined> {
  if (!flags.clientId) {
    detectionFromFlags(flags, true, noiseSecret);
    clientOptionsFromFlags(flags, process.env, undefined);
    return undefined;
  }
  const checkpoints: LayersModel[] | undefined = await loadCheckpointModels(modelDir, () => loadModel(modelDir));
  let options = flags.detection;
  let hoda = 'HODA off (the cached victim has no training checkpoints; delete it to retrain)';
  let heldOutHardness: HodaSetup['heldOut'];
  if (checkpoints) {
    heldOutHardness = { hardness: checkpointHardness(checkpoints, heldOut.x, heldOut.rows), bins: checkpoints.length };
    const calibration = calibrateHodaFromHardness(heldOutHardness.hardness, checkpoints.length);
    let given: Record<string, unknown> | undefined = {};
    try {
      // A file (@…) or bad JSON is left to detectionFromFlags, which reads it and says what is wrong.
      if (flags.detection) given = flags.detection.startsWith('@') ? undefined : (JSON.parse(flags.detection) as Record<string, unknown>);
    } catch {
      given = undefined;
    }
    if (given && typeof given === 'object' && !('hoda' in given))
      options = JSON.stringify({
        ...given,
        hoda: { benignHistogram: calibration.benignHistogram, thresholds: calibration.thresholds.map(({ length, threshold }) => ({ length, threshold })) },
      });
    hoda = `HODA on (${checkpoints.length} checkpoints, calibrated on ${heldOut.rows} held-out images)`;
  }
  const setup = detectionFromFlags({ ...flags, detection: options }, true, noiseSecret)!;
  const clients = clientOptionsFromFlags(flags, process.env, setup.detection)!;
  // In chunks, the event loop served between them: a large request must not hold the others (health checks included).
  if (checkpoints) clients.hardness = chunkedHardness(checkpoints);
  if (clients.population) {
    const { population, note } = withPopulationHoda(clients.population, heldOutHardness, 'the cached victim has no training checkpoints');
    clients.population = population;
    hoda += `; ${note}`;
  }
  return {
    clients,
    setup,
    summary: `client detection by ${flags.clientId} (${flags.redis ? 'Redis' : 'memory'} store), escalation ${setup.ladder.join(' → ')}; ${hoda}`,
    dispose: () => checkpoints?.forEach((m) => m.dispose()),
  };
}
