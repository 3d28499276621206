// Test helpers: copy fixtures into temp directories, and write small safetensors files by hand
// (the format is an 8-byte little-endian header length, a JSON header, then the data).
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const FIXTURES = join(ROOT, 'fixtures')

export const manifest = () => JSON.parse(readFileSync(join(FIXTURES, 'MANIFEST.json'), 'utf8')).fixtures

export function tempDir(prefix = 'moe-quant-test-') {
  return mkdtempSync(join(tmpdir(), prefix))
}

/** Copies fixtures/<name> into a fresh temp directory and returns its path. */
export function copyFixture(name) {
  const dir = join(tempDir(), 'model')
  cpSync(join(FIXTURES, name), dir, { recursive: true })
  return dir
}

const SIZES = { BOOL: 1, U8: 1, I8: 1, F8_E4M3: 1, U16: 2, I16: 2, F16: 2, BF16: 2, I32: 4, F32: 4, I64: 8, F64: 8 }

/** Writes a safetensors file from `{ name: { dtype, shape } }` (data zero-filled unless given). */
export function writeSafetensors(path, tensors) {
  const header = {}
  const chunks = []
  let offset = 0
  for (const [name, { dtype, shape, data }] of Object.entries(tensors)) {
    const size = shape.reduce((a, b) => a * b, 1) * (SIZES[dtype] ?? 1)
    header[name] = { dtype, shape, data_offsets: [offset, offset + size] }
    chunks.push(data ?? Buffer.alloc(size))
    offset += size
  }
  writeRaw(path, header, Buffer.concat(chunks))
}

/** Writes a header object and data bytes as a safetensors file, verbatim (may be invalid on purpose). */
export function writeRaw(path, header, data) {
  let json = Buffer.from(JSON.stringify(header))
  const padded = Math.ceil(json.length / 8) * 8
  json = Buffer.concat([json, Buffer.alloc(padded - json.length, 0x20)])
  const length = Buffer.alloc(8)
  length.writeBigUInt64LE(BigInt(json.length))
  writeFileSync(path, Buffer.concat([length, json, data]))
}

/** Reads a safetensors file's header and data. */
export function readRaw(path) {
  const bytes = readFileSync(path)
  const n = Number(bytes.readBigUInt64LE(0))
  return { header: JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')), data: bytes.subarray(8 + n) }
}

export function readJson(path) {
  return JSON.parse(readFileSync(path, 'utf8'))
}

export function writeJson(path, value) {
  writeFileSync(path, JSON.stringify(value, null, 2))
}

/** Reads every tensor of a safetensors file into typed arrays: `{ name: { dtype, shape, values } }`. */
export function readTensors(path) {
  const { header, data } = readRaw(path)
  const out = {}
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue
    const [start, end] = info.data_offsets
    const bytes = data.subarray(start, end)
    const copy = new Uint8Array(bytes).buffer
    const values =
      info.dtype === 'F32' ? new Float32Array(copy)
      : info.dtype === 'I64' ? Array.from(new BigInt64Array(copy), Number)
      : new Uint8Array(copy)
    out[name] = { dtype: info.dtype, shape: info.shape, values }
  }
  return out
}

/** ‖a − b‖ / ‖b‖. */
export function relativeL2(a, b) {
  let num = 0
  let den = 0
  for (let i = 0; i < b.length; i++) {
    num += (a[i] - b[i]) ** 2
    den += b[i] ** 2
  }
  return Math.sqrt(num / den)
}

/** Reshapes a flat array into rows of `width`. */
export function rows(values, width) {
  const out = []
  for (let i = 0; i < values.length; i += width) out.push(Array.from(values.slice(i, i + width)))
  return out
}
