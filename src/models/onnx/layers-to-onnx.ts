/**
 * A TF.js layers model (sequential or functional) written as an ONNX graph, forward only, so that
 * onnxruntime-node runs it, many times faster than tfjs-wasm (docs/measurements/benchmarks.md, models-surrogates). The weights are the model's own (trained,
 * or re-initialised by tfjs/reinit.ts before the conversion).
 *
 * TF.js is NHWC; ONNX's convolutions are NCHW. The input image is transposed once, 4-D tensors stay
 * NCHW inside, and go back to NHWC before a Flatten (whose element order is TF's) or at the output.
 * This file walks the model's layers in order and wires their inputs; each layer class has its
 * converter in layer-converters.ts (LAYER_CONVERTERS). Layers outside the supported set are refused
 * naming the layer; nothing is approximated.
 */
import { UnsupportedModelError } from '../errors.js';
import type { LayersModel } from '../tfjs/tf.js';
import { OnnxGraphBuilder } from './graph-builder.js';
import { LAYER_CONVERTERS, ONNX_CONVERTIBLE_LAYERS, type ConvertedLayerClass, type Value } from './layer-converters.js';
import { writeOnnxModel } from './writer.js';

export { ONNX_CONVERTIBLE_LAYERS };

interface LayerConfig {
  class_name: string;
  name?: string;
  config: Record<string, unknown>;
  inbound_nodes?: unknown[];
}

interface ModelJson {
  class_name: string;
  config: { layers: LayerConfig[]; input_layers?: unknown[][]; output_layers?: unknown[][] };
}

/** The ONNX bytes of `model` (input `input` [batch, ...], output `output`). Throws UnsupportedModelError naming a layer it cannot convert. */
export function layersModelToOnnx(model: LayersModel): Uint8Array {
  const json = model.toJSON(undefined, false) as unknown as ModelJson;
  if (model.inputs.length !== 1 || model.outputs.length !== 1)
    throw new UnsupportedModelError(
      `${model.name}: one input and one output are converted to ONNX; the model has ${model.inputs.length} and ${model.outputs.length}`,
    );
  const inputShape = model.inputs[0].shape.slice(1);
  if (!inputShape.every((d): d is number => typeof d === 'number' && d > 0))
    throw new UnsupportedModelError(`${model.name}: the input shape ${JSON.stringify(model.inputs[0].shape)} has open dimensions besides the batch`);
  const outputShape = model.outputs[0].shape;

  const graph = new OnnxGraphBuilder();
  const zero = graph.constant('zero', [], Float32Array.of(0));
  let input: Value = { name: 'input', rank: inputShape.length + 1, nchw: false };
  if (input.rank === 4)
    input = { name: graph.node('Transpose', ['input'], { perm: [0, 3, 1, 2] }, 'input_nchw'), rank: 4, nchw: true, h: inputShape[0], w: inputShape[1] };

  const sequential = json.class_name === 'Sequential';
  const values = new Map<string, Value>();
  let previous: Value = input;
  for (const [index, config] of json.config.layers.entries()) {
    const name = (config.config.name as string | undefined) ?? config.name ?? `layer ${index}`;
    const out = config.class_name === 'InputLayer' ? input : convertLayer(model, config, name, sequential ? [previous] : undefined, values, graph, zero);
    values.set(name, out);
    previous = out;
  }

  const outputLayer = sequential ? undefined : (json.config.output_layers?.[0]?.[0] as string | undefined);
  let result = outputLayer ? values.get(outputLayer) : previous;
  if (!result) throw new UnsupportedModelError(`${model.name}: the output layer "${outputLayer}" was not found among the converted layers`);
  if (result.nchw) result = { name: graph.node('Transpose', [result.name], { perm: [0, 2, 3, 1] }), rank: 4, nchw: false };
  graph.nodes.push({ op: 'Identity', inputs: [result.name], outputs: ['output'] });
  return writeOnnxModel({
    name: model.name,
    inputs: [{ name: 'input', shape: ['batch', ...inputShape] }],
    outputs: [{ name: 'output', shape: ['batch', ...outputShape.slice(1).map((d) => d ?? graph.fresh('d', ''))] }],
    nodes: graph.nodes,
    initializers: graph.initializers,
  });
}

/** Writes one layer (not the InputLayer) through its converter; `inbound` is given for a sequential model, else read from the layer's inbound node. */
function convertLayer(
  model: LayersModel,
  config: LayerConfig,
  name: string,
  inbound: Value[] | undefined,
  values: ReadonlyMap<string, Value>,
  graph: OnnxGraphBuilder,
  zero: string,
): Value {
  const className = config.class_name;
  const refuse = (why: string): never => {
    throw new UnsupportedModelError(
      `layer "${name}" (${className}): ${why}; the ONNX engine converts ${ONNX_CONVERTIBLE_LAYERS.join(', ')} (use engine 'tfjs' for this model)`,
    );
  };
  if (!(ONNX_CONVERTIBLE_LAYERS as readonly string[]).includes(className)) refuse('not supported');
  const inputs = inbound ?? inboundValues(config, values, refuse);
  const layer = model.getLayer(name);
  const weights = layer.getWeights().map((w) => w.dataSync() as Float32Array);
  const shapes = layer.getWeights().map((w) => w.shape);
  const c = config.config;
  if (c.data_format !== undefined && c.data_format !== 'channels_last') refuse(`data_format ${String(c.data_format)} (only channels_last, TF.js's default)`);
  return LAYER_CONVERTERS[className as ConvertedLayerClass]({ name, config: c, inbound: inputs, weights, shapes, graph, zero, refuse });
}

/** The values feeding a functional model's layer, by its inbound node (a layer used twice is refused). */
function inboundValues(config: LayerConfig, values: ReadonlyMap<string, Value>, refuse: (why: string) => never): Value[] {
  const nodes = config.inbound_nodes ?? [];
  if (nodes.length !== 1) refuse(nodes.length === 0 ? 'no inputs' : `shared by ${nodes.length} calls (a layer used twice)`);
  return (nodes[0] as unknown[][]).map((entry) => {
    const [source, nodeIndex, tensorIndex] = entry as [string, number, number];
    if (nodeIndex !== 0 || tensorIndex !== 0) refuse(`reads output ${tensorIndex} of call ${nodeIndex} of "${source}"`);
    const value = values.get(source);
    if (!value) return refuse(`its input "${source}" comes later in the model's layer order`);
    return value;
  });
}
