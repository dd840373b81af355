/**
 * Test hook behind holdSurrogateThreadOnNextCall: one Int32 shared by the main thread and the
 * surrogate's worker. The worker blocks its thread on it (as a long forward pass would) until the
 * main thread releases it, so a test knows the worker is busy while it checks the main thread.
 */

const ARMED = 0;
const HOLDING = 1;
const RELEASED = 2;

/** The main thread's side: the buffer to send to the worker, whether the worker holds, and the release. */
export interface CallHoldGate {
  readonly buffer: SharedArrayBuffer;
  /** True while the worker's thread is blocked on the gate. */
  holding(): boolean;
  /** Lets the worker go on (harmless when it never arrived, or was released before). */
  release(): void;
}

export function createCallHoldGate(): CallHoldGate {
  const buffer = new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT);
  const gate = new Int32Array(buffer);
  return {
    buffer,
    holding: () => Atomics.load(gate, 0) === HOLDING,
    release: () => {
      Atomics.store(gate, 0, RELEASED);
      Atomics.notify(gate, 0);
    },
  };
}

/** The worker's side: blocks this thread until the gate is released (not at all if it already was). */
export function holdUntilReleased(buffer: SharedArrayBuffer): void {
  const gate = new Int32Array(buffer);
  if (Atomics.compareExchange(gate, 0, ARMED, HOLDING) !== ARMED) return;
  while (Atomics.load(gate, 0) === HOLDING) Atomics.wait(gate, 0, HOLDING);
}
