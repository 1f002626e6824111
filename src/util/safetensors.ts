/**
 * safetensors reader and writer (the Hugging Face weight format):
 *
 *   [u64 little-endian N][N bytes JSON header, space-padded][raw little-endian tensor bytes]
 *   header: { "<name>": { "dtype": "F32", "shape": [..], "data_offsets": [begin, end] }, ...,
 *             "__metadata__": { "<key>": "<string>" } }
 *
 * Written by hand because the format is a page long and the npm packages for it are either
 * unmaintained or pull in a runtime we do not need. Writes are atomic (temporary file, then
 * rename) and reads check every offset, so a truncated or corrupted file is reported clearly.
 */
import { promises as fsp, readFileSync } from 'node:fs';
import { writeFileAtomicSync } from './fs.js';
import { MorError } from '../errors.js';

/** A file that is not valid safetensors (truncated, corrupt header, bad offsets). */
export class CheckpointError extends MorError {
  constructor(message: string) {
    super('E_CHECKPOINT', message);
  }
}

export type StoredDtype = 'F32' | 'I32' | 'F16' | 'BF16';

export interface NamedArray {
  shape: readonly number[];
  /** Float32Array for F32/F16/BF16 (half types are widened on read), Int32Array for I32. */
  data: Float32Array | Int32Array;
}

export interface SafetensorsFile {
  tensors: Map<string, NamedArray>;
  metadata: Record<string, string>;
}

const BYTES: Record<StoredDtype, number> = { F32: 4, I32: 4, F16: 2, BF16: 2 };

function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** Little-endian bf16 bytes → f32: the 16 bits are the top half of an f32 (bytes must be 2-aligned). */
function bf16ToF32(bytes: Uint8Array, count: number): Float32Array {
  const src = new Uint16Array(bytes.buffer, bytes.byteOffset, count);
  const out = new Float32Array(count);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < count; i++) bits[i] = (src[i] as number) << 16;
  return out;
}

let F16_TABLE: Float32Array | null = null;

/** Little-endian IEEE half bytes → f32, through a 65,536-entry table built once. */
function f16ToF32(bytes: Uint8Array, count: number): Float32Array {
  if (F16_TABLE === null) {
    F16_TABLE = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) F16_TABLE[h] = halfToFloat(h);
  }
  const table = F16_TABLE;
  const src = new Uint16Array(bytes.buffer, bytes.byteOffset, count);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = table[src[i] as number] as number;
  return out;
}

/** Parse a safetensors buffer. `source` names the file in error messages. */
export function parseSafetensors(buf: Uint8Array, source = 'safetensors data'): SafetensorsFile {
  if (buf.length < 8) throw new CheckpointError(`${source}: ${buf.length} bytes is too short for a safetensors file (truncated?)`);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  if (headerLen > buf.length - 8 || headerLen > 100 * 1024 * 1024) {
    throw new CheckpointError(`${source}: header length ${headerLen} exceeds the file size ${buf.length} (truncated or not safetensors)`);
  }
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(8, 8 + headerLen))) as Record<string, unknown>;
  } catch (e) {
    throw new CheckpointError(`${source}: header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw new CheckpointError(`${source}: header must be a JSON object`);
  }
  const dataStart = 8 + headerLen;
  const dataLen = buf.length - dataStart;
  const tensors = new Map<string, NamedArray>();
  let metadata: Record<string, string> = {};
  const ranges: [number, number, string][] = []; // [begin, end) and name of each tensor
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(entry, source);
      continue;
    }
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
      throw new CheckpointError(`${source}: tensor '${name}' must be an object with dtype, shape and data_offsets, got ${JSON.stringify(entry)}`);
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const dtype = e.dtype as StoredDtype;
    if (!(typeof dtype === 'string' && Object.hasOwn(BYTES, dtype))) {
      throw new CheckpointError(`${source}: tensor '${name}' has unsupported dtype ${JSON.stringify(e.dtype)} (supported: F32, I32, F16, BF16)`);
    }
    const shape = e.shape;
    const offsets = e.data_offsets;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new CheckpointError(`${source}: tensor '${name}' has a bad shape ${JSON.stringify(shape)}`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new CheckpointError(`${source}: tensor '${name}' has bad data_offsets ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    if (end - begin !== count * BYTES[dtype] || end > dataLen || begin > end) {
      throw new CheckpointError(
        `${source}: tensor '${name}' [${(shape as number[]).join(', ')}] ${dtype} needs ${count * BYTES[dtype]} bytes at ` +
          `[${begin}, ${end}) but the data section has ${dataLen} bytes (truncated or corrupt)`,
      );
    }
    // Copy into a fresh, aligned buffer (Buffer#slice would share the file buffer's memory).
    const bytes = new Uint8Array(end - begin);
    bytes.set(buf.subarray(dataStart + begin, dataStart + end));
    let data: Float32Array | Int32Array;
    if (dtype === 'F32') data = new Float32Array(bytes.buffer, 0, count);
    else if (dtype === 'I32') data = new Int32Array(bytes.buffer, 0, count);
    else data = dtype === 'BF16' ? bf16ToF32(bytes, count) : f16ToF32(bytes, count);
    tensors.set(name, { shape: shape as number[], data });
    ranges.push([begin, end, name]);
  }
  // Two tensors may not share bytes (the reference reader requires the ranges to tile the data).
  // Sorted by begin, a range overlaps an earlier one exactly when it begins before the furthest end so far.
  ranges.sort((a, b) => a[0] - b[0]);
  let furthest: [number, number, string] | null = null;
  for (const r of ranges) {
    if (r[1] === r[0]) continue; // an empty tensor holds no bytes
    if (furthest !== null && r[0] < furthest[1]) {
      throw new CheckpointError(
        `${source}: tensors '${furthest[2]}' at [${furthest[0]}, ${furthest[1]}) and '${r[2]}' at [${r[0]}, ${r[1]}) overlap (corrupt header)`,
      );
    }
    if (furthest === null || r[1] > furthest[1]) furthest = r;
  }
  return { tensors, metadata };
}

/** __metadata__: an object of string values (or null). */
function parseMetadata(entry: unknown, source: string): Record<string, string> {
  if (entry === null) return {};
  if (typeof entry !== 'object' || Array.isArray(entry) || !Object.values(entry).every((v) => typeof v === 'string')) {
    throw new CheckpointError(`${source}: __metadata__ must be an object of strings, got ${JSON.stringify(entry)}`);
  }
  return entry as Record<string, string>;
}

/** Read and parse a safetensors file. */
export async function readSafetensors(path: string): Promise<SafetensorsFile> {
  let buf: Buffer;
  try {
    buf = await fsp.readFile(path);
  } catch (e) {
    throw new CheckpointError(`cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return parseSafetensors(buf, path);
}

/** Synchronous read, for small fixtures. */
export function readSafetensorsSync(path: string): SafetensorsFile {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (e) {
    throw new CheckpointError(`cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return parseSafetensors(buf, path);
}

/** Serialise tensors (insertion order) and string metadata into safetensors bytes. */
export function serializeSafetensors(tensors: Iterable<[string, NamedArray]>, metadata: Record<string, string> = {}): Uint8Array[] {
  // No prototype: a tensor named '__proto__' must become a key, not replace the prototype.
  const header = Object.create(null) as Record<string, unknown>;
  if (Object.keys(metadata).length > 0) header['__metadata__'] = metadata;
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    const dtype: StoredDtype = t.data instanceof Int32Array ? 'I32' : 'F32';
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    chunks.push(bytes);
    offset += bytes.length;
  }
  let json = JSON.stringify(header);
  // Pad the header so the data section starts 8-byte aligned (what the reference writer does).
  const enc = new TextEncoder();
  let hb = enc.encode(json);
  const pad = (8 - ((8 + hb.length) % 8)) % 8;
  if (pad) {
    json += ' '.repeat(pad);
    hb = enc.encode(json);
  }
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(hb.length), true);
  return [len, hb, ...chunks];
}

/** Write a safetensors file atomically. */
export function writeSafetensors(path: string, tensors: Iterable<[string, NamedArray]>, metadata: Record<string, string> = {}): void {
  writeFileAtomicSync(path, serializeSafetensors(tensors, metadata));
}
