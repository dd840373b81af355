import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ProbBatch } from '../../../src/defenses/index.js';
import { AnswerFormatError, RequestFormatError, ServingOptionError } from '../../../src/server/errors.js';
import { isEncodedImages, jsonPathCodec, kserveV2Codec, tfServingCodec, type InputRows, type RequestInputs } from '../../../src/server/protocols/index.js';
import { parsePath } from '../../../src/server/protocols/json-path.js';
import { shortestFloat32 } from '../../../src/server/protocols/numbers.js';

function numeric(inputs: RequestInputs): InputRows {
  assert.ok(!isEncodedImages(inputs), 'expected a numeric tensor');
  return inputs;
}

const rowsOf = (batch: ProbBatch) =>
  Array.from({ length: batch.rows }, (_, r) => Array.from(batch.data.subarray(r * batch.cols, (r + 1) * batch.cols), shortestFloat32));
const halves = (batch: ProbBatch): ProbBatch => ({ ...batch, data: new Float32Array(batch.data.length).fill(1 / batch.cols) });

describe('kserve-v2 codec', () => {
  const codec = kserveV2Codec({ outputName: 'probs', keepOutputs: ['label'] });
  const answer = {
    model_name: 'm',
    id: '7',
    extra_top_level: 'dropped',
    outputs: [
      { name: 'logits', shape: [2, 2], datatype: 'FP32', data: [3, -3, -1, 1] },
      {
        name: 'probs',
        shape: [2, 2],
        datatype: 'FP64',
        data: [
          [0.9, 0.1],
          [0.3, 0.7],
        ],
      },
      { name: 'label', shape: [2], datatype: 'INT64', data: [0, 1] },
    ],
  };

  it('reads the named output (nested data), writes it back nested, keeps listed outputs and drops the rest', () => {
    const view = codec.readAnswer(answer);
    assert.deepEqual(rowsOf(view.batch), [
      [0.9, 0.1],
      [0.3, 0.7],
    ]);
    const written = view.write(halves(view.batch)) as typeof answer;
    assert.deepEqual(written, {
      model_name: 'm',
      id: '7',
      outputs: [
        {
          name: 'probs',
          shape: [2, 2],
          datatype: 'FP64',
          data: [
            [0.5, 0.5],
            [0.5, 0.5],
          ],
        },
        { name: 'label', shape: [2], datatype: 'INT64', data: [0, 1] },
      ],
    });
    assert.equal(answer.outputs.length, 3, 'the original body is not mutated');
  });

  it('refuses answers it cannot read, naming the problem', () => {
    const cases: [unknown, RegExp][] = [
      [{ outputs: [] }, /non-empty "outputs"/],
      [
        {
          outputs: [
            { name: 'a', shape: [1, 2], datatype: 'FP32', data: [0.5, 0.5] },
            { name: 'b', shape: [1, 2], datatype: 'FP32', data: [0.5, 0.5] },
          ],
        },
        /outputs are a, b; configure .*outputName/,
      ],
      [{ outputs: [{ name: 'p', shape: [1, 2], datatype: 'BYTES', data: ['x', 'y'] }] }, /datatype BYTES/],
      [{ outputs: [{ name: 'p', shape: [2, 2], datatype: 'FP32', data: [0.5, 0.5, 1] }] }, /3 values but shape \[2, 2\] needs 4/],
      [{ outputs: [{ name: 'p', shape: [4], datatype: 'FP32', data: [0.25, 0.25, 0.25, 0.25] }] }, /expected \[batch, classes\]/],
      [{ outputs: [{ name: 'p', shape: [1, 2], datatype: 'FP32', data: [0.5, 'x'] }] }, /other than numbers/],
    ];
    for (const [body, message] of cases)
      assert.throws(
        () => kserveV2Codec().readAnswer(body),
        (e: Error) => e instanceof AnswerFormatError && message.test(e.message),
      );
  });

  it('reads request inputs of any rank as flattened rows, with their datatype', () => {
    const inputs = numeric(kserveV2Codec().readInputs({ inputs: [{ name: 'image', shape: [2, 2, 2], datatype: 'UINT8', data: [1, 2, 3, 4, 5, 6, 7, 8] }] }));
    assert.deepEqual(
      { rows: inputs.rows, cols: inputs.cols, data: Array.from(inputs.data), datatype: inputs.datatype },
      { rows: 2, cols: 4, data: [1, 2, 3, 4, 5, 6, 7, 8], datatype: 'UINT8' },
    );
    assert.throws(() => kserveV2Codec().readInputs({ instances: [] }), RequestFormatError);
    assert.throws(
      () => kserveV2Codec({ inputName: 'x' }).readInputs({ inputs: [{ name: 'image', shape: [1, 1], datatype: 'FP32', data: [1] }] }),
      /no input named "x"/,
    );
  });

  it('refuses keepOutputs that name the defended output', () => {
    assert.throws(() => kserveV2Codec({ outputName: 'p', keepOutputs: ['p'] }), ServingOptionError);
  });
});

describe('tf-serving codec', () => {
  it('reads row predictions and writes rows back, dropping other top-level fields', () => {
    const view = tfServingCodec().readAnswer({ predictions: [[0.2, 0.8]], model_spec: 'x' });
    assert.deepEqual(view.write(halves(view.batch)), { predictions: [[0.5, 0.5]] });
  });

  it('reads object predictions by outputKey, keeping only keepKeys beside it', () => {
    const codec = tfServingCodec({ outputKey: 'probabilities', keepKeys: ['classes'] });
    const view = codec.readAnswer({ predictions: [{ probabilities: [0.2, 0.8], logits: [-1, 1], classes: 1 }] });
    assert.deepEqual(view.write(halves(view.batch)), { predictions: [{ classes: 1, probabilities: [0.5, 0.5] }] });
    assert.throws(
      () => tfServingCodec().readAnswer({ predictions: [{ probabilities: [0.2, 0.8], logits: [-1, 1] }] }),
      /configure which one to read \(outputKey\)/,
    );
  });

  it('reads columnar outputs, plain or named', () => {
    assert.deepEqual(rowsOf(tfServingCodec().readAnswer({ outputs: [[0.25, 0.75]] }).batch), [[0.25, 0.75]]);
    const named = tfServingCodec({ outputKey: 'p' }).readAnswer({ outputs: { p: [[0.25, 0.75]], logits: [[0, 1]] } });
    assert.deepEqual(named.write(halves(named.batch)), { outputs: { p: [[0.5, 0.5]] } });
  });

  it('reads instances (nested arrays or objects by inputKey) and columnar inputs', () => {
    const nested = numeric(
      tfServingCodec().readInputs({
        instances: [
          [
            [1, 2],
            [3, 4],
          ],
          [
            [5, 6],
            [7, 8],
          ],
        ],
      }),
    );
    assert.deepEqual([nested.rows, nested.cols], [2, 4]);
    const objects = numeric(
      tfServingCodec({ inputKey: 'image' }).readInputs({
        instances: [
          { image: [1, 2], id: 'a' },
          { image: [3, 4], id: 'b' },
        ],
      }),
    );
    assert.deepEqual(Array.from(objects.data), [1, 2, 3, 4]);
    const columnar = numeric(tfServingCodec().readInputs({ inputs: { x: [[1], [2]] } }));
    assert.deepEqual([columnar.rows, columnar.cols], [2, 1]);
    assert.throws(() => tfServingCodec().readInputs({ instances: [[1, 2], [3]] }), /input row 1 has 1 values, expected 2/);
  });

  it('refuses an answer without predictions or outputs', () => {
    assert.throws(() => tfServingCodec().readAnswer({ result: [] }), AnswerFormatError);
    assert.throws(() => tfServingCodec().readAnswer({ predictions: [[0.5], [0.5]] }), /at least 2 classes/);
  });
});

describe('json-path codec', () => {
  it('parses paths and refuses ones it cannot read', () => {
    assert.deepEqual(parsePath('$.result.items[*].scores'), ['result', 'items', '*', 'scores']);
    assert.deepEqual(parsePath('outputs[0].data'), ['outputs', 0, 'data']);
    assert.throws(() => parsePath('a[*].b[*]'), /more than one \[\*\]/);
    assert.throws(() => parsePath('a b'), /cannot read path/);
    assert.throws(() => parsePath('$'), /selects the whole body/);
  });

  it('reads rows through a wildcard and writes them back in place, leaving the rest', () => {
    const codec = jsonPathCodec({ probsPath: 'result.items[*].scores', inputsPath: 'images' });
    const body = {
      result: {
        items: [
          { id: 1, scores: [0.1, 0.9] },
          { id: 2, scores: [0.6, 0.4] },
        ],
      },
      took_ms: 3,
    };
    const view = codec.readAnswer(body);
    assert.deepEqual(rowsOf(view.batch), [
      [0.1, 0.9],
      [0.6, 0.4],
    ]);
    assert.deepEqual(view.write(halves(view.batch)), {
      result: {
        items: [
          { id: 1, scores: [0.5, 0.5] },
          { id: 2, scores: [0.5, 0.5] },
        ],
      },
      took_ms: 3,
    });
    assert.deepEqual(body.result.items[0].scores, [0.1, 0.9], 'the original body is not mutated');
    assert.equal(numeric(codec.readInputs({ images: [[1, 2, 3]] })).cols, 3);
  });

  it('reads a single row as a single row', () => {
    const view = jsonPathCodec({ probsPath: 'probs' }).readAnswer({ probs: [0.3, 0.7] });
    assert.deepEqual(view.write(halves(view.batch)), { probs: [0.5, 0.5] });
  });

  it('refuses missing paths and missing inputsPath', () => {
    assert.throws(() => jsonPathCodec({ probsPath: 'a.b' }).readAnswer({ a: {} }), /"a.b" is missing/);
    assert.throws(() => jsonPathCodec({ probsPath: 'items[*].p' }).readAnswer({ items: [{ p: [0.5, 0.5] }, {}] }), /items\[1\]\.p" is missing/);
    assert.throws(() => jsonPathCodec({ probsPath: 'p' }).readInputs({ x: [] }), /without inputsPath/);
  });
});

describe('shortestFloat32', () => {
  it('writes the shortest decimal that reads back as the same float32', () => {
    assert.equal(shortestFloat32(Math.fround(0.06)), 0.06);
    assert.equal(shortestFloat32(Math.fround(1 / 3)), 0.33333334);
    for (const v of [0, 1, 1e-8, 0.123456789, 0.999999]) assert.equal(Math.fround(shortestFloat32(Math.fround(v))), Math.fround(v));
  });
});
