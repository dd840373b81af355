/** Every defense the project knows, by name and alias. */
import { argmax } from '../argmax.js';
import type { DefenseDefinition } from './definition.js';
import { grad2 } from '../grad2.js';
import { mad } from '../mad/mad.js';
import { misinformation } from '../misinformation.js';
import { modelguardS } from '../modelguard/modelguard-s.js';
import { modelguardW } from '../modelguard/modelguard-w.js';
import { noise } from '../noise.js';
import { none } from '../none.js';
import type { ParamValue } from './params.js';
import { reverseSigmoid } from '../reverse-sigmoid.js';
import { rounding } from '../rounding.js';
import { topk } from '../topk.js';

export const DEFINITIONS: readonly DefenseDefinition[] = [
  none,
  topk,
  rounding,
  argmax,
  noise,
  reverseSigmoid,
  mad,
  misinformation,
  modelguardW,
  modelguardS,
  grad2,
] as readonly DefenseDefinition[];

export interface ResolvedName {
  definition: DefenseDefinition;
  /** Parameters preset by the alias used, if any. */
  preset: Readonly<Record<string, ParamValue>>;
}

const byName = new Map<string, ResolvedName>();
for (const definition of DEFINITIONS) {
  byName.set(definition.name, { definition, preset: {} });
  for (const [alias, preset] of Object.entries(definition.aliases ?? {})) byName.set(alias, { definition, preset });
}

export function lookupDefense(name: string): ResolvedName | undefined {
  return byName.get(name.trim().toLowerCase());
}

export function defenseNames(): string[] {
  return [...byName.keys()];
}
