// The MoE zoo (fixtures/zoo/, written by tools/make_zoo.py): header-only descriptions of a tiny checkpoint of
// every Mixture-of-Experts model type transformers knows. This helper turns one entry and layout back into a
// checkpoint directory: config.json and a model.safetensors whose header lists exactly the recorded tensors
// (names, dtypes, shapes), filled with deterministic pseudo-random finite values.
//
// Plain JavaScript (no TypeScript, no packages): usable from the ava tests and from tools/zoo-report.mjs.
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { mulberry32 } from './checkpoint.mjs'

export const ZOO_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'fixtures', 'zoo')

/** fixtures/zoo/INDEX.json: every enumerated model type with its status. */
export function zooIndex(dir = ZOO_DIR) {
  return JSON.parse(readFileSync(join(dir, 'INDEX.json'), 'utf8'))
}

/** The model types that have an entry (status `built`), sorted. */
export function zooModelTypes(dir = ZOO_DIR) {
  return readdirSync(dir)
    .filter((name) => name.endsWith('.json') && name !== 'INDEX.json')
    .map((name) => name.slice(0, -'.json'.length))
    .sort()
}

const cache = new Map()

/** One zoo entry (parsed fixtures/zoo/<modelType>.json). */
export function loadZooEntry(modelType, dir = ZOO_DIR) {
  const key = join(dir, `${modelType}.json`)
  if (!cache.has(key)) cache.set(key, JSON.parse(readFileSync(key, 'utf8')))
  return cache.get(key)
}

/** The layouts an entry records: always `hub`, plus `fused` when its listing differs from hub's. */
export function zooLayouts(entry) {
  return Object.keys(entry.layouts).sort()
}

/** The config.json object of a layout (the fused save may write a different config). */
export function zooConfig(entry, layout) {
  return entry.layouts[layout]?.config ?? entry.config
}

/** Every (modelType, layout) pair of the zoo. */
export function zooCases(dir = ZOO_DIR) {
  const cases = []
  for (const modelType of zooModelTypes(dir)) {
    for (const layout of zooLayouts(loadZooEntry(modelType, dir))) cases.push({ modelType, layout })
  }
  return cases
}

// ---------------------------------------------------------------------------------------------------------------
// safetensors writing
// ---------------------------------------------------------------------------------------------------------------

/** Bytes per element of each safetensors dtype. */
export const DTYPE_SIZES = {
  BOOL: 1, U8: 1, I8: 1, F8_E4M3: 1, F8_E5M2: 1, F8_E8M0: 1,
  U16: 2, I16: 2, F16: 2, BF16: 2,
  U32: 4, I32: 4, F32: 4,
  U64: 8, I64: 8, F64: 8,
}

/** 32-bit FNV-1a of a string: the per-tensor seed. */
function hashString(text) {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return h
}


const f32 = new Float32Array(1)
const u32 = new Uint32Array(f32.buffer)

/** float32 → bfloat16 bits, round to nearest even. */
function bf16Bits(value) {
  f32[0] = value
  const bits = u32[0]
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff
}

/** float32 → float16 bits (values here are small and normal; subnormals flush toward zero). */
function f16Bits(value) {
  f32[0] = value
  const bits = u32[0]
  const sign = (bits >>> 16) & 0x8000
  const exponent = ((bits >>> 23) & 0xff) - 127 + 15
  const mantissa = bits & 0x7fffff
  if (exponent <= 0) return sign
  const rounded = (exponent << 10) + ((mantissa + 0x1000) >>> 13) // a mantissa carry bumps the exponent
  return sign | Math.min(rounded, 0x7bff)
}

/** Fills `buffer` (the bytes of one tensor) with deterministic values that are finite in `dtype`. */
function fill(buffer, dtype, seed) {
  const next = mulberry32(seed)
  // Normal-ish: the sum of four uniforms, centred, scaled to a standard deviation of about 0.02.
  const normal = () => ((next() + next() + next() + next()) / 4294967296 - 2) * 0.035
  const count = buffer.length / DTYPE_SIZES[dtype]
  const view = new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength)
  switch (dtype) {
    case 'BF16':
      for (let i = 0; i < count; i++) view.setUint16(2 * i, bf16Bits(normal()), true)
      return
    case 'F16':
      for (let i = 0; i < count; i++) view.setUint16(2 * i, f16Bits(normal()), true)
      return
    case 'F32':
      for (let i = 0; i < count; i++) view.setFloat32(4 * i, normal(), true)
      return
    case 'F64':
      for (let i = 0; i < count; i++) view.setFloat64(8 * i, normal(), true)
      return
    case 'BOOL':
      for (let i = 0; i < count; i++) buffer[i] = next() & 1
      return
    case 'F8_E4M3':
    case 'F8_E5M2':
      // Random sign and mantissa, exponent field kept below its all-ones value: always finite.
      for (let i = 0; i < count; i++) buffer[i] = next() & 0xbf
      return
    case 'F8_E8M0':
      for (let i = 0; i < count; i++) buffer[i] = 120 + (next() % 16) // 2^-7 .. 2^8, never the 0xff NaN
      return
    default:
      // Integers: random bytes.
      for (let i = 0; i < buffer.length; i++) buffer[i] = next() & 0xff
  }
}

const numel = (shape) => shape.reduce((a, b) => a * b, 1)
/** Checkpoint directories made in temporary parents by materializeZoo: directory → parent. */
const temporary = new Map()

/**
 * The bytes of a safetensors file holding `tensors` ({ name: [dtype, shape] }) with deterministic values:
 * an 8-byte little-endian header length, the JSON header (dtype / shape / data_offsets per tensor and
 * `__metadata__: { format: "pt" }`) padded with spaces to a multiple of 8, then the data. Tensors are laid out
 * as the safetensors Python package does (larger dtypes first, then by name), so that every tensor starts at
 * a multiple of its element size.
 */
export function safetensorsBytes(tensors, seed = 0) {
  const names = Object.keys(tensors).sort((a, b) => {
    const size = DTYPE_SIZES[tensors[b][0]] - DTYPE_SIZES[tensors[a][0]]
    return size !== 0 ? size : a < b ? -1 : a > b ? 1 : 0
  })
  const header = { __metadata__: { format: 'pt' } }
  let offset = 0
  for (const name of names) {
    const [dtype, shape] = tensors[name]
    const size = DTYPE_SIZES[dtype]
    if (size === undefined) throw new Error(`${name}: unknown safetensors dtype ${dtype}`)
    const bytes = numel(shape) * size
    header[name] = { dtype, shape, data_offsets: [offset, offset + bytes] }
    offset += bytes
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8')
  const padded = Math.ceil(json.length / 8) * 8
  json = Buffer.concat([json, Buffer.alloc(padded - json.length, 0x20)])
  const out = Buffer.alloc(8 + json.length + offset)
  out.writeBigUInt64LE(BigInt(json.length), 0)
  json.copy(out, 8)
  const data = out.subarray(8 + json.length)
  for (const name of names) {
    const [start, end] = header[name].data_offsets
    if (end > start) fill(data.subarray(start, end), tensors[name][0], hashString(name) ^ seed)
  }
  return out
}

/**
 * Writes one zoo entry and layout as a checkpoint directory (config.json + model.safetensors) and returns its
 * path. Without `dir`, a fresh temporary directory is made (remove it with removeZooCheckpoint).
 */
export function materializeZoo(modelType, layout = 'hub', dir = undefined, zooDir = ZOO_DIR) {
  const entry = loadZooEntry(modelType, zooDir)
  const listing = entry.layouts[layout]
  if (!listing) throw new Error(`zoo entry ${modelType} has no ${layout} layout (it has ${zooLayouts(entry).join(', ')})`)
  let target = dir
  if (target === undefined) {
    const parent = mkdtempSync(join(tmpdir(), 'moe-quant-zoo-'))
    target = join(parent, `${modelType}-${layout}`)
    temporary.set(target, parent)
  }
  mkdirSync(target, { recursive: true })
  writeFileSync(join(target, 'config.json'), `${JSON.stringify(zooConfig(entry, layout), null, 2)}\n`)
  writeFileSync(join(target, 'model.safetensors'), safetensorsBytes(listing.tensors, hashString(modelType)))
  return target
}

/** Removes a checkpoint directory made by materializeZoo (with its temporary parent when it made one). */
export function removeZooCheckpoint(dir) {
  rmSync(temporary.get(dir) ?? dir, { recursive: true, force: true })
  temporary.delete(dir)
}

// ---------------------------------------------------------------------------------------------------------------
// Ground truth and the comparison with inspectModel's report
// ---------------------------------------------------------------------------------------------------------------

const EXPERT_INDEX = /(^|\.)experts?\.(expert_)?\d+\./

/**
 * What detection should find in one layout of an entry, from the modules of the transformers model (never from
 * names): the MoE layers of the text decoder stack and, per layer, E, top-k, H, I, whether shared experts exist,
 * the router tensor names, the routed-expert tensor names, and the layout kinds that describe how they are stored
 * (`per_expert`, `fused`, `fused_transposed` or `fused_interleaved`, ungated experts included; none for experts
 * moe-quant has no kind for: DBRX's 2-D stacks, expert lists with biases of another shape ...).
 */
export function zooTruth(entry, layout) {
  const truth = entry.truth
  const listing = entry.layouts[layout].tensors
  const layoutTruth = entry.layouts[layout].truth
  const layers = new Map()
  truth.experts.forEach((experts, k) => {
    if (experts.layer_stack !== truth.text_layers.module || experts.in_attention || !experts.saved) return
    const names = layoutTruth.experts[k].experts.filter((name) => {
      const shape = listing[name]?.[1] ?? []
      return EXPERT_INDEX.test(name) || shape.length >= 2 || shape[0] === experts.experts
    })
    let layer = layers.get(experts.layer)
    if (!layer) {
      layer = {
        layer: experts.layer,
        experts: experts.experts,
        topK: experts.top_k,
        hidden: experts.hidden,
        intermediate: experts.intermediate,
        shared: false,
        routers: [],
        names: [],
        blocks: 0,
        modules: [],
      }
      layers.set(experts.layer, layer)
    }
    layer.blocks += 1
    layer.modules.push(experts.module)
    layer.shared ||= experts.shared_modules.length > 0 || experts.shared_gates.length > 0
    layer.routers.push(...layoutTruth.experts[k].router)
    layer.names.push(...names)
    layer.kinds = layoutKinds(experts, names, listing)
  })
  for (const layer of layers.values()) layer.names.sort()
  return { moeLayers: truth.moe_layers, layers }
}

/** The moe-quant layout kinds that describe how one layer's experts are stored in a layout. */
function layoutKinds(experts, names, listing) {
  const impl = experts.implementation ?? {}
  const perExpert = names.filter((name) => EXPERT_INDEX.test(name))
  if (perExpert.length > 0 && perExpert.length === names.length) return ['per_expert']
  if (experts.gated === false || impl.has_gate === false) {
    // Ungated experts (up and down only): up stacked [E, I, H], or [E, H, I] transposed.
    const up = listing[names.find((name) => /(^|\.)up_proj(\.weight)?$/.test(name))]
    if (!up || up[1].length !== 3 || names.length !== 2 || experts.intermediate === experts.hidden) return []
    return up[1][1] === experts.intermediate ? ['fused'] : ['fused_transposed']
  }
  const twoI = 2 * experts.intermediate
  const gateUp = names.map((name) => listing[name]).find((t) => t && t[1].length === 3 && t[1].includes(twoI))
  if (!gateUp) return []
  const [, shape] = gateUp
  if (shape[1] === twoI && shape[2] === experts.hidden) return impl.is_concatenated === false ? [] : ['fused']
  if (shape[2] === twoI && shape[1] === experts.hidden) return impl.is_concatenated === false ? ['fused_interleaved'] : ['fused_transposed']
  return []
}

const sameList = (a, b) => a.length === b.length && a.every((x, i) => x === b[i])

/**
 * Compares inspectModel's report with the zoo's ground truth; returns the differences (empty when detection is
 * right). `expertTensorNames` is the package's function that expands a MoE layer's tensor names.
 */
export function compareWithTruth(report, entry, layout, expertTensorNames) {
  const truth = zooTruth(entry, layout)
  const problems = []
  const found = report.moeLayers.map((l) => l.layer)
  if (!sameList(found, truth.moeLayers)) problems.push(`MoE layers [${found}] instead of [${truth.moeLayers}]`)
  for (const layer of report.moeLayers) {
    const expected = truth.layers.get(layer.layer)
    if (!expected) continue
    const where = `layer ${layer.layer}`
    if (expected.blocks > 1) problems.push(`${where}: ${expected.blocks} expert blocks (${expected.modules.join(', ')}), one detected`)
    if (layer.experts !== expected.experts) problems.push(`${where}: E ${layer.experts} instead of ${expected.experts}`)
    if (layer.topK !== expected.topK) problems.push(`${where}: top-k ${layer.topK} instead of ${expected.topK}`)
    if (layer.hidden !== expected.hidden) problems.push(`${where}: H ${layer.hidden} instead of ${expected.hidden}`)
    if (layer.intermediate !== expected.intermediate) problems.push(`${where}: I ${layer.intermediate} instead of ${expected.intermediate}`)
    if (!expected.kinds.includes(layer.layout)) {
      problems.push(`${where}: layout ${layer.layout} instead of ${expected.kinds.length ? expected.kinds.join(' or ') : 'none (a layout moe-quant has no kind for)'}`)
    }
    if ((layer.sharedExperts !== null) !== expected.shared) {
      problems.push(`${where}: shared experts ${layer.sharedExperts ? 'found' : 'missed'}`)
    }
    if (!expected.routers.includes(layer.tensors.router)) {
      problems.push(`${where}: router ${layer.tensors.router} instead of ${expected.routers.join(' / ') || 'none'}`)
    }
    const names = expertTensorNames(layer).sort()
    if (!sameList(names, expected.names)) {
      const extra = names.filter((n) => !expected.names.includes(n))
      const missing = expected.names.filter((n) => !names.includes(n))
      problems.push(`${where}: expert tensors differ (${missing.length} missed${missing.length ? `, e.g. ${missing[0]}` : ''}; ${extra.length} extra${extra.length ? `, e.g. ${extra[0]}` : ''})`)
    }
  }
  // Report each kind of difference once (the first layer that shows it), keeping the table short.
  const seen = new Set()
  return problems.filter((p) => {
    const key = p.replace(/^layer \d+: /, '').replace(/\d+/g, '#')
    if (seen.has(key)) return false
    seen.add(key)
    return true
  })
}
