// What the ModelOpt loaders of vLLM (0.34, model_executor/layers/quantization/modelopt.py) and SGLang (0.5.23,
// srt/layers/quantization/modelopt_quant.py) read from a checkpoint, checked on every ModelOpt export under
// fixtures/golden (our exports equal them byte for byte, golden.spec.mjs) and on fresh exports of ours in each
// format. The rules, from those sources:
//
// - config.json's quantization_config wins over hf_quant_config.json: quant_method "modelopt", the same quant_algo,
//   `ignore` the list hf_quant_config calls exclude_modules, and an FP8 KV cache as kv_cache_scheme {dynamic: false,
//   num_bits: 8, type: "float"} (vLLM falls back to an unquantized KV cache without `dynamic: false`);
// - hf_quant_config.json: producer "modelopt"; quant_algo one vLLM accepts (compared upper-cased);
//   kv_cache_quant_algo and exclude_modules present (vLLM requires them for NVFP4 and MXFP8), a group_size integer
//   for the block formats (NVFP4 16, MXFP8 32);
// - per quantized weight: FP8 E4M3 `weight` with an F32 `weight_scale` of one value (FP8), one per row
//   (per-channel), one per 128×128 tile (block) or a U8 one per 32 inputs (MXFP8); NVFP4 U8 codes [N, K/2], E4M3
//   block scales [N, K/16], a scalar F32 weight_scale_2; every input_scale, k_scale and v_scale a finite F32 scalar
//   (vLLM reshapes them to 0-d); a routed expert's gate (w1) and up (w3) the same NVFP4 weight_scale_2 (vLLM keeps
//   w1's and warns when they differ).
// - MIXED_PRECISION (vLLM's and SGLang's ModelOptMixedPrecisionConfig): a non-empty quantized_layers in both files, no
//   exclude_modules needed (`ignore` empty), each entry a quant_algo their linear and MoE methods take (anything else
//   loads silently unquantized) with its group_size; each weight checked against its module's entry (exact name,
//   else the entry whose name it starts with: a layer's experts module).
import test from 'ava'
import { cpSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { quantizeModel } from '../dist/index.js'
import { FIXTURES, readRaw, readTensors, tempDir, writeRaw } from './helpers/checkpoint.mjs'

const GOLDEN = join(FIXTURES, 'golden')
/** quant_algo values vLLM 0.34 accepts (upper-cased before comparing). */
const VLLM_ALGOS = ['FP8', 'FP8_PER_CHANNEL_PER_TOKEN', 'FP8_PB_WO', 'NVFP4', 'W4A16_NVFP4', 'MXFP8', 'MIXED_PRECISION']
const GROUP_SIZE = { NVFP4: 16, W4A16_NVFP4: 16, MXFP8: 32, W4A16_AWQ: 128, W4A8_AWQ: 128, NVFP4_AWQ: 16 }
/** ModelOpt's mxfp4 is not among them, nor its AWQ formats (TensorRT-LLM's): everything else about them is checked. */
const NOT_SERVED = ['MXFP4', 'W4A16_AWQ', 'W4A8_AWQ', 'NVFP4_AWQ']
/** The per-module quant_algo values the mixed-precision loaders take for linears and for MoE experts. */
const MIXED_LINEAR_ALGOS = ['FP8', 'FP8_PER_CHANNEL_PER_TOKEN', 'FP8_PB_WO', 'NVFP4', 'W4A16_NVFP4', 'MXFP8']
const MIXED_MOE_ALGOS = ['FP8', 'FP8_PB_WO', 'NVFP4', 'W4A16_NVFP4', 'MXFP8']
const SCALAR = (info) => info.dtype === 'F32' && info.shape.reduce((a, b) => a * b, 1) === 1

/** Every failure of `dir`'s export against the loaders' rules (empty when it meets them). */
function loaderProblems(dir) {
  const problems = []
  const fail = (message) => problems.push(message)
  const hf = JSON.parse(readFileSync(join(dir, 'hf_quant_config.json'), 'utf8'))
  const quantization = hf.quantization ?? {}
  const algo = String(quantization.quant_algo).toUpperCase()
  if (hf.producer?.name !== 'modelopt') fail(`producer ${JSON.stringify(hf.producer)}`)
  if (!VLLM_ALGOS.includes(algo) && !NOT_SERVED.includes(algo)) fail(`quant_algo ${quantization.quant_algo}`)
  if (!Object.hasOwn(quantization, 'kv_cache_quant_algo')) fail('no kv_cache_quant_algo')
  const mixed = algo === 'MIXED_PRECISION'
  if (!mixed && !Array.isArray(quantization.exclude_modules)) fail('exclude_modules is not a list')
  if (GROUP_SIZE[algo] !== undefined && quantization.group_size !== GROUP_SIZE[algo]) fail(`group_size ${quantization.group_size}`)
  if (/_AWQ$/.test(algo) && !(quantization.has_zero_point === false && quantization.pre_quant_scale === true)) fail('AWQ without has_zero_point false and pre_quant_scale true')
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).quantization_config ?? {}
  if (config.quant_method !== 'modelopt' || config.quant_algo !== quantization.quant_algo) fail(`quantization_config ${config.quant_method} ${config.quant_algo}`)
  if (JSON.stringify(config.ignore) !== JSON.stringify(quantization.exclude_modules ?? [])) fail('ignore differs from exclude_modules')
  const layers = quantization.quantized_layers ?? {}
  if (mixed) {
    if (Object.keys(layers).length === 0) fail('MIXED_PRECISION without quantized_layers')
    if (JSON.stringify(config.quantized_layers) !== JSON.stringify(layers)) fail('config.json quantized_layers differ')
    for (const [module, entry] of Object.entries(layers)) {
      const layerAlgo = String(entry.quant_algo).toUpperCase()
      const served = /experts$/.test(module) ? MIXED_MOE_ALGOS : MIXED_LINEAR_ALGOS
      if (!served.includes(layerAlgo)) fail(`${module}: ${entry.quant_algo} loads unquantized`)
      if (GROUP_SIZE[layerAlgo] !== undefined && entry.group_size !== GROUP_SIZE[layerAlgo]) fail(`${module}: group_size ${entry.group_size}`)
    }
  }
  // A weight's format: the checkpoint's, or in a mixed one its module's entry (a layer's experts by their module).
  const algoOf = (module) => {
    if (!mixed) return algo
    const key = layers[module] ? module : Object.keys(layers).find((k) => module.startsWith(`${k}.`))
    return key === undefined ? undefined : String(layers[key].quant_algo).toUpperCase()
  }
  if ((quantization.kv_cache_quant_algo === 'FP8') !== (config.kv_cache_scheme !== undefined)) fail('kv_cache_scheme and kv_cache_quant_algo disagree')
  if (config.kv_cache_scheme && !(config.kv_cache_scheme.dynamic === false && config.kv_cache_scheme.num_bits === 8 && config.kv_cache_scheme.type === 'float')) {
    fail(`kv_cache_scheme ${JSON.stringify(config.kv_cache_scheme)}`)
  }
  const header = {}
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.safetensors'))) Object.assign(header, readRaw(join(dir, file)).header)
  delete header.__metadata__
  for (const [name, info] of Object.entries(header)) {
    if (/\.(input_scale|k_scale|v_scale|weight_scale_2)$/.test(name) && !SCALAR(info)) fail(`${name} ${info.dtype} ${JSON.stringify(info.shape)}`)
    if (name.endsWith('.pre_quant_scale')) {
      // AWQ's smoothing of the input, one 16-bit value per input channel of the linear's weight (NVFP4 packs two
      // inputs a byte, INT4 two output rows).
      const codes = header[name.replace(/pre_quant_scale$/, 'weight')]
      const scale = header[name.replace(/pre_quant_scale$/, 'weight_scale')]
      const inputs = codes && (scale?.dtype === 'F8_E4M3' ? 2 * codes.shape[1] : codes.shape[1])
      if (!codes || !['BF16', 'F16'].includes(info.dtype) || info.shape.join() !== String(inputs)) fail(`${name} ${info.dtype} ${JSON.stringify(info.shape)}`)
    }
    if (!name.endsWith('.weight_scale')) continue
    const weight = header[name.replace(/_scale$/, '')]
    if (!weight) continue // a stacked parameter's scale (`<param>_weight_scale`) is named otherwise
    const [n, k] = weight.shape
    const weightAlgo = algoOf(name.replace(/\.weight_scale$/, ''))
    if (weightAlgo === undefined) fail(`${name}: quantized but in no quantized_layers entry`)
    const rule = {
      FP8: () => weight.dtype === 'F8_E4M3' && SCALAR(info),
      FP8_PER_CHANNEL_PER_TOKEN: () => weight.dtype === 'F8_E4M3' && info.dtype === 'F32' && info.shape.join() === String(n),
      FP8_PB_WO: () => weight.dtype === 'F8_E4M3' && info.dtype === 'F32' && (SCALAR(info) || info.shape.join() === [Math.ceil(n / 128), 1, Math.ceil(k / 128), 1].join()),
      MXFP8: () => weight.dtype === 'F8_E4M3' && info.dtype === 'U8' && info.shape.join() === [n, k / 32].join(),
      MXFP4: () => weight.dtype === 'U8' && info.dtype === 'U8' && info.shape.join() === [n, (2 * k) / 32].join(),
      NVFP4: () => weight.dtype === 'U8' && info.dtype === 'F8_E4M3' && info.shape.join() === [n, (2 * k) / 16].join() && header[`${name}_2`] !== undefined,
      // INT4 codes packed two output rows a byte [N/2, K], an F32 scale per 128 inputs of each row; W4A8 adds an FP8 weight scale.
      W4A16_AWQ: () => weight.dtype === 'U8' && info.dtype === 'F32' && info.shape.join() === [2 * n, k / 128].join(),
      W4A8_AWQ: () => weight.dtype === 'U8' && info.dtype === 'F32' && info.shape.join() === [2 * n, k / 128].join() && header[`${name}_2`] !== undefined,
    }[weightAlgo === 'W4A16_NVFP4' || weightAlgo === 'NVFP4_AWQ' ? 'NVFP4' : weightAlgo]
    if (rule && !rule()) fail(`${name}: ${weight.dtype} ${JSON.stringify(weight.shape)} with ${info.dtype} ${JSON.stringify(info.shape)}`)
  }
  if (algo === 'NVFP4' || algo === 'W4A16_NVFP4' || mixed) {
    const tensors = Object.assign({}, ...readdirSync(dir).filter((f) => f.endsWith('.safetensors')).map((f) => readTensors(join(dir, f))))
    for (const name of Object.keys(tensors).filter((n) => /\.(gate_proj|w1)\.weight_scale_2$/.test(n))) {
      const up = name.replace(/gate_proj(?=\.weight_scale_2$)/, 'up_proj').replace(/\.w1\.weight_scale_2$/, '.w3.weight_scale_2')
      if (tensors[up] && tensors[up].values[0] !== tensors[name].values[0]) fail(`${name} ≠ ${up}`)
    }
  }
  return problems
}

const exports = readdirSync(GOLDEN, { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .flatMap((d) => readdirSync(join(GOLDEN, d.name), { withFileTypes: true }).filter((f) => f.isDirectory()).map((f) => join(d.name, f.name)))
  .filter((dir) => existsSync(join(GOLDEN, dir, 'hf_quant_config.json')))

const mixedExports = readdirSync(GOLDEN).filter((d) => d.startsWith('mixed_'))

test('every ModelOpt golden export meets the loaders\' rules', (t) => {
  t.is(exports.length, 154, 'every golden export (calibrated, weight-only, scope, KV cache, MXFP8, MXFP4, fp8_pb_wo, AWQ)')
  t.is(mixedExports.length, 2, 'and the MIXED_PRECISION ones')
  exports.push(...mixedExports)
  const failing = exports.map((dir) => [dir, loaderProblems(join(GOLDEN, dir))]).filter(([, problems]) => problems.length > 0)
  t.deepEqual(failing, [])
})

test('our exports in every format meet the loaders\' rules, with each KV cache form', async (t) => {
  const cases = [
    ['qwen3_moe/hub', 'fp8', { calibration: { ids: [[1, 2, 3, 4, 5, 6, 7, 8]] }, kvCache: 'fp8' }],
    ['mixtral/hub', 'nvfp4', { calibration: { ids: [[1, 2, 3, 4, 5, 6, 7, 8]] }, kvCache: 'fp8_cast' }],
    ['qwen2_moe/fused', 'w4a16_nvfp4', { kvCache: 'fp8_cast' }],
    ['deepseek_v3/hub', 'fp8_pc_pt', { kvCache: 'none' }],
    ['glm4_moe/hub', 'fp8_pb_wo', { kvCache: 'none' }],
    ['golden/mx_qwen2_moe_fused/source', 'mxfp8', { kvCache: 'fp8_cast' }],
    ['golden/mx_mixtral_hub/source', 'mxfp4', { kvCache: 'none' }],
    ['golden/awq_qwen3/source', 'w4a8_awq', { calibration: { ids: [[1, 2, 3, 4, 5, 6, 7, 8]] }, kvCache: 'fp8' }],
    ['golden/awq_qwen3_moe/source', 'int4_awq', { calibration: { ids: [[1, 2, 3, 4, 5, 6, 7, 8]] }, kvCache: 'none' }],
    ['golden/awq_qwen3_mha/source', 'nvfp4_awq', { calibration: { ids: [[1, 2, 3, 4, 5, 6, 7, 8]] }, kvCache: 'fp8' }],
    // Mixed: NVFP4 experts, FP8 attention, the shared expert weight-only NVFP4.
    ['qwen2_moe/fused', 'nvfp4', {
      calibration: { ids: [[1, 2, 3, 4, 5, 6, 7, 8]] },
      kvCache: 'fp8',
      recipe: { rules: [{ modules: '*.self_attn.*', format: 'fp8' }, { modules: '*.shared_expert.*', format: 'w4a16_nvfp4' }] },
    }],
  ]
  for (const [fixture, format, options] of cases) {
    const output = join(tempDir(), 'out')
    await quantizeModel({ model: join(FIXTURES, fixture), output, format, ...options })
    t.deepEqual(loaderProblems(output), [], `${fixture} → ${format}`)
  }
})

test('the rules catch what the loaders reject', (t) => {
  const dir = join(GOLDEN, 'qwen3_moe_hub_f32', 'nvfp4')
  t.deepEqual(loaderProblems(dir), [])
  // No group_size (vLLM: "NVFP4 quantization requires the following fields …").
  const noGroup = join(tempDir(), 'no-group')
  cpSync(dir, noGroup, { recursive: true })
  const hf = JSON.parse(readFileSync(join(noGroup, 'hf_quant_config.json'), 'utf8'))
  delete hf.quantization.group_size
  writeFileSync(join(noGroup, 'hf_quant_config.json'), JSON.stringify(hf))
  t.deepEqual(loaderProblems(noGroup), ['group_size undefined'])
  // An expert whose up weight_scale_2 differs from its gate's (vLLM keeps the gate's: wrong up outputs).
  const unequal = join(tempDir(), 'unequal')
  cpSync(dir, unequal, { recursive: true })
  const { header, data } = readRaw(join(unequal, 'model.safetensors'))
  const name = 'model.layers.0.mlp.experts.1.up_proj.weight_scale_2'
  const [start] = header[name].data_offsets
  data.writeFloatLE(data.readFloatLE(start) * 2, start)
  writeRaw(join(unequal, 'model.safetensors'), header, data)
  t.deepEqual(loaderProblems(unequal), [`model.layers.0.mlp.experts.1.gate_proj.weight_scale_2 ≠ ${name}`])
})
