/** `train`: train a model on MNIST or FashionMNIST and save it with a meta.json beside it. */
import type { Command } from 'commander';
import { failCommand, integerFlag } from '../flags/flags.js';
import { DATASET_NAMES, loadDataset, type DatasetName } from '../../eval/world/datasets.js';
import {
  ARCHITECTURES,
  ModelError,
  TRAIN_ENGINES,
  TRAIN_LOSSES,
  accuracy,
  createModel,
  initBackend,
  saveModel,
  trainModel,
  writeModelMeta,
  type Architecture,
  type TrainEngine,
  type TrainLoss,
} from '../../models/index.js';
import { createProgress, type Progress } from '../progress.js';

interface TrainCommandOptions {
  dataset: string;
  arch: string;
  epochs: string;
  out: string;
  batchSize: string;
  lr: string;
  seed: string;
  loss: string;
  limit?: string;
  testLimit?: string;
  backend?: string;
  engine: string;
  threads: string;
  quiet?: boolean;
}

const fail: (message: string) => never = (message) => failCommand('train', message);
const integer = (value: string, flag: string, min: number): number => integerFlag(value, flag, min, fail);

function choice<T extends string>(value: string, allowed: readonly T[], name: string): T {
  if (!allowed.includes(value as T)) fail(`${name} must be one of ${allowed.join(', ')}, got "${value}"`);
  return value as T;
}

export function registerTrainCommand(program: Command): void {
  program
    .command('train')
    .description('train a model (victim, misinformation model) on MNIST or FashionMNIST and save it (model.json, weights.bin, meta.json)')
    .requiredOption('-o, --out <dir>', 'folder to write the model into')
    .option('-d, --dataset <name>', `dataset: ${DATASET_NAMES.join(', ')}`, 'mnist')
    .option('-a, --arch <name>', `architecture: ${ARCHITECTURES.join(', ')}`, 'mlp')
    .option('-e, --epochs <n>', 'passes over the training set', '5')
    .option('--batch-size <n>', 'rows per step', '64')
    .option('--lr <rate>', 'Adam learning rate', '0.001')
    .option('--seed <n>', 'seed of the initial weights and the shuffling', '0')
    .option('--loss <name>', `loss: ${TRAIN_LOSSES.join(', ')} (misinformation trains a model to put its mass on wrong classes)`, 'soft-ce')
    .option('--limit <n>', 'train on the first n training images only')
    .option('--test-limit <n>', 'score on the first n test images only')
    .option('--backend <name>', 'force a tfjs backend (tensorflow-gpu, tensorflow, wasm, cpu); default: MSD_BACKEND or the best available')
    .option(
      '--engine <name>',
      `what runs the steps: ${TRAIN_ENGINES.join(', ')} (auto: onnxruntime-node when installed and the model is covered)`,
      process.env.MSD_TRAIN_ENGINE || 'auto',
    )
    .option('--threads <n>', 'onnxruntime threads per operator', '1')
    .option('-q, --quiet', 'no progress bar')
    .action(async (opts: TrainCommandOptions) => {
      const dataset = choice(opts.dataset, DATASET_NAMES, '--dataset') as DatasetName;
      const arch = choice(opts.arch, ARCHITECTURES, '--arch') as Architecture;
      const loss = choice(opts.loss, TRAIN_LOSSES, '--loss') as TrainLoss;
      const engine = choice(opts.engine, TRAIN_ENGINES, '--engine') as TrainEngine;
      const threads = integer(opts.threads, '--threads', 1);
      const epochs = integer(opts.epochs, '--epochs', 1);
      const batchSize = integer(opts.batchSize, '--batch-size', 1);
      const seed = integer(opts.seed, '--seed', 0);
      const learningRate = Number(opts.lr);
      if (!(learningRate > 0) || !Number.isFinite(learningRate)) fail(`--lr must be a positive number, got "${opts.lr}"`);
      const limit = opts.limit === undefined ? undefined : integer(opts.limit, '--limit', 1);
      const testLimit = opts.testLimit === undefined ? undefined : integer(opts.testLimit, '--test-limit', 1);
      if (opts.backend) process.env.MSD_BACKEND = opts.backend;
      try {
        const backend = await initBackend();
        const data = await loadDataset(dataset, { limit: { train: limit, test: testLimit }, log: (line) => process.stderr.write(`${line}\n`) });
        const model = createModel({ arch, inputShape: data.inputShape, classes: data.classes, seed });
        let bar: Progress | undefined;
        const started = Date.now();
        const result = await trainModel(
          model,
          { x: data.train.x, rows: data.train.rows, labels: data.train.labels },
          {
            epochs,
            batchSize,
            learningRate,
            seed,
            loss,
            engine,
            threads,
            validation: { x: data.test.x, labels: data.test.labels },
            onProgress: (p) => {
              bar ??= createProgress({ label: `epoch ${p.epoch}/${p.epochs}`, total: p.batches, silent: opts.quiet });
              const status = `loss ${p.loss.toFixed(4)} acc ${p.accuracy.toFixed(4)}`;
              if (!p.epochDone) {
                bar.update(p.batch, status);
                return;
              }
              bar.finish(`${status}${p.validationAccuracy === undefined ? '' : ` test acc ${p.validationAccuracy.toFixed(4)}`}`);
              bar = undefined;
            },
          },
        );
        const seconds = (Date.now() - started) / 1000;
        // The last epoch already scored the final weights on the test set.
        const testAccuracy = result.history[result.history.length - 1].validationAccuracy ?? accuracy(model, data.test.x, data.test.labels, data.test.rows);
        await saveModel(model, opts.out);
        await writeModelMeta(opts.out, {
          dataset,
          arch,
          classes: data.classes,
          inputShape: [...data.inputShape],
          loss,
          epochs,
          batchSize,
          learningRate,
          seed,
          trainRows: data.train.rows,
          testRows: data.test.rows,
          testAccuracy,
          trainSeconds: Math.round(seconds * 10) / 10,
          imagesPerSecond: Math.round(result.imagesPerSecond),
          backend: result.backend === backend.tfBackend ? backend.name : result.backend,
          createdAt: new Date().toISOString(),
        });
        process.stdout.write(
          `test accuracy ${(testAccuracy * 100).toFixed(2)}% (${dataset}, ${arch}, ${loss}, ${epochs} epochs, ${seconds.toFixed(1)} s, ${Math.round(result.imagesPerSecond)} images/s on ${result.backend}) → ${opts.out}\n`,
        );
        model.dispose();
      } catch (error) {
        if (error instanceof ModelError || error instanceof RangeError) fail(error.message);
        throw error;
      }
    });
}
