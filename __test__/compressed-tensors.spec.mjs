// exportFormat: 'compressed-tensors' against llm-compressor and against the consumers that read that format.
//
// 1. llm-compressor 0.14.0.1's exports of the same fixtures with the same calibration ids (fixtures/golden/
//    compressed_tensors, made by tools/make_ct_golden.py; the MoE's calibrated schemes with --pipeline basic, the
//    causal forward): same tensor names, dtypes and shapes; every weight tensor (codes, block and global scales)
//    byte-identical; config.json's quantization_config equal. KV cache scales are the largest |key| (|value|) over 448
//    in bf16, as ModelOpt takes them; llm-compressor's minmax observer averages the samples' maxima (weight 0.01), so
//    its scales are at most ours. Input scales come from each tool's own forward (ours in
//    f32 on the CPU, llm-compressor's in bf16) and agree within 2%, except the routed experts' down_proj: llm-compressor
//    runs every expert on every calibration token and scales each expert's down_proj input on its own, where moe-quant
//    writes the one input scale per layer that ModelOpt writes (checked to be one value per layer).
// 2. The consumers (these run only where a Python with transformers, compressed-tensors and torch is found: the
//    MOE_QUANT_PYTHON interpreter, else python3; otherwise they pass with a log line saying they did not run):
//    - transformers + compressed-tensors load a dense export in float32, decompressed, and its logits (activation
//      quantization off) equal our own forward's over the same checkpoint within 1e-5 relative L2 for FP8; NVFP4 within
//      5e-3, because compressed-tensors decompresses NVFP4 weights in bf16 (measured 2.7e-3, where NVFP4 itself moves
//      the logits by 0.17);
//    - every weight of a MoE export decoded by compressed-tensors' own functions gives a checkpoint whose logits under
//      our forward equal our forward's over the export itself (transformers 5.17 cannot load NVFP4 MoE experts from
//      compressed-tensors: it merges them without their global scale, and rounds merged experts to bf16).
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { calibrateModel, computeLogits, quantizeModel } from '../dist/index.js'
import { FIXTURES, readTensors, relativeL2, ROOT, rows, tempDir } from './helpers/checkpoint.mjs'

const GOLDEN = join(FIXTURES, 'golden', 'compressed_tensors')
const calibIds = readTensors(join(FIXTURES, 'golden', 'calib_ids.safetensors')).input_ids
const CALIB_ROWS = rows(calibIds.values, calibIds.shape[1])

// [fixture, format, golden, options]
const CASES = [
  ['qwen3_moe/hub', 'fp8', 'qwen3_moe_FP8'],
  ['qwen3_moe/hub', 'fp8_pc_pt', 'qwen3_moe_FP8_DYNAMIC'],
  ['qwen3_moe/hub', 'fp8_pb_wo', 'qwen3_moe_FP8_BLOCK'],
  ['qwen3_moe/hub', 'nvfp4', 'qwen3_moe_NVFP4'],
  ['qwen3_moe/hub', 'w4a16_nvfp4', 'qwen3_moe_NVFP4A16'],
  ['dense/qwen3', 'fp8', 'dense_qwen3_FP8'],
  ['dense/qwen3', 'fp8_pb_wo', 'dense_qwen3_FP8_BLOCK'],
  ['dense/qwen3', 'nvfp4', 'dense_qwen3_NVFP4'],
  // With an FP8 KV cache (llm-compressor's kv_cache_scheme).
  ['qwen3_moe/hub', 'fp8', 'qwen3_moe_FP8_KV', { kvCache: 'fp8' }],
  ['qwen3_moe/hub', 'nvfp4', 'qwen3_moe_NVFP4_KV', { kvCache: 'fp8' }],
  ['dense/qwen3', 'fp8', 'dense_qwen3_FP8_KV', { kvCache: 'fp8' }],
]

const CALIBRATED = new Set(['fp8', 'nvfp4'])
const INPUT_SCALE = /\.(input_scale|input_global_scale)$/
const KV_SCALE = /\.(k_scale|v_scale)$/
const EXPERT_DOWN_INPUT = /\.experts\.\d+\.down_proj\.(input_scale|input_global_scale)$/

async function exportCompressed(fixture, format, options = {}) {
  const output = join(tempDir('moe-quant-ct-'), 'out')
  await quantizeModel({
    model: join(FIXTURES, fixture),
    output,
    format,
    exportFormat: 'compressed-tensors',
    coverageReport: false,
    ...(CALIBRATED.has(format) ? { calibration: { ids: CALIB_ROWS } } : {}),
    ...options,
  })
  return output
}

const bf16 = (x) => {
  const view = new DataView(new ArrayBuffer(4))
  view.setFloat32(0, x, true)
  const bits = view.getUint32(0, true)
  view.setUint32(0, ((bits + 0x7fff + ((bits >>> 16) & 1)) & 0xffff0000) >>> 0, true)
  return view.getFloat32(0, true)
}

/** A one-element F32 or BF16 tensor's value. */
function scalar({ dtype, values }) {
  if (dtype === 'F32') return values[0]
  const bytes = new Uint8Array(4)
  bytes.set(values.slice(0, 2), 2)
  return new DataView(bytes.buffer).getFloat32(0, true)
}

const sameBytes = (a, b) => a.length === b.length && a.every((byte, i) => byte === b[i])

for (const [fixture, format, golden, options] of CASES) {
  test(`${fixture} ${format}: llm-compressor's ${golden.replace(/^.*?_(?=[A-Z])/, '')} export`, async (t) => {
    const output = await exportCompressed(fixture, format, options)
    // Our KV scales: the largest |key| (|value|) of our forward over 448, in bf16.
    const kvAmax = options ? (await calibrateModel({ model: join(FIXTURES, fixture), calibration: { ids: CALIB_ROWS }, coverageReport: false })).kvAmax : {}
    const ours = readTensors(join(output, 'model.safetensors'))
    const theirs = readTensors(join(GOLDEN, golden, 'model.safetensors'))
    t.deepEqual(Object.keys(ours).sort(), Object.keys(theirs).sort())
    const downScales = new Map()
    for (const [name, want] of Object.entries(theirs)) {
      const got = ours[name]
      t.deepEqual([got.dtype, got.shape], [want.dtype, want.shape], name)
      if (KV_SCALE.test(name)) {
        const [attention, which] = [name.replace(/\.[kv]_scale$/, ''), name.endsWith('k_scale') ? 'key' : 'value']
        t.is(scalar(got), bf16(kvAmax[attention][which] / 448), name)
        // llm-compressor's running average of per-sample maxima stays below the maximum.
        t.true(scalar(want) <= scalar(got), `${name}: llm-compressor's ${scalar(want)} above our maximum's ${scalar(got)}`)
      } else if (!INPUT_SCALE.test(name)) {
        const [a, b] = [new Uint8Array(got.values.buffer ?? got.values), new Uint8Array(want.values.buffer ?? want.values)]
        t.true(sameBytes(a, b), `${name}: bytes differ from llm-compressor's`)
      } else if (EXPERT_DOWN_INPUT.test(name)) {
        const layer = name.replace(/\.experts\.\d+\..*$/, '')
        downScales.set(layer, [...(downScales.get(layer) ?? []), scalar(got)])
      } else {
        const [a, b] = [scalar(got), scalar(want)]
        t.true(Math.abs(a - b) <= 0.02 * b, `${name}: ${a} vs llm-compressor's ${b}`)
      }
    }
    for (const [layer, values] of downScales) t.is(new Set(values).size, 1, `${layer}: one down_proj input scale for the layer's experts`)
    const config = (dir) => JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'))
    t.deepEqual(config(output), config(join(GOLDEN, golden)))
  })
}

// --- the consumers -------------------------------------------------------------------------------------------------

const python = [process.env.MOE_QUANT_PYTHON, 'python3'].find(
  (p) => p && spawnSync(p, ['-c', 'import transformers, compressed_tensors, torch, safetensors'], { stdio: 'ignore' }).status === 0,
)
const MISSING = 'not run: no Python with transformers, compressed-tensors, torch and safetensors (set MOE_QUANT_PYTHON)'
const SCRIPT = join(ROOT, 'tools', 'ct_consumer_logits.py')

function consumer(...args) {
  const run = spawnSync(python, [SCRIPT, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 })
  if (run.status !== 0) throw new Error(`${SCRIPT} ${args[0]} failed (${run.status}):\n${run.stderr.slice(-2000)}`)
  return JSON.parse(run.stdout.trim().split('\n').pop())
}

const logitsOf = async (dir) => (await computeLogits(dir, CALIB_ROWS)).logits

for (const format of ['nvfp4', 'w4a16_nvfp4', 'fp8', 'fp8_pc_pt', 'fp8_pb_wo']) {
  test(`dense/qwen3 ${format}: transformers + compressed-tensors give our forward's logits`, async (t) => {
    if (!python) return t.pass(t.log(MISSING))
    const output = await exportCompressed('dense/qwen3', format)
    const ids = join(output, '..', 'ids.json')
    const logits = join(output, '..', 'logits.f32')
    writeFileSync(ids, JSON.stringify(CALIB_ROWS))
    const versions = consumer('logits', output, ids, logits)
    t.log(versions)
    const bytes = readFileSync(logits)
    const theirs = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4)
    const ours = await logitsOf(output)
    t.is(ours.length, theirs.length)
    const error = relativeL2(ours, theirs)
    t.true(error < (format.includes('nvfp4') ? 5e-3 : 1e-5), `relative L2 ${error}`)
  })

  test(`qwen3_moe/hub ${format}: compressed-tensors decodes every weight as we read it`, async (t) => {
    if (!python) return t.pass(t.log(MISSING))
    const output = await exportCompressed('qwen3_moe/hub', format)
    const decoded = join(output, '..', 'decoded')
    const { decoded: count } = consumer('decompress', output, decoded)
    t.is(count, 56, 'quantized weights decoded')
    const error = relativeL2(await logitsOf(output), await logitsOf(decoded))
    t.true(error < 1e-7, `relative L2 ${error}`)
  })
}

// --- what vLLM's compressed-tensors loader reads --------------------------------------------------------------------
// From vLLM's compressed_tensors.py and its W4A4 NVFP4 / W4A16 NVFP4 / W8A8 FP8 linear and MoE schemes: the config's
// scheme must be one of those (NVFP4: 4-bit float tensor_group weights in groups of 16, symmetric, inputs the same or
// none; FP8: 8-bit float symmetric static weights per tensor, channel or block, inputs dynamic or static per tensor;
// MoE FP8: tensor weights with static tensor inputs, channel with token inputs, or blocks); each quantized module has
// the tensors of its scheme in their dtypes and shapes (NVFP4 weight_packed U8 [N, K/2], weight_scale F8_E4M3
// [N, K/16], weight_global_scale F32 [1] and, for static inputs, input_global_scale F32 [1]; FP8 weight F8_E4M3 [N, K],
// weight_scale [1], [N, 1] or [⌈N/128⌉, ⌈K/128⌉], and input_scale [1] for static inputs), scales finite and positive;
// the shards vLLM fuses (q/k/v, gate/up, w1/w3) share their NVFP4 weight_global_scale; every `ignore` entry names a
// module of the checkpoint that is not quantized; a kv_cache_scheme is FP8 per tensor and static, and then every
// attention (the parent of a k_proj) has a k_scale and a v_scale of one finite positive value (none without it).

/** Every failure of the compressed-tensors checkpoint in `dir` against vLLM's loader (empty when it meets them). */
function compressedTensorsProblems(dir) {
  const problems = []
  const qc = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).quantization_config ?? {}
  if (qc.quant_method !== 'compressed-tensors') problems.push(`quant_method ${qc.quant_method}`)
  const groups = Object.values(qc.config_groups ?? {})
  if (groups.length !== 1) return [...problems, `${groups.length} config groups`]
  const { weights: w, input_activations: i, format } = groups[0]
  const nvfp4Args = (a) => a && a.num_bits === 4 && a.type === 'float' && a.strategy === 'tensor_group' && a.group_size === 16 && a.symmetric
  const fp8Weights = w.num_bits === 8 && w.type === 'float' && w.symmetric && !w.dynamic && ['tensor', 'channel', 'block'].includes(w.strategy)
  const fp8Inputs = i && i.num_bits === 8 && i.type === 'float' && (i.dynamic === true || (i.symmetric && i.strategy === 'tensor'))
  const nvfp4 = format === 'nvfp4-pack-quantized' && nvfp4Args(w) && (i === null || nvfp4Args(i))
  const fp8 = format === 'float-quantized' && fp8Weights && fp8Inputs
  if (!nvfp4 && !fp8) problems.push(`a scheme vLLM does not load: ${JSON.stringify(groups[0])}`)
  const moeFp8 = (w.strategy === 'tensor' && i?.strategy === 'tensor' && !i.dynamic) || (w.strategy === 'channel' && i?.strategy === 'token') || w.strategy === 'block'
  const staticInputs = i !== null && i.dynamic !== true
  const tensors = {}
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.safetensors'))) Object.assign(tensors, readTensors(join(dir, file)))
  const quantized = new Set(Object.keys(tensors).filter((n) => n.endsWith('.weight_scale')).map((n) => n.slice(0, -'.weight_scale'.length)))
  const positive = (name) => {
    const t = tensors[name]
    const ok = t && t.shape.length === 1 && t.shape[0] === 1 && ['F32', 'BF16'].includes(t.dtype) && scalar(t) > 0 && Number.isFinite(scalar(t))
    if (!ok) problems.push(`${name}: ${t ? `${t.dtype} [${t.shape}]` : 'missing'}, not one finite positive scale`)
  }
  const shape = (name, dtype, dims) => {
    const t = tensors[name]
    if (!t || t.dtype !== dtype || JSON.stringify(t.shape) !== JSON.stringify(dims)) problems.push(`${name}: ${t ? `${t.dtype} [${t.shape}]` : 'missing'}, not ${dtype} [${dims}]`)
  }
  const globals = new Map()
  for (const module of quantized) {
    if (fp8 && module.includes('.experts.') && !moeFp8) problems.push(`${module}: vLLM's FP8 MoE takes no ${w.strategy} weights with ${i?.strategy} inputs`)
    if (nvfp4) {
      const [n, half] = tensors[`${module}.weight_packed`]?.shape ?? [0, 0]
      shape(`${module}.weight_packed`, 'U8', [n, half])
      shape(`${module}.weight_scale`, 'F8_E4M3', [n, (half * 2) / 16])
      positive(`${module}.weight_global_scale`)
      if (staticInputs) positive(`${module}.input_global_scale`)
      globals.set(module, scalar(tensors[`${module}.weight_global_scale`] ?? { dtype: 'F32', values: [NaN] }))
    } else {
      const [n, k] = tensors[`${module}.weight`]?.shape ?? [0, 0]
      shape(`${module}.weight`, 'F8_E4M3', [n, k])
      const dims = { tensor: [1], channel: [n, 1], block: [Math.ceil(n / 128), Math.ceil(k / 128)] }[w.strategy]
      shape(`${module}.weight_scale`, tensors[`${module}.weight_scale`]?.dtype === 'F32' ? 'F32' : 'BF16', dims)
      if (staticInputs) positive(`${module}.input_scale`)
    }
  }
  const fused = [['q_proj', 'k_proj', 'v_proj'], ['gate_proj', 'up_proj'], ['w1', 'w3']]
  for (const [module, value] of globals) {
    for (const [first, ...rest] of fused) {
      if (!module.endsWith(`.${first}`)) continue
      const parent = module.slice(0, -first.length)
      for (const other of rest) {
        const v = globals.get(`${parent}${other}`)
        if (v !== undefined && v !== value) problems.push(`${parent}${other}: weight_global_scale ${v}, ${module}'s ${value} (vLLM fuses them)`)
      }
    }
  }
  const kv = qc.kv_cache_scheme
  if (kv && !(kv.num_bits === 8 && kv.type === 'float' && kv.strategy === 'tensor' && kv.dynamic === false)) problems.push(`kv_cache_scheme ${JSON.stringify(kv)}`)
  const attentions = new Set(Object.keys(tensors).filter((n) => /\.k_proj\.(weight|weight_packed)$/.test(n)).map((n) => n.replace(/\.k_proj\..*$/, '')))
  for (const attention of attentions) {
    for (const which of ['k_scale', 'v_scale']) {
      if (kv) positive(`${attention}.${which}`)
      else if (tensors[`${attention}.${which}`]) problems.push(`${attention}.${which} without a kv_cache_scheme`)
    }
  }
  const modules = Object.keys(tensors).map((n) => n.slice(0, n.lastIndexOf('.')))
  for (const name of qc.ignore ?? []) {
    if (quantized.has(name) || !modules.includes(name)) problems.push(`ignore: ${name} is ${quantized.has(name) ? 'quantized' : 'not a module of the checkpoint'}`)
  }
  return problems
}

test("llm-compressor's exports and ours meet vLLM's compressed-tensors loader rules", async (t) => {
  for (const [fixture, format, golden, options] of CASES) {
    t.deepEqual(compressedTensorsProblems(join(GOLDEN, golden)), [], golden)
    t.deepEqual(compressedTensorsProblems(await exportCompressed(fixture, format, options)), [], `${fixture} ${format}`)
  }
  t.deepEqual(compressedTensorsProblems(await exportCompressed('qwen3_moe/hub', 'fp8_pc_pt')), [])
})

test('the compressed-tensors rules catch what the loader rejects', async (t) => {
  const output = await exportCompressed('qwen3_moe/hub', 'w4a16_nvfp4')
  const configPath = join(output, 'config.json')
  const config = JSON.parse(readFileSync(configPath, 'utf8'))
  config.quantization_config.ignore.push('model.layers.0.self_attn.q_proj')
  config.quantization_config.config_groups.group_0.weights.group_size = 32
  writeFileSync(configPath, JSON.stringify(config))
  const problems = compressedTensorsProblems(output)
  t.true(problems.some((p) => p.startsWith('a scheme vLLM does not load')), problems.join('\n'))
  t.true(problems.some((p) => p.includes('model.layers.0.self_attn.q_proj is quantized')), problems.join('\n'))
})

test('what has no compressed-tensors form is refused before any work, naming the way out', async (t) => {
  const output = join(tempDir('moe-quant-ct-'), 'out')
  const refused = async (options, message) => {
    await t.throwsAsync(quantizeModel({ output, exportFormat: 'compressed-tensors', coverageReport: false, ...options }), { code: 'E_OPTION_INVALID', message })
  }
  const qwen = join(FIXTURES, 'qwen3_moe/hub')
  await refused({ model: qwen, format: 'mxfp8' }, /format 'mxfp8' has no compressed-tensors scheme.*exportFormat 'modelopt'/)
  await refused({ model: qwen, format: 'fp8', kvCache: 'fp8_cast', calibration: { ids: CALIB_ROWS } }, /kvCache 'fp8_cast'.*'fp8'.*'none'/)
  await refused({ model: qwen, format: 'w4a16_nvfp4', kvCache: 'fp8' }, /kvCache: 'fp8' calibrates/)
  await refused({ model: qwen, format: 'nvfp4', recipe: { rules: [{ modules: '*.self_attn.*', format: 'fp8' }] }, calibration: { ids: CALIB_ROWS } }, /a recipe/)
  // GPT-OSS keeps its experts stacked, the form ModelOpt exports them in.
  await refused({ model: join(FIXTURES, 'gpt_oss/hub'), format: 'w4a16_nvfp4' }, /written stacked .*experts\.gate_up_proj/)
  await refused({ model: qwen, format: 'fp8', exportFormat: 'safetensors' }, /exportFormat/)
})

test('exclusions and scope reach ignore; the CLI takes --export-format', async (t) => {
  const output = join(tempDir('moe-quant-ct-'), 'out')
  const result = await quantizeModel({
    model: join(FIXTURES, 'qwen2_moe/hub'), output, format: 'w4a16_nvfp4', exportFormat: 'compressed-tensors', scope: 'experts', exclude: ['model.layers.1.*'], coverageReport: false,
  })
  t.is(result.exportFormat, 'compressed-tensors')
  const { ignore } = JSON.parse(readFileSync(join(output, 'config.json'), 'utf8')).quantization_config
  for (const name of ['model.layers.0.self_attn.q_proj', 'model.layers.0.mlp.shared_expert.down_proj', 'model.layers.0.mlp.gate', 'model.layers.1.mlp.experts.3.up_proj', 'lm_head']) {
    t.true(ignore.includes(name), name)
  }
  t.false(ignore.some((name) => name.startsWith('model.layers.0.mlp.experts.')))
  t.deepEqual(compressedTensorsProblems(output), [])
  const { parseQuantizeArgs } = await import('../dist/cli/quantize.js')
  t.is(parseQuantizeArgs(['m', '--format', 'fp8_pb_wo', '--out', 'o', '--export-format', 'compressed-tensors']).options.exportFormat, 'compressed-tensors')
  t.throws(() => parseQuantizeArgs(['m', '--format', 'fp8', '--out', 'o', '--export-format', 'ct']), { code: 'E_OPTION_INVALID', message: /--export-format/ })
})
