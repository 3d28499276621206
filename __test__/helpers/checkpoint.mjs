// Test helpers: copy fixtures into temp directories, and write small safetensors files by hand
// (the format is an 8-byte little-endian header length, a JSON header, then the data).
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const FIXTURES = join(ROOT, 'fixtures')

export const manifest = () => JSON.parse(readFileSync(join(FIXTURES, 'MANIFEST.json'), 'utf8')).fixtures

/** The fixtures of fixtures/families/ (tools/make_family_fixtures.py), in MANIFEST.json's schema. */
export const familyManifest = () => JSON.parse(readFileSync(join(FIXTURES, 'families', 'MANIFEST.json'), 'utf8')).fixtures

/** Model types of fixtures/families/ whose forward moe-quant has (the others are refused, naming what is missing). */
export const CALIBRATED_FAMILIES = new Set([
  'qwen3_vl_moe', 'glm4v_moe', 'dots1', 'minimax_m2', 'deepseek_v2', 'ernie4_5_moe', 'hunyuan_v1_moe', 'flex_olmo', 'granitemoeshared', 'phimoe',
  'qwen3_next', 'qwen3_5_moe_text', 'granitemoehybrid', 'nemotron_h', 'deepseek_v32', 'glm_moe_dsa', 'jamba', 'lfm2_moe',
  'sarvam_mla', 'solar_open', 'glm4_moe_lite', 'hy_v3', 'kimi_k25', 'qwen3_omni_moe_thinker', 'exaone_moe', 'flint', 'granitemoe_swa',
  'deepseek_ocr2', 'unlimited_ocr', 'aria_text', 'param2moe', 'sarvam_moe', 'minimax', 'longcat_flash', 'gemma4_text', 'gemma4', 'kimi_linear',
])

/** Layouts of calibrated families whose forward is refused, with the words that say why (none at present). */
export const FORWARD_REFUSED_LAYOUTS = {}

/** The fixtures of fixtures/families/ that the forward runs on. */
export const calibratedFamilyFixtures = () =>
  familyManifest().filter((f) => CALIBRATED_FAMILIES.has(f.model_type) && !Object.hasOwn(FORWARD_REFUSED_LAYOUTS, f.path))

/** Temp directories of this test file, removed when its process exits (ava runs each file in a process of its own). */
const temporaries = []
process.once('exit', () => {
  for (const dir of temporaries) rmSync(dir, { recursive: true, force: true })
})

export function tempDir(prefix = 'moe-quant-test-') {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  temporaries.push(dir)
  return dir
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

/** bf16 bytes as numbers. */
export function bf16Values(bytes) {
  const halves = new Uint16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength))
  return new Float32Array(Uint32Array.from(halves, (h) => h << 16).buffer)
}

/** The value of an E4M3 byte. */
export function e4m3(byte) {
  const sign = byte & 0x80 ? -1 : 1
  const exponent = (byte >> 3) & 0x0f
  const mantissa = byte & 0x07
  if ((byte & 0x7f) === 0x7f) return Number.NaN
  return sign * (exponent === 0 ? mantissa / 512 : 2 ** (exponent - 7) * (1 + mantissa / 8))
}

/** A tensor of `readTensors` as numbers: F32 as read, BF16 and F8_E4M3 decoded. */
export function floatValues({ dtype, values }) {
  if (dtype === 'BF16') return bf16Values(values)
  if (dtype === 'F8_E4M3') return Array.from(values, e4m3)
  return values
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

/** mulberry32: a small deterministic pseudo-random generator returning uint32s. */
export function mulberry32(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (t ^ (t >>> 14)) >>> 0
  }
}

/** A seeded pseudo-random generator (mulberry32) returning floats in [-1, 1). */
export function random(seed) {
  const next = mulberry32(seed)
  return () => (next() / 4294967296) * 2 - 1
}

/** BF16 bytes of `count` random values scaled by `scale` (a value may be replaced by `poison`). */
export function randomBf16(count, scale, next, poison) {
  const out = Buffer.alloc(count * 2)
  const f32 = new Float32Array(1)
  const u32 = new Uint32Array(f32.buffer)
  for (let i = 0; i < count; i++) {
    f32[0] = poison && i === poison.index ? poison.value : next() * scale
    out.writeUInt16LE(u32[0] >>> 16, i * 2)
  }
  return out
}

/**
 * Writes a small random Qwen3-MoE checkpoint (per-expert hub layout, bf16) with the given sizes, for tests
 * that need shapes the committed fixtures do not have. `poison` puts a value into one tensor; `scales` maps
 * tensor-name prefixes to the scale of their random values.
 */
export function writeSyntheticQwen3(dir, { hidden = 64, intermediate = 48, experts = 4, layers = 1, vocab = 256, poison, scales = {} } = {}) {
  mkdirSync(dir, { recursive: true })
  const heads = 4
  const headDim = 16
  writeJson(join(dir, 'config.json'), {
    architectures: ['Qwen3MoeForCausalLM'], model_type: 'qwen3_moe', hidden_size: hidden, num_hidden_layers: layers,
    num_attention_heads: heads, num_key_value_heads: 2, head_dim: headDim, num_experts: experts, num_experts_per_tok: 2,
    moe_intermediate_size: intermediate, intermediate_size: 96, vocab_size: vocab, rms_norm_eps: 1e-6, norm_topk_prob: true,
    rope_parameters: { rope_type: 'default', rope_theta: 10000.0 }, tie_word_embeddings: false, dtype: 'bfloat16',
  })
  const next = random(7)
  const tensors = {}
  const add = (name, shape, defaultScale = 0.05) => {
    const count = shape.reduce((a, b) => a * b, 1)
    const scale = Object.entries(scales).find(([prefix]) => name.startsWith(prefix))?.[1] ?? defaultScale
    tensors[name] = { dtype: 'BF16', shape, data: randomBf16(count, scale, next, poison?.tensor === name ? poison : undefined) }
  }
  const ones = (name, n) => {
    const data = Buffer.alloc(n * 2)
    for (let i = 0; i < n; i++) data.writeUInt16LE(0x3f80, i * 2) // bf16 1.0
    tensors[name] = { dtype: 'BF16', shape: [n], data }
  }
  add('model.embed_tokens.weight', [vocab, hidden], 1)
  for (let l = 0; l < layers; l++) {
    const p = `model.layers.${l}.`
    ones(`${p}input_layernorm.weight`, hidden)
    ones(`${p}post_attention_layernorm.weight`, hidden)
    add(`${p}self_attn.q_proj.weight`, [heads * headDim, hidden])
    add(`${p}self_attn.k_proj.weight`, [2 * headDim, hidden])
    add(`${p}self_attn.v_proj.weight`, [2 * headDim, hidden])
    add(`${p}self_attn.o_proj.weight`, [hidden, heads * headDim])
    ones(`${p}self_attn.q_norm.weight`, headDim)
    ones(`${p}self_attn.k_norm.weight`, headDim)
    add(`${p}mlp.gate.weight`, [experts, hidden], 0.5)
    for (let e = 0; e < experts; e++) {
      add(`${p}mlp.experts.${e}.gate_proj.weight`, [intermediate, hidden])
      add(`${p}mlp.experts.${e}.up_proj.weight`, [intermediate, hidden])
      add(`${p}mlp.experts.${e}.down_proj.weight`, [hidden, intermediate])
    }
  }
  ones('model.norm.weight', hidden)
  add('lm_head.weight', [vocab, hidden])
  writeSafetensors(join(dir, 'model.safetensors'), tensors)
  return dir
}
