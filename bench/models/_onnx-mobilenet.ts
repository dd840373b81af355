/**
 * A MobileNetV2-sized ONNX model written with the project's encoder (no exporter here): the
 * standard MobileNetV2 body (width 1.0, 224×224×3, NCHW), batch norm folded into each convolution's
 * bias, ReLU6 as Clip(0, 6), inverted residual blocks with Add, 1×1 conv to 1280, global average
 * pooling, then nsfwjs's head (dense 256, 128, 5) and a softmax. Weights are zeros here; the
 * benchmark re-initialises them with reinitOnnx (which also exercises it at full size).
 */
import { writeOnnxModel, type OnnxNodeSpec, type OnnxTensorSpec } from '../../src/models/index.js';

export function mobilenetV2Onnx(classes = 5): Uint8Array {
  const nodes: OnnxNodeSpec[] = [];
  const initializers: OnnxTensorSpec[] = [
    { name: 'zero', dims: [], data: Float32Array.of(0) },
    { name: 'six', dims: [], data: Float32Array.of(6) },
  ];
  let id = 0;
  const conv = (input: string, cin: number, cout: number, kernel: number, stride: number, groups: number, relu6: boolean): string => {
    const n = id++;
    initializers.push({ name: `w${n}`, dims: [cout, cin / groups, kernel, kernel], data: new Float32Array((cout * cin * kernel * kernel) / groups) });
    initializers.push({ name: `b${n}`, dims: [cout], data: new Float32Array(cout) });
    const pad = (kernel - 1) / 2;
    nodes.push({
      op: 'Conv',
      inputs: [input, `w${n}`, `b${n}`],
      outputs: [`c${n}`],
      attributes: { kernel_shape: [kernel, kernel], strides: [stride, stride], pads: [pad, pad, pad, pad], group: groups },
    });
    if (!relu6) return `c${n}`;
    nodes.push({ op: 'Clip', inputs: [`c${n}`, 'zero', 'six'], outputs: [`r${n}`] });
    return `r${n}`;
  };
  const dense = (input: string, cin: number, cout: number, relu: boolean): string => {
    const n = id++;
    initializers.push({ name: `w${n}`, dims: [cin, cout], data: new Float32Array(cin * cout) });
    initializers.push({ name: `b${n}`, dims: [cout], data: new Float32Array(cout) });
    nodes.push({ op: 'Gemm', inputs: [input, `w${n}`, `b${n}`], outputs: [`g${n}`] });
    if (!relu) return `g${n}`;
    nodes.push({ op: 'Relu', inputs: [`g${n}`], outputs: [`a${n}`] });
    return `a${n}`;
  };
  let x = conv('x', 3, 32, 3, 2, 1, true);
  let channels = 32;
  const table: [number, number, number, number][] = [
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
  ];
  for (const [t, c, n, s] of table) {
    for (let i = 0; i < n; i++) {
      const stride = i === 0 ? s : 1;
      const hidden = channels * t;
      let h = t === 1 ? x : conv(x, channels, hidden, 1, 1, 1, true);
      h = conv(h, hidden, hidden, 3, stride, hidden, true);
      h = conv(h, hidden, c, 1, 1, 1, false);
      if (stride === 1 && channels === c) {
        nodes.push({ op: 'Add', inputs: [x, h], outputs: [`add${id}`] });
        h = `add${id++}`;
      }
      x = h;
      channels = c;
    }
  }
  x = conv(x, channels, 1280, 1, 1, 1, true);
  nodes.push({ op: 'GlobalAveragePool', inputs: [x], outputs: ['pooled'] });
  nodes.push({ op: 'Flatten', inputs: ['pooled'], outputs: ['flat'] });
  x = dense(dense(dense('flat', 1280, 256, true), 256, 128, true), 128, classes, false);
  nodes.push({ op: 'Softmax', inputs: [x], outputs: ['probs'], attributes: { axis: 1 } });
  return writeOnnxModel({
    inputs: [{ name: 'x', shape: ['batch', 3, 224, 224] }],
    outputs: [{ name: 'probs', shape: ['batch', classes] }],
    nodes,
    initializers,
  });
}
