/** The codecs by protocol name, and the one place that turns a protocol option into a codec. */
import { ServingOptionError } from '../errors.js';
import type { Codec } from './codec.js';
import { jsonPathCodec, type JsonPathOptions } from './json-path.js';
import { kserveV2Codec, type KServeV2Options } from './kserve-v2.js';
import { tfServingCodec, type TfServingOptions } from './tf-serving.js';

export type { AnswerView, Codec, EncodedImages, InputRows, RequestInputs } from './codec.js';
export { isEncodedImages } from './codec.js';
export { jsonPathCodec, kserveV2Codec, tfServingCodec, type JsonPathOptions, type KServeV2Options, type TfServingOptions };

export const PROTOCOLS = ['kserve-v2', 'tf-serving', 'json-path'] as const;
export type ProtocolName = (typeof PROTOCOLS)[number];

export type ProtocolConfig =
  | ({ name: 'kserve-v2' } & KServeV2Options)
  | ({ name: 'tf-serving' } & TfServingOptions)
  | ({ name: 'json-path' } & JsonPathOptions);

export function isCodec(value: unknown): value is Codec {
  return typeof value === 'object' && value !== null && typeof (value as Codec).readAnswer === 'function' && typeof (value as Codec).readInputs === 'function';
}

/** A codec from a protocol name, a config object, or a ready codec. */
export function resolveCodec(protocol: ProtocolName | ProtocolConfig | Codec | undefined): Codec {
  if (protocol === undefined) return kserveV2Codec();
  if (isCodec(protocol)) return protocol;
  const config = typeof protocol === 'string' ? ({ name: protocol } as ProtocolConfig) : protocol;
  switch (config?.name) {
    case 'kserve-v2':
      return kserveV2Codec(config);
    case 'tf-serving':
      return tfServingCodec(config);
    case 'json-path':
      return jsonPathCodec(config);
    default:
      throw new ServingOptionError(
        `unknown protocol ${JSON.stringify(typeof protocol === 'string' ? protocol : (config as { name?: unknown } | undefined)?.name)}; write one of ${PROTOCOLS.map((p) => `"${p}"`).join(', ')}, e.g. protocol: { name: "kserve-v2", outputName: "probabilities" }`,
      );
  }
}
