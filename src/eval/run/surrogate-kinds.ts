/**
 * MAD's surrogate for the ablation: does the surrogate matter, and what does its cost buy?
 *
 * - victim-arch: the victim's architecture, randomly initialised, never trained (the paper's best
 *   choice and the evaluation's default);
 * - small: a much smaller random network (an MLP with one hidden layer of 32 units);
 * - uniform: a constant surrogate whose softmax is 1/K for every input (one linear layer with zero
 *   weights: MAD's last-layer closed form then sees the same p for every row, at almost no cost).
 */
import { Surrogate, type Architecture } from '../../models/index.js';
import type { EvalConfig, SurrogateKind } from '../config.js';
import { deriveSeed } from '../random.js';
import type { EvaluationWorld } from '../world/world.js';

export interface SurrogateShape {
  arch: Architecture;
  features: number;
  classes: number;
  seed: number;
}

export function createSurrogate(kind: SurrogateKind, shape: SurrogateShape): Surrogate {
  const base = { inputShape: [shape.features], classes: shape.classes, seed: shape.seed };
  if (kind === 'victim-arch') return Surrogate.random({ ...base, arch: shape.arch });
  if (kind === 'small') return Surrogate.random({ ...base, arch: 'mlp', hidden: [32] });
  const surrogate = Surrogate.random({ ...base, arch: 'mlp', hidden: [] });
  const layer = surrogate.model.layers[surrogate.model.layers.length - 1];
  const zeros = layer.getWeights().map((w) => w.zerosLike());
  layer.setWeights(zeros);
  zeros.forEach((w) => w.dispose());
  return surrogate;
}

/** Microseconds per row of the surrogate's forward pass (what MAD's context costs per answer), over `rows` rows. */
export function surrogateMicrosPerRow(surrogate: Surrogate, x: Float32Array, rows: number): number {
  surrogate.probs(x.subarray(0, Math.min(rows, 16) * surrogate.inputSize), Math.min(rows, 16));
  const started = performance.now();
  surrogate.probs(x.subarray(0, rows * surrogate.inputSize), rows);
  return ((performance.now() - started) * 1000) / rows;
}

/** The setting's surrogate, with its forward cost per row told to `log` (the ablation's cost column). */
export function ablationSurrogate(
  kind: SurrogateKind,
  config: Pick<EvalConfig, 'seed' | 'surrogateArch'>,
  world: Pick<EvaluationWorld, 'features' | 'classes' | 'victimTest'>,
  log: (line: string) => void,
): Surrogate {
  const surrogate = createSurrogate(kind, {
    arch: config.surrogateArch,
    features: world.features,
    classes: world.classes,
    seed: deriveSeed(config.seed, 'surrogate'),
  });
  const rows = Math.min(1000, world.victimTest.rows);
  log(`surrogate ${kind}: ${surrogateMicrosPerRow(surrogate, world.victimTest.x, rows).toFixed(1)} µs per row (forward pass, ${rows} rows)`);
  return surrogate;
}
