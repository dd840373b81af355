/**
 * `msd eval --target URL`: the evaluation against an endpoint this project did not start, with the
 * owner's data. Every flag and every data file is checked before the first query.
 */
import { join } from 'node:path';
import type { Command } from 'commander';
import { ClientOptionError, EXTERNAL_PROTOCOLS, externalClient, type ExternalClientOptions, type ExternalProtocol } from '../../eval/target/clients.js';
import { attackerApplies } from '../../eval/attackers/applies.js';
import { DEFENSE_AWARE_POLICIES, presetConfig, POLICIES, type PolicyName } from '../../eval/config.js';
import { DataFileError } from '../../eval/data/errors.js';
import { loadExternalImages } from '../../eval/data/external-data.js';
import { checkExternalPlan, evaluateExternal } from '../../eval/target/external.js';
import { summaryText } from '../../eval/report/summary.js';
import { DefenseError, parseDefense } from '../../defenses/index.js';
import { describeTrainingEngine, initBackend } from '../../models/index.js';
import { ServingOptionError } from '../../server/errors.js';
import { failCommand, integerFlag } from '../flags/flags.js';
import { createProgress } from '../progress.js';

export interface ExternalEvalFlags {
  target?: string;
  protocol?: string;
  transfer?: string;
  transferLabels?: string;
  test?: string;
  testLabels?: string;
  reference?: string;
  targetDefense?: string;
  seeds?: string;
  classes?: string;
  imageSize?: string;
  dataScale?: string;
  inputShape?: string;
  pixelScale?: string;
  inputName?: string;
  outputKey?: string;
  requestTemplate?: string;
  answerPath?: string;
  attackers?: string;
  budget?: string;
  knockoffEpochs?: string;
  seed?: string;
  out?: string;
  quiet?: boolean;
}

const fail: (message: string) => never = (message) => failCommand('eval', message);

/** The flags `eval` takes for an external target (added to the command by registerEvalCommand). */
export function addExternalEvalOptions(command: Command): Command {
  return command
    .option('--target <url>', 'evaluate this defended endpoint (not started by msd); needs --transfer and --test')
    .option('--protocol <name>', `target protocol: ${EXTERNAL_PROTOCOLS.join(' | ')} (default kserve-v2)`)
    .option('--transfer <path>', "attacker's images: IDX file, .npy, or an image folder")
    .option('--transfer-labels <path>', 'labels of the transfer images (optional; default: the sibling labels file)')
    .option('--test <path>', 'labelled test set: IDX images (labels: the labels-idx1 sibling), x.npy (labels: y.npy), or a folder of class folders')
    .option('--test-labels <path>', 'labels of the test images (IDX or .npy)')
    .option('--reference <url>', 'the undefended endpoint (same protocol): L1 and top-1 changes, and the same attackers against it (what the defense buys)')
    .option(
      '--target-defense <spec>',
      "the target's defense and public parameters, e.g. mad:eps=0.5 (Kerckhoffs): the restorer and inversion attackers need it",
    )
    .option('--classes <k>', 'classes the model answers (default 10)')
    .option('--image-size <HxWxC>', 'image folders: decoded size (default 28x28x1)')
    .option('--data-scale <max>', 'float arrays: largest pixel value (default 1; uint8 data is always 0..255)')
    .option('--input-shape <dims>', 'shape of one image as the endpoint takes it, e.g. 28,28,1 (default flat)')
    .option('--pixel-scale <s>', 'pixels sent as value × s (default 255 as UINT8 for kserve-v2, else 1)')
    .option('--input-name <name>', 'kserve-v2 input name (default "input")')
    .option('--output-key <key>', 'tf-serving: key of the probabilities when predictions are objects')
    .option('--request-template <json>', 'json-path: request body with "$INPUTS" where the rows go (default {"instances": "$INPUTS"})')
    .option('--answer-path <path>', 'json-path: where the probability rows are (default "predictions")')
    .option(
      '--attackers <list>',
      `attacker families: ${POLICIES.join(',')} (default random,smoothing,jbtop3; with --target-defense also restorer, restorer-jbtop3 and, for reverse sigmoid, inversion); every family also trains a top-1 knockoff`,
    )
    .option('--budget <list>', 'queries per attack, comma-separated (default 1000)');
}

function list(value: string | undefined, fallback: string): string[] {
  return (value ?? fallback)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

function positiveNumber(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!(n > 0) || !Number.isFinite(n)) fail(`${flag} must be a number > 0, got "${value}"`);
  return n;
}

function dims(value: string | undefined, flag: string, separator: RegExp): number[] | undefined {
  if (value === undefined) return undefined;
  const parts = value.split(separator).map(Number);
  if (parts.length === 0 || parts.some((d) => !Number.isInteger(d) || d < 1)) fail(`${flag} must be positive integers such as 28,28,1, got "${value}"`);
  return parts;
}

/** The default attackers: the plain ones, and those that know the defense when its spec is given. */
export function defaultExternalAttackers(targetDefense: string | undefined): string {
  const plain = ['random', 'smoothing', 'jbtop3'];
  if (targetDefense === undefined) return plain.join(',');
  const aware = ['restorer', 'restorer-jbtop3', ...(attackerApplies('inversion', targetDefense) ? ['inversion'] : [])];
  return [...plain, ...aware].join(',');
}

export async function runExternalEval(flags: ExternalEvalFlags): Promise<void> {
  if (!flags.transfer || !flags.test) fail('--target needs --transfer (the attacker’s images) and --test (a labelled test set)');
  const protocol = (flags.protocol ?? 'kserve-v2') as ExternalProtocol;
  const classes = flags.classes === undefined ? 10 : integerFlag(flags.classes, '--classes', 2, fail);
  let targetDefense: string | undefined;
  if (flags.targetDefense !== undefined) {
    try {
      targetDefense = parseDefense(flags.targetDefense).spec;
    } catch (error) {
      if (error instanceof DefenseError) fail(`--target-defense: ${error.message}`);
      throw error;
    }
  }
  const policies = list(flags.attackers, defaultExternalAttackers(targetDefense)).map((p) =>
    POLICIES.includes(p as PolicyName) ? (p as PolicyName) : fail(`--attackers: "${p}" is not one of ${POLICIES.join(', ')}`),
  );
  const aware = policies.filter((p) => DEFENSE_AWARE_POLICIES.includes(p));
  if (aware.length > 0 && targetDefense === undefined)
    fail(
      `--attackers ${aware.join(', ')}: these attackers know the target's defense (Kerckhoffs); give it with --target-defense SPEC, e.g. --target-defense mad:eps=0.5`,
    );
  const seeds = flags.seeds === undefined ? 1 : integerFlag(flags.seeds, '--seeds', 1, fail);
  const budgets = list(flags.budget, '1000').map((b) => integerFlag(b, '--budget', 1, fail));
  const imageShape = dims(flags.imageSize, '--image-size', /x/i);
  if (imageShape && imageShape.length !== 3) fail(`--image-size must be HxWxC, e.g. 28x28x1, got "${flags.imageSize}"`);
  const inputShape = dims(flags.inputShape, '--input-shape', /,/);
  const clientOptions = (url: string): ExternalClientOptions => ({
    protocol,
    url,
    inputShape,
    pixelScale: positiveNumber(flags.pixelScale, '--pixel-scale'),
    inputName: flags.inputName,
    outputKey: flags.outputKey,
    requestTemplate: flags.requestTemplate,
    answerPath: flags.answerPath,
  });
  try {
    const target = externalClient(clientOptions(flags.target!));
    const reference = flags.reference ? externalClient(clientOptions(flags.reference)) : undefined;
    const dataOptions = { classes, imageShape: imageShape as [number, number, number] | undefined, scale: positiveNumber(flags.dataScale, '--data-scale') };
    const test = await loadExternalImages(flags.test, { ...dataOptions, labels: flags.testLabels, requireLabels: true });
    const transfer = await loadExternalImages(flags.transfer, { ...dataOptions, labels: flags.transferLabels, features: test.features });
    if (inputShape && inputShape.reduce((a, b) => a * b, 1) !== test.features)
      fail(`--input-shape ${flags.inputShape} holds ${inputShape.reduce((a, b) => a * b, 1)} values, the images ${test.features}`);
    const quick = presetConfig('quick');
    const seed = flags.seed === undefined ? quick.seed : integerFlag(flags.seed, '--seed', 0, fail);
    const plan = {
      transfer,
      test: test as typeof test & { labels: Int32Array },
      policies,
      budgets,
      jbda: quick.jbda,
      smoothing: quick.smoothing,
      targetDefense,
    };
    checkExternalPlan(plan);
    const log = (line: string) => process.stderr.write(`${line}\n`);
    // The grid's backend and training engine (wasm + onnxruntime-node where installed), said once;
    // without this tfjs starts its cpu backend with its "install our node backend" banner.
    const backend = await initBackend({ log });
    const training = await describeTrainingEngine();
    log(training);
    log(`transfer: ${transfer.source}; test: ${test.source}`);
    const outDir = flags.out ?? join('results', 'external');
    const result = await evaluateExternal({
      ...plan,
      name: 'external',
      target,
      targetUrl: flags.target!,
      targetDefense,
      reference,
      referenceUrl: flags.reference,
      seeds,
      classes,
      attackerLabels: quick.attackerLabels,
      knockoff: { ...quick.knockoffTraining, ...(flags.knockoffEpochs ? { epochs: integerFlag(flags.knockoffEpochs, '--knockoff-epochs', 1, fail) } : {}) },
      adaptive: quick.adaptive,
      smoothing: quick.smoothing,
      restorer: quick.restorer,
      surrogateArch: quick.surrogateArch,
      misinformation: quick.misinformationTraining,
      imageShape: imageShape ?? (inputShape?.length === 3 ? inputShape : undefined),
      requestRows: quick.requestRows,
      seed,
      outDir,
      notes: [`tfjs backend: ${backend.name}`, training],
      log,
      progress: (label, total) => createProgress({ label, total, silent: flags.quiet }),
    });
    process.stdout.write(`\n${summaryText(result.records)}\n\nreport: ${result.files.html}\n`);
  } catch (error) {
    if (error instanceof DataFileError || error instanceof ClientOptionError || error instanceof ServingOptionError || error instanceof RangeError)
      fail(error.message);
    throw error;
  }
}
