import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { calibrateHoda, createClientDetection, type ClientState } from '../../src/detection/index.js';
import { decodeFloat32, decodeUint16, decodeUint8, encodeFloat32, encodeUint16, encodeUint8 } from '../../src/detection/encoding.js';
import { naturalQueries, observationOf } from './synthetic.js';

const hoda = calibrateHoda([Array.from({ length: 2000 }, (_, i) => i % 11)], { bins: 11, lengths: [100, 1000] });

/** One query of a 10-class victim on a 784-wide input (MNIST-like), as the serving layer observes it. */
function oneQuery(withHardness: boolean) {
  const [query] = naturalQueries(1, 1);
  return { ...observationOf(query, 1_700_000_000_000, 10, 0.9), ...(withHardness ? { hardness: Int8Array.of(3) } : {}) };
}

/** The state as an older version wrote it: the distance and hardness rings allocated at full size up front. */
function padded(state: ClientState, maxDistances: number, hodaCapacity: number): ClientState {
  const s = structuredClone(state) as Record<string, Record<string, unknown>>;
  const grow = <T extends Float32Array | Uint16Array | Uint8Array>(short: T, full: T): T => {
    full.set(short);
    return full;
  };
  if (s.prada) {
    s.prada.d = encodeFloat32(grow(decodeFloat32(s.prada.d as string), new Float32Array(maxDistances)));
    s.prada.dc = encodeUint16(grow(decodeUint16(s.prada.dc as string), new Uint16Array(maxDistances)));
  }
  if (s.hoda) s.hoda.r = encodeUint8(grow(decodeUint8(s.hoda.r as string), new Uint8Array(hodaCapacity)));
  return s as unknown as ClientState;
}

describe('compact client state (buffers grow with use, not allocated up front)', () => {
  it('a client with one query serialises to under 1 KB (defaults, 10 classes; with and without HODA)', () => {
    for (const withHoda of [false, true]) {
      const detection = createClientDetection(withHoda ? { hoda } : {});
      const observation = oneQuery(withHoda);
      const initial = JSON.stringify(detection.initialState(observation.time)).length;
      const after = JSON.stringify(detection.observe(detection.initialState(observation.time), observation).state).length;
      console.log(`state of a 1-query client${withHoda ? ' (HODA on)' : ''}: initial ${initial} bytes, after 1 query ${after} bytes`);
      assert.ok(initial < 600, `initial state ${initial} bytes`);
      assert.ok(after < 1024, `1-query state ${after} bytes`);
    }
  });

  it('grows with the distances recorded, up to the ring size, and behaves as before', () => {
    const detection = createClientDetection({ hoda, prada: { maxDistances: 50, minPooled: 20 } });
    const queries = naturalQueries(5, 200, 3, 16);
    let state = detection.initialState(0);
    let paddedState = padded(state, 50, 1000);
    const sizes: number[] = [];
    queries.forEach((q, i) => {
      const observation = { ...observationOf(q, i * 1000, 3, 0.9), hardness: Int8Array.of(i % 11) };
      const a = detection.observe(state, observation);
      const b = detection.observe(paddedState, observation);
      // A state written with full-size rings (before this change) reads and continues the same way.
      assert.deepEqual(b.assessment, a.assessment);
      state = a.state;
      paddedState = padded(b.state, 50, 1000);
      sizes.push(JSON.stringify(state).length);
    });
    const prada = (state as unknown as { prada: { d: string; len: number } }).prada;
    assert.equal(prada.len, 50);
    assert.equal(decodeFloat32(prada.d).length, 50, 'the ring stops growing at maxDistances');
    assert.ok(sizes[4] < sizes[60], 'the state grows with use');
  });
});
