/**
 * The runs of one evaluation, wherever they execute (here, in a `--jobs` child or on a queue
 * worker): the session they share (victim, surrogate, misinformation model, the undefended answers
 * on the test set), and one defense setting served behind the real middleware on loopback, its
 * defender side measured and each pending run's attack stored as it finishes.
 */
import { argmaxRows, parseDefense, type Defense, type ProbBatch } from '../../defenses/index.js';
import { fittingArchitecture, predictProbs, Surrogate, type ContextProviders, type LayersModel } from '../../models/index.js';
import { runAttack, seedFamily, type VictimTestSet } from '../attackers/index.js';
import { attackerFamily, type DefenseSetting, type EvalConfig } from '../config.js';
import { startDefendedEndpoint } from '../endpoint/defended-endpoint.js';
import { inferAll, kserveClient } from '../endpoint/kserve-client.js';
import type { ProgressFactory } from '../progress.js';
import { deriveSeed } from '../random.js';
import { publishGauges } from '../report/gauges.js';
import { accuracy, defenderOutcome } from '../records/measures.js';
import type { DefenderOutcome, RunRecord } from '../records/run-record.js';
import { prepareMisinformationModel, prepareVictim } from '../world/victim.js';
import type { EvaluationWorld } from '../world/world.js';
import { runKey, type RunSpec } from './run-key.js';
import { ablationSurrogate } from './surrogate-kinds.js';

/** Everything the runs of one evaluation share. */
export interface Session {
  config: EvalConfig;
  world: EvaluationWorld;
  victim: LayersModel;
  providers: ContextProviders;
  test: VictimTestSet;
  undefended: ProbBatch;
  victimAccuracy: number;
  progress: ProgressFactory;
  log: (line: string) => void;
}

export function buildDefense(setting: DefenseSetting, config: EvalConfig): Defense {
  // A fixed noise secret per seed: reruns give the same noisy answers.
  return setting.defense ?? parseDefense(setting.spec, { noiseSecret: `msd-eval-${config.seed}` });
}

const needsSurrogate = (d: Defense) => d.needs.includes('surrogate') || d.needs.includes('surrogateGram');

export async function openSession(
  config: EvalConfig,
  world: EvaluationWorld,
  defenses: Defense[],
  options: { cacheDir: string },
  progress: ProgressFactory,
  log: (line: string) => void,
): Promise<Session & { dispose(): void }> {
  const victim = await prepareVictim(config, world, options.cacheDir, progress);
  log(`victim: ${victim.fromCache ? 'loaded from' : 'trained and saved to'} ${victim.dir}`);
  const providers: ContextProviders = {};
  const disposers: (() => void)[] = [() => victim.model.dispose()];
  if (defenses.some(needsSurrogate)) {
    // The paper's best surrogate: the victim's architecture, randomly initialised, never trained.
    const surrogate = Surrogate.random({
      arch: config.surrogateArch,
      inputShape: [world.features],
      classes: world.classes,
      seed: deriveSeed(config.seed, 'surrogate'),
    });
    providers.surrogate = surrogate;
    disposers.push(() => surrogate.dispose());
  }
  if (defenses.some((d) => d.needs.includes('misinformation'))) {
    const misinformation = await prepareMisinformationModel(config, world, options.cacheDir, progress);
    log(
      `misinformation model: ${misinformation.fromCache ? 'loaded from' : 'trained and saved to'} ${misinformation.dir} (right on ${(misinformation.testAccuracy * 100).toFixed(1)}% of the test set)`,
    );
    providers.misinformation = misinformation.model;
    disposers.push(() => misinformation.model.dispose());
  }
  const undefended: ProbBatch = {
    rows: world.victimTest.rows,
    cols: world.classes,
    data: predictProbs(victim.model, world.victimTest.x, world.victimTest.rows),
  };
  const victimTop1 = argmaxRows(undefended);
  const victimAccuracy = accuracy(victimTop1, world.victimTest.labels);
  log(
    `victim test accuracy ${(victimAccuracy * 100).toFixed(2)}% on ${world.victimTest.rows} images; attacker pool: ${world.pool.rows} images (${world.poolSource})`,
  );
  return {
    config,
    world,
    victim: victim.model,
    providers,
    test: { x: world.victimTest.x, rows: world.victimTest.rows, labels: world.victimTest.labels, victimTop1 },
    undefended,
    victimAccuracy,
    progress,
    log,
    dispose: () => disposers.forEach((d) => d()),
  };
}

export function describeRun(run: Pick<RunSpec, 'defense' | 'policy' | 'budget'> & { attackerSeed?: number }): string {
  return `${run.defense.family}${run.defense.params ? ` ${run.defense.params}` : ''} · ${run.policy} · ${run.budget}${run.attackerSeed ? ` · seed #${run.attackerSeed + 1}` : ''}`;
}

/** The attacker's seed for one run: the first keeps the derivation used before seeds existed. */
export function attackSeed(config: EvalConfig, run: RunSpec): number {
  const family = seedFamily(run.policy);
  return deriveSeed(config.seed, run.attackerSeed === 0 ? `attack-${family}` : `attack-${family}-seed${run.attackerSeed}`);
}

/** Serves one defense setting and runs all its pending runs against it; `onRecord` stores each finished run. */
export async function runDefense(
  session: Session,
  setting: DefenseSetting,
  defense: Defense,
  runs: RunSpec[],
  onRecord: (record: RunRecord) => Promise<void>,
): Promise<void> {
  const { config, world } = session;
  const ablated = setting.surrogate ? ablationSurrogate(setting.surrogate, config, world, session.log) : undefined;
  const providers = ablated ? { ...session.providers, surrogate: ablated } : session.providers;
  const endpoint = await startDefendedEndpoint({ victim: session.victim, defense, providers });
  try {
    const client = kserveClient(endpoint.url);
    const bar = session.progress(`defender side: ${setting.family}`, world.victimTest.rows);
    const started = performance.now();
    const defended = await inferAll(client, world.victimTest.x, world.victimTest.rows, world.features, config.requestRows, (done) => bar.update(done));
    const defender: DefenderOutcome = defenderOutcome(session.undefended, defended, world.victimTest.labels);
    const defenderSeconds = (performance.now() - started) / 1000;
    bar.finish(`accuracy ${(defender.accuracy * 100).toFixed(2)}%, mean L1 ${defender.l1Mean.toFixed(3)}`);
    const finished: RunRecord[] = [];
    for (const run of runs) {
      const runStarted = performance.now();
      const runBar = session.progress(describeRun(run), run.budget);
      const attack = await runAttack({
        pool: world.pool,
        client,
        policy: run.policy,
        budget: run.budget,
        requestRows: config.requestRows,
        classes: world.classes,
        inputShape: [world.features],
        knockoff: config.knockoffTraining,
        adaptive: config.adaptive,
        jbda: config.jbda,
        seedImages: world.victimTrain,
        smoothing: config.smoothing,
        flip: config.smoothing.flip === 'auto' ? config.victim === 'fashion-mnist' : config.smoothing.flip,
        restorer: config.restorer,
        // Kerckhoffs: the attacker knows the defense's name and public parameters, not its secrets.
        known: { spec: setting.spec, defense: setting.defense, surrogateArch: config.surrogateArch, misinformation: config.misinformationTraining },
        labels: config.attackerLabels,
        test: session.test,
        seed: attackSeed(config, run),
        // Measurement only: the undefended victim's answers to the attacker's queries.
        truth: (x, rows) => ({ rows, cols: world.classes, data: predictProbs(session.victim, x, rows) }),
        onProgress: (phase, done, total) =>
          phase === 'query' ? runBar.update(done, 'querying') : runBar.update(run.budget, `training knockoffs, epoch ${done}/${total}`),
      });
      const record: RunRecord = {
        key: runKey(config, run),
        victim: config.victim,
        world: config.world,
        seed: config.seed,
        defense: setting.family,
        params: setting.params,
        spec: setting.spec,
        policy: run.policy,
        attacker: attackerFamily(run.policy),
        budget: run.budget,
        victimAccuracy: session.victimAccuracy,
        defender,
        attackers: attack.outcomes,
        queries: attack.queries,
        requests: attack.requests,
        // The defender-side pass is shared by the setting's runs; each carries its own attack time.
        seconds: (performance.now() - runStarted) / 1000 + (run === runs[0] ? defenderSeconds : 0),
        finishedAt: new Date().toISOString(),
        attackerSeed: run.attackerSeed,
        attackerFamily: attackerFamily(run.policy),
        knockoffArch: fittingArchitecture(config.knockoffTraining.arch, [world.features]),
        ...(attack.picks ? { policyPicks: attack.picks } : {}),
        ...(attack.quality ? { answerQuality: attack.quality } : {}),
        ...(attack.restorer ? { restorer: attack.restorer } : {}),
      };
      runBar.finish(attack.outcomes.map((o) => `${o.labels} ${(o.accuracy * 100).toFixed(1)}%`).join(', '));
      await onRecord(record);
      finished.push(record);
      publishGauges(endpoint.guard.metrics, finished);
    }
  } finally {
    await endpoint.close();
    ablated?.dispose();
  }
}

/** Runs `pending` in this process, defense by defense (one endpoint per setting). */
export async function runSerially(
  config: EvalConfig,
  world: EvaluationWorld,
  pending: readonly RunSpec[],
  options: { cacheDir: string },
  progress: ProgressFactory,
  log: (line: string) => void,
  onRecord: (record: RunRecord) => Promise<void>,
): Promise<void> {
  const bySetting = new Map<DefenseSetting, RunSpec[]>();
  for (const run of pending) bySetting.set(run.defense, [...(bySetting.get(run.defense) ?? []), run]);
  const defenses = new Map([...bySetting.keys()].map((setting) => [setting, buildDefense(setting, config)]));
  const session = await openSession(config, world, [...defenses.values()], options, progress, log);
  try {
    for (const [setting, runs] of bySetting) await runDefense(session, setting, defenses.get(setting)!, runs, onRecord);
  } finally {
    session.dispose();
  }
}
