/**
 * Deterministic randomness per input: a generator seeded by HMAC-SHA256(secret, key), so the
 * same input always gets the same noise (averaging repeated queries gains nothing) while nobody
 * without the secret can predict it.
 */
import { createHmac, randomBytes } from 'node:crypto';

/** A fresh secret for a process that was not given one: deterministic within its lifetime only. */
export function ephemeralSecret(): Buffer {
  return randomBytes(32);
}

/** Uniform doubles in (0, 1) from a small fast counter-based generator (sfc32). */
export class KeyedRandom {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(secret: string | Buffer, key: string | Uint8Array) {
    const digest = createHmac('sha256', secret).update(key).digest();
    this.a = digest.readUInt32LE(0);
    this.b = digest.readUInt32LE(4);
    this.c = digest.readUInt32LE(8);
    this.d = digest.readUInt32LE(12);
    for (let i = 0; i < 12; i++) this.nextUint32();
  }

  nextUint32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in the open interval (0, 1). */
  uniform(): number {
    return (this.nextUint32() + 0.5) / 4294967296;
  }

  /** Standard normal (Box–Muller). */
  gaussian(): number {
    return Math.sqrt(-2 * Math.log(this.uniform())) * Math.cos(2 * Math.PI * this.uniform());
  }

  /** Laplace with scale 1 (inverse CDF). */
  laplace(): number {
    const u = this.uniform() - 0.5;
    return -Math.sign(u) * Math.log(1 - 2 * Math.abs(u));
  }
}
