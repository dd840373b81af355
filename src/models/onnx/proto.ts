/**
 * The few bits of protocol buffers that ONNX files need, without a protobuf library: a writer for
 * building models (tests, benchmarks) and a reader that splits a message into its fields, so the
 * re-initialisation can replace a graph's initializers and keep every other byte as it was.
 */

/** Field numbers of the ONNX messages used here (onnx.proto3). */
export const ONNX_FIELDS = {
  model: { irVersion: 1, producerName: 2, graph: 7, opsetImport: 8 },
  opset: { domain: 1, version: 2 },
  graph: { node: 1, name: 2, initializer: 5, input: 11, output: 12 },
  node: { input: 1, output: 2, name: 3, opType: 4, attribute: 5 },
  attribute: { name: 1, f: 2, i: 3, s: 4, floats: 7, ints: 8, type: 20 },
  tensor: { dims: 1, dataType: 2, floatData: 4, int32Data: 5, int64Data: 7, name: 8, rawData: 9, doubleData: 10 },
  valueInfo: { name: 1, type: 2 },
  type: { tensorType: 1 },
  tensorType: { elemType: 1, shape: 2 },
  shape: { dim: 1 },
  dim: { value: 1, param: 2 },
} as const;

/** ONNX TensorProto.DataType values used here. */
export const ONNX_FLOAT = 1;
export const ONNX_INT64 = 7;

/** AttributeProto.AttributeType values. */
export const ONNX_ATTR = { FLOAT: 1, INT: 2, STRING: 3, FLOATS: 6, INTS: 7 } as const;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Appends protobuf fields to a growing byte list. */
export class ProtoWriter {
  private readonly parts: Uint8Array[] = [];
  private length = 0;

  private push(bytes: Uint8Array): this {
    this.parts.push(bytes);
    this.length += bytes.length;
    return this;
  }

  private varint(value: number | bigint): this {
    let v = BigInt.asUintN(64, BigInt(value));
    const out: number[] = [];
    do {
      let byte = Number(v & 0x7fn);
      v >>= 7n;
      if (v !== 0n) byte |= 0x80;
      out.push(byte);
    } while (v !== 0n);
    return this.push(Uint8Array.from(out));
  }

  private tag(field: number, wireType: number): this {
    return this.varint((field << 3) | wireType);
  }

  int(field: number, value: number | bigint): this {
    return this.tag(field, 0).varint(value);
  }

  float(field: number, value: number): this {
    const bytes = new Uint8Array(4);
    new DataView(bytes.buffer).setFloat32(0, value, true);
    return this.tag(field, 5).push(bytes);
  }

  bytes(field: number, value: Uint8Array): this {
    return this.tag(field, 2).varint(value.length).push(value);
  }

  string(field: number, value: string): this {
    return this.bytes(field, encoder.encode(value));
  }

  message(field: number, build: (w: ProtoWriter) => void): this {
    const inner = new ProtoWriter();
    build(inner);
    return this.bytes(field, inner.finish());
  }

  /** A packed repeated varint field. */
  packedInts(field: number, values: readonly (number | bigint)[]): this {
    const inner = new ProtoWriter();
    for (const v of values) inner.varint(v);
    return this.bytes(field, inner.finish());
  }

  /** A packed repeated float field. */
  packedFloats(field: number, values: ArrayLike<number>): this {
    const bytes = new Uint8Array(values.length * 4);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i], true);
    return this.bytes(field, bytes);
  }

  /** A field copied verbatim from a reader (tag and payload). */
  raw(field: ProtoField): this {
    return this.push(field.encoded);
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.length);
    let offset = 0;
    for (const part of this.parts) {
      out.set(part, offset);
      offset += part.length;
    }
    return out;
  }
}

/** One field of a decoded message: its number, wire type, value (varint / fixed) or payload (length-delimited), and its encoded bytes. */
export interface ProtoField {
  readonly field: number;
  readonly wireType: number;
  readonly varint?: bigint;
  readonly payload?: Uint8Array;
  readonly encoded: Uint8Array;
}

/** Splits one message into its top-level fields. Throws on a truncated or malformed message. */
export function readFields(bytes: Uint8Array): ProtoField[] {
  const fields: ProtoField[] = [];
  let pos = 0;
  const varint = (): bigint => {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (pos >= bytes.length) throw new Error('truncated varint');
      const byte = bytes[pos++];
      result |= BigInt(byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) return result;
      shift += 7n;
      if (shift > 70n) throw new Error('varint too long');
    }
  };
  while (pos < bytes.length) {
    const start = pos;
    const key = Number(varint());
    const field = key >>> 3;
    const wireType = key & 7;
    let value: bigint | undefined;
    let payload: Uint8Array | undefined;
    switch (wireType) {
      case 0:
        value = varint();
        break;
      case 1:
        payload = bytes.subarray(pos, pos + 8);
        pos += 8;
        break;
      case 2: {
        const length = Number(varint());
        if (pos + length > bytes.length) throw new Error(`field ${field} runs past the end of its message`);
        payload = bytes.subarray(pos, pos + length);
        pos += length;
        break;
      }
      case 5:
        payload = bytes.subarray(pos, pos + 4);
        pos += 4;
        break;
      default:
        throw new Error(`unsupported wire type ${wireType} (field ${field})`);
    }
    if (pos > bytes.length) throw new Error(`field ${field} runs past the end of its message`);
    fields.push({ field, wireType, varint: value, payload, encoded: bytes.subarray(start, pos) });
  }
  return fields;
}

export function fieldString(field: ProtoField): string {
  return decoder.decode(field.payload ?? new Uint8Array(0));
}

/** The values of a repeated varint field, packed or not. */
export function repeatedInts(fields: readonly ProtoField[], number: number): bigint[] {
  const out: bigint[] = [];
  for (const f of fields) {
    if (f.field !== number) continue;
    if (f.wireType === 0) out.push(f.varint as bigint);
    else if (f.wireType === 2) {
      // Packed: the payload is a run of varints.
      const inner = f.payload as Uint8Array;
      let pos = 0;
      while (pos < inner.length) {
        let result = 0n;
        let shift = 0n;
        for (;;) {
          const byte = inner[pos++];
          result |= BigInt(byte & 0x7f) << shift;
          if ((byte & 0x80) === 0) break;
          shift += 7n;
        }
        out.push(result);
      }
    }
  }
  return out;
}
