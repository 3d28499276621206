// quantizeModel() against ModelOpt 0.47's own exports of the same fixtures with the same calibration ids
// (fixtures/golden, made by tools/make_golden.py): same tensor names, dtypes and shapes; same metadata;
// input scales within 1e-5 and weight scales within 1e-6 relative; quantized weight bytes identical for at
// least 99.9% of bytes (the count of differing bytes is logged). The goldens below were made with ModelOpt's format
// configs alone, which quantize no KV cache (hf_ptq's `--kv_cache_qformat none`), so they are compared with
// `kvCache: 'none'`; the KV cache's own goldens come last.
import test from 'ava'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

import { quantizeModel } from '../dist/index.js'
import { FIXTURES, readTensors, rows, tempDir } from './helpers/checkpoint.mjs'
import { materializeZoo, removeZooCheckpoint } from './helpers/zoo.mjs'

const GOLDEN = join(FIXTURES, 'golden')
const calibIds = readTensors(join(GOLDEN, 'calib_ids.safetensors')).input_ids
// The calibration ids ModelOpt's goldens were made with, as rows.
const CALIB_ROWS = rows(calibIds.values, calibIds.shape[1])
// Routers that transformers 5.25 loads in F32 (`_keep_in_fp32_modules_strict`) and ModelOpt exports so; we keep them
// as stored, and compare them in F32.
const ROUTER_F32 = [/mlp\.gate\.weight$/, 'F32']
const CASES = [
  ['qwen3_moe/hub_f32', 'qwen3_moe_hub_f32', CALIB_ROWS],
  ['qwen3_moe/fused', 'qwen3_moe_fused', CALIB_ROWS],
  ['mixtral/hub', 'mixtral_hub', CALIB_ROWS],
  ['glm4_moe/hub', 'glm4_moe_hub', CALIB_ROWS],
  // MLA: the query and key/value down-projections read one input and share their scales.
  ['deepseek_v3/hub', 'deepseek_v3_hub', CALIB_ROWS],
  // Two calibration tokens: most experts see none and are scaled from their own weights.
  ['qwen3_moe/hub_f32', 'qwen3_moe_hub_f32_fewtokens', [[229, 27]]],
  // Experts stacked on the hub and exported stacked, one input scale per stack. GPT-OSS: attention sinks,
  // sliding-window layers, clamped experts with biases; Llama4: chunked attention, layers without rope, the
  // router's weight applied to the expert input.
  ['gpt_oss/hub', 'gpt_oss_hub', CALIB_ROWS],
  ['llama4_text/hub', 'llama4_text_hub', CALIB_ROWS],
  // Qwen2-MoE (sigmoid-gated shared expert, q/k/v biases), OLMoE (q/k norms over the whole projection), Granite-MoE
  // (multipliers, experts fused on the hub as input_linear / output_linear).
  ['qwen2_moe/hub', 'qwen2_moe_hub', CALIB_ROWS],
  ['olmoe/hub', 'olmoe_hub', CALIB_ROWS],
  ['granitemoe/hub', 'granitemoe_hub', CALIB_ROWS],
  // fixtures/families/ (transformers 5.25): Qwen3-VL-MoE's text stack (vision-language wrapper, experts stored
  // [E, H, 2I]), GLM-4.5V's (wrapper, partial rope), dots.llm1 (a sliding-window layer, grouped sigmoid router),
  // MiniMax-M2 (q/k norms over the whole projection, partial rope, correction bias on the block).
  // transformers 5.25 loads the routers of GLM-4.5V, dots.llm1, DeepSeek-V2, ERNIE and Hunyuan in F32 and
  // MiniMax-M2's F32 correction bias in the model's bf16, and ModelOpt exports them so; we keep them as stored.
  ['families/qwen3_vl_moe/hub_transposed', 'families_qwen3_vl_moe_hub_transposed', CALIB_ROWS],
  ['families/glm4v_moe/hub', 'families_glm4v_moe_hub', CALIB_ROWS, ROUTER_F32],
  ['families/dots1/hub', 'families_dots1_hub', CALIB_ROWS, ROUTER_F32],
  ['families/minimax_m2/hub', 'families_minimax_m2_hub', CALIB_ROWS, [/e_score_correction_bias$/, 'BF16']],
  // DeepSeek-V2 (MLA, group-limited softmax router with routed scaling), ERNIE 4.5 (softmax router choosing with a
  // correction bias, MoE from moe_layer_start_index, tied embeddings).
  ['families/deepseek_v2/hub', 'families_deepseek_v2_hub', CALIB_ROWS, ROUTER_F32],
  ['families/ernie4_5_moe/hub', 'families_ernie4_5_moe_hub', CALIB_ROWS, ROUTER_F32],
  // Hunyuan (q/k norms after the rope, NTK-alpha rope, shared MLP), FlexOlmo (post-norm layers), Granite-MoE-Shared
  // (shared MLP with a fused input_linear), PhiMoE (LayerNorms, SparseMixer router, LongRoPE, sliding window).
  ['families/hunyuan_v1_moe/hub', 'families_hunyuan_v1_moe_hub', CALIB_ROWS, [/mlp\.gate\.wg\.weight$/, 'F32']],
  ['families/flex_olmo/hub', 'families_flex_olmo_hub', CALIB_ROWS],
  ['families/granitemoeshared/hub', 'families_granitemoeshared_hub', CALIB_ROWS],
  ['families/phimoe/hub', 'families_phimoe_hub', CALIB_ROWS],
  // Dense Llama (biases, llama3 rope), Qwen3 (q/k norms) and Mistral (sliding window): every linear but lm_head.
  ['dense/llama', 'dense_llama', CALIB_ROWS],
  ['dense/qwen3', 'dense_qwen3', CALIB_ROWS],
  ['dense/mistral', 'dense_mistral', CALIB_ROWS],
  // Qwen3-Next and Qwen3.5-MoE: Gated DeltaNet layers (in_proj_qkvz / in_proj_qkv + in_proj_z quantized, the b/a
  // projections and conv1d kept), a gated attention layer, sigmoid-gated shared experts.
  ['families/qwen3_next/hub', 'families_qwen3_next_hub', CALIB_ROWS],
  ['families/qwen3_5_moe_text/hub', 'families_qwen3_5_moe_text_hub', CALIB_ROWS],
  // Hybrid Mamba-2 families: Granite-4.0-H (Mamba-2 and rope-less attention layers, a fused shared input_linear,
  // Granite's multipliers) and Nemotron-H (one mixer per layer, ungated relu² experts and shared expert, the hub's
  // backbone. names, its router loaded in F32).
  ['families/granitemoehybrid/hub', 'families_granitemoehybrid_hub', CALIB_ROWS],
  ['families/nemotron_h/hub', 'families_nemotron_h_hub', CALIB_ROWS, [/mixer\.gate\.weight$/, 'F32']],
  // DeepSeek sparse attention: DeepSeek-V3.2 and GLM-5 (a layer reusing another's keys). ModelOpt's default configs
  // quantize the indexers' wq_b, wk and weights_proj like the other linears; transformers loads the routers in F32.
  ['families/deepseek_v32/hub', 'families_deepseek_v32_hub', CALIB_ROWS, ROUTER_F32],
  ['families/glm_moe_dsa/hub', 'families_glm_moe_dsa_hub', CALIB_ROWS, ROUTER_F32],
  // Jamba: Mamba layers (in_proj, x_proj, out_proj quantized with input scales; dt_proj, whose weight transformers
  // multiplies directly so that no input of it is ever seen, quantized without one; conv1d kept), attention without
  // rope, MoE on one layer. FP8 only: ModelOpt cannot export the fixture's NVFP4 (dt_proj [128, 4], see below).
  ['families/jamba/hub', 'families_jamba_hub', CALIB_ROWS, undefined, ['fp8']],
  // LFM2-MoE: short-convolution layers (in_proj, out_proj quantized, with biases; conv kept and not listed),
  // attention with q/k norms and out_proj, a sigmoid router with its F32 expert_bias, tied embeddings. Experts 4
  // and 5 of layer 1 see no calibration token, in ModelOpt's run too (its amax.json counts 0 for them).
  ['families/lfm2_moe/hub', 'families_lfm2_moe_hub', CALIB_ROWS, undefined, undefined, [{ layer: 1, experts: [4, 5] }]],

  // Sarvam-MLA (DeepSeek-V3's modules under its own config: MLA without q LoRA, yarn) and Solar Open (GLM4-MoE's
  // router and shared experts on every layer, Llama attention with q/k/v biases); transformers loads their routers
  // in F32.
  ['families/sarvam_mla/hub', 'families_sarvam_mla_hub', CALIB_ROWS, ROUTER_F32],
  ['families/solar_open/hub', 'families_solar_open_hub', CALIB_ROWS, ROUTER_F32],
  // GLM-4.7-Flash (MLA with q LoRA, GLM4-MoE's router, a dense layer between MoE layers from mlp_layer_types).
  ['families/glm4_moe_lite/hub', 'families_glm4_moe_lite_hub', CALIB_ROWS, ROUTER_F32],
  // HY-V3 (sigmoid router with the correction bias on the block, router_scaling_factor, shared_mlp, dense first layer); transformers loads its router in F32.
  ['families/hy_v3/hub', 'families_hy_v3_hub', CALIB_ROWS, [/mlp\.router\.gate\.weight$/, 'F32']],
  // EXAONE-MoE (DeepSeek-V3's router with the correction bias on the block on the hub, MoE from mlp_layer_types,
  // sliding layers from sliding_window_pattern, the full layer without rope); transformers loads its router in F32.
  ['families/exaone_moe/hub', 'families_exaone_moe_hub', CALIB_ROWS, ROUTER_F32],
  // Flint (sigmoid router without bias, ungated shared expert, attention sinks stored as softmax_offset on the hub,
  // rope on the sliding layers only); transformers loads its router and its sinks in F32.
  ['families/flint/hub', 'families_flint_hub', CALIB_ROWS, [/(mlp\.gate\.weight|self_attn\.softmax_offset)$/, 'F32']],
  // Granite-MoE-SWA (experts stacked on the hub, sinks as a sigmoid scale of the output, sliding layers, a layer
  // without rope from layer_rope_theta, Granite multipliers, shared MLP).
  ['families/granitemoe_swa/hub', 'families_granitemoe_swa_hub', CALIB_ROWS],
  // Param2-MoE (tied embeddings) and Sarvam-MoE: GLM4-MoE's modules, in their transformers 5 layouts; transformers
  // loads their routers in F32.
  ['families/param2moe/fused', 'families_param2moe_fused', CALIB_ROWS, ROUTER_F32],
  ['families/sarvam_moe/fused', 'families_sarvam_moe_fused', CALIB_ROWS, ROUTER_F32],
  // Their hub layouts (Bailing names, q, k and v fused in query_key_value): ModelOpt exports them as it exports the
  // transformers 5 layouts, byte for byte (transformers 5's names, q_proj, k_proj and v_proj split from the fused rows,
  // sharing its input scale, and with NVFP4 its weight_scale_2).
  ['families/param2moe/hub', 'families_param2moe_hub', CALIB_ROWS, ROUTER_F32],
  ['families/sarvam_moe/hub', 'families_sarvam_moe_hub', CALIB_ROWS, ROUTER_F32],
  // Gemma 4: the dense MLP beside the experts quantized like any MLP, the router (proj, scale, per_expert_scale)
  // kept and listed as router*, experts exported one module per expert; the full layers' q and k (no v_proj: k is
  // the values) share their input scale. The wrapper's vision tower and embed_vision are kept by ModelOpt too.
  ['families/gemma4_text/hub', 'families_gemma4_text_hub', CALIB_ROWS],
  ['families/gemma4/hub', 'families_gemma4_hub', CALIB_ROWS],
  // MiniMax-Text-01: lightning attention (qkv_proj, output_gate, out_proj quantized; its norm kept), softmax
  // attention, the residual taken after the norm and weighted, Mixtral's MoE with w1/w3/w2 experts.
  ['families/minimax/hub', 'families_minimax_hub', CALIB_ROWS],
  // LongCat-Flash: two MLA attentions and two dense MLPs per layer (self_attn.0/1, mlps.0/1 quantized, each with its
  // own input scales), the MoE as a shortcut, zero-computation experts (no weights; the router, which scores them
  // too, kept); transformers loads its F32 correction bias in the model's bf16, and ModelOpt exports it so.
  ['families/longcat_flash/hub', 'families_longcat_flash_hub', CALIB_ROWS, [/e_score_correction_bias$/, 'BF16']],
  // Kimi-Linear: Kimi Delta Attention (q/k/v_proj, the decay's and the output gate's low-rank projections, b_proj and
  // o_proj quantized; the convolutions, A_log, dt_bias and the gated norm kept), MLA without rope, DeepSeek-V3's MoE
  // after a dense layer. ModelOpt 0.47 exports it under transformers 5's names from either layout (it cannot split
  // the joined conv1d back into the hub's q/k/v_conv1d, and then keeps every in-memory name), which its export of
  // the hub layout pins for both; transformers loads the routers and dt_bias in F32.
  ['families/kimi_linear/hub', 'families_kimi_linear_hub', CALIB_ROWS, [/(mlp\.gate\.weight|dt_bias)$/, 'F32']],
  ['families/kimi_linear/fused', 'families_kimi_linear_hub', CALIB_ROWS, [/(mlp\.gate\.weight|dt_bias)$/, 'F32']],
]

const bytesOf = (tensor) => {
  const v = tensor.values
  return v instanceof Uint8Array ? v : new Uint8Array(v.buffer)
}

// Weight-only formats need no calibration (nor a forward). GPT-OSS
// and Llama4 keep their experts stacked on the hub ([E, H, 2I]) and ModelOpt exports them so: `experts.gate_up_proj`
// quantized in place, with `gate_up_proj_weight_scale` … beside it.
const WEIGHT_ONLY_CASES = [
  ['qwen3_moe/hub_f32', 'qwen3_moe_hub_f32'],
  ['qwen3_moe/fused', 'qwen3_moe_fused'],
  ['mixtral/hub', 'mixtral_hub'],
  ['glm4_moe/hub', 'glm4_moe_hub'],
  ['deepseek_v3/hub', 'deepseek_v3_hub'],
  ['qwen2_moe/fused', 'qwen2_moe_fused'],
  ['gpt_oss/hub', 'gpt_oss_hub'],
  ['llama4_text/hub', 'llama4_text_hub'],
]
// Weight-only through the zoo, materialized as tools/make_golden.py --zoo gave them to ModelOpt: Qwen3.5-MoE (a
// vision-language wrapper, Gated DeltaNet layers, gated shared experts) and Kimi-Linear (Kimi Delta Attention layers,
// whose q/k/v, f_a_proj, b_proj and g_a_proj read one input and share NVFP4's weight_scale_2; written under
// transformers 5's names, its router and dt_bias, stored F32, loaded by transformers as stored). Their config.json was
// re-saved by the transformers that loaded them, so only its quantization_config is compared.
for (const [modelType, loadedAs] of [['qwen3_5_moe'], ['kimi_linear', [/(mlp\.gate\.weight|dt_bias)$/, 'F32']]]) {
  for (const format of ['w4a16_nvfp4', 'fp8_pc_pt']) {
    test(`zoo ${modelType}/hub → ${format} (weight-only) equals ModelOpt's export`, async (t) => {
      const model = materializeZoo(modelType, 'hub')
      const output = join(tempDir(), 'out')
      try {
        await quantizeModel({ model, output, format, kvCache: 'none' })
        const goldenDir = join(GOLDEN, `zoo_${modelType}_hub`, format)
        const differing = compareTensors(t, output, goldenDir, loadedAs)
        t.is(differing, 0)
        const quantization = (dir) => JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).quantization_config
        t.deepEqual(quantization(output), quantization(goldenDir))
        const ourQuant = JSON.parse(readFileSync(join(output, 'hf_quant_config.json'), 'utf8'))
        delete ourQuant.quantizer
        t.deepEqual(ourQuant, JSON.parse(readFileSync(join(goldenDir, 'hf_quant_config.json'), 'utf8')))
      } finally {
        removeZooCheckpoint(model)
      }
    })
  }
}

// Ungated experts (up_proj and down_proj, no gate): Nemotron-H (Mamba-2 and attention layers, relu² experts,
// ungated shared experts), from the zoo's hub layout, as ModelOpt 0.47 under transformers 5.17 exported it. Two
// differences come from that transformers, not from ModelOpt's format: it loads the router weight, stored F32,
// as bf16 (we keep it as stored), and its reverse renaming of the hub's `backbone.` prefix leaves a sentinel
// suffix on the module names it excludes (`lm_head.\u0000backbone.pt_name_sentinel`), removed here; ModelOpt sorts
// them by its in-memory `model.` names before that renaming, so the lists are compared as sets.
const SENTINEL = /\.\u0000backbone\.pt_name_sentinel$/
for (const format of ['w4a16_nvfp4', 'fp8_pc_pt']) {
  test(`zoo nemotron_h/hub → ${format} (ungated experts, weight-only) equals ModelOpt's export`, async (t) => {
    const model = materializeZoo('nemotron_h', 'hub')
    const output = join(tempDir(), 'out')
    try {
      await quantizeModel({ model, output, format, kvCache: 'none' })
      const goldenDir = join(GOLDEN, 'zoo_nemotron_h_hub', format)
      t.is(compareTensors(t, output, goldenDir, [/^backbone\.layers\.1\.mixer\.gate\.weight$/, 'BF16']), 0)
      const ours = readTensors(join(output, 'model.safetensors'))
      t.true(Object.keys(ours).some((n) => n === 'backbone.layers.1.mixer.experts.7.up_proj.weight'))
      t.false(Object.keys(ours).some((n) => /experts\.\d+\.gate_proj/.test(n)))
      const clean = (names) => names.map((m) => m.replace(SENTINEL, '')).sort()
      const quantization = (dir) => {
        const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).quantization_config
        return { ...config, ignore: clean(config.ignore) }
      }
      t.deepEqual(quantization(output), quantization(goldenDir))
      const hfQuant = (dir) => {
        const { quantizer, ...rest } = JSON.parse(readFileSync(join(dir, 'hf_quant_config.json'), 'utf8'))
        return { ...rest, quantization: { ...rest.quantization, exclude_modules: clean(rest.quantization.exclude_modules) } }
      }
      t.deepEqual(hfQuant(output), hfQuant(goldenDir))
    } finally {
      removeZooCheckpoint(model)
    }
  })
}

const STACKED_ON_HUB = new Set(['gpt_oss_hub', 'llama4_text_hub'])

/** Our output in `output` against ModelOpt's in `goldenDir`: tensors, scales, bytes and metadata. */
function compareWithGolden(t, output, goldenDir, loadedAs) {
  const differing = compareTensors(t, output, goldenDir, loadedAs)
  // Metadata: config.json byte for byte; hf_quant_config.json equal apart from our own "quantizer" key. Where
  // ModelOpt's module names carry the `backbone.` sentinel (Nemotron-H's hub, see above), both are compared
  // parsed, with the excluded modules cleaned and compared as sets.
  const [ours, theirs] = [output, goldenDir].map((dir) => readFileSync(join(dir, 'config.json'), 'utf8'))
  const sentinel = JSON.parse(theirs).quantization_config.ignore.some((m) => SENTINEL.test(m))
  const clean = (names) => names.map((m) => m.replace(SENTINEL, '')).sort()
  if (sentinel) {
    const parsed = (text) => {
      const config = JSON.parse(text)
      return { ...config, quantization_config: { ...config.quantization_config, ignore: clean(config.quantization_config.ignore) } }
    }
    t.deepEqual(parsed(ours), parsed(theirs))
  } else {
    t.is(ours, theirs)
  }
  const ourQuant = JSON.parse(readFileSync(join(output, 'hf_quant_config.json'), 'utf8'))
  t.is(ourQuant.quantizer.name, 'moe-quant')
  delete ourQuant.quantizer
  const theirQuant = JSON.parse(readFileSync(join(goldenDir, 'hf_quant_config.json'), 'utf8'))
  if (sentinel) for (const quant of [ourQuant, theirQuant]) quant.quantization.exclude_modules = clean(quant.quantization.exclude_modules)
  t.deepEqual(ourQuant, theirQuant)
  return differing
}

/** A tensor of ours in the dtype transformers loaded it in: F32 → BF16 or BF16 → F32. */
function castAs(tensor, dtype) {
  if (tensor.dtype === 'F32' && dtype === 'BF16') return { ...tensor, dtype, values: bf16Bytes(tensor.values) }
  if (tensor.dtype === 'BF16' && dtype === 'F32') {
    const halves = new Uint16Array(tensor.values.buffer.slice(tensor.values.byteOffset, tensor.values.byteOffset + tensor.values.byteLength))
    return { ...tensor, dtype, values: new Float32Array(Uint32Array.from(halves, (h) => h << 16).buffer) }
  }
  return tensor
}

/** F32 values as bf16 bytes (round to nearest even), as torch's `.to(torch.bfloat16)` gives them. */
function bf16Bytes(values) {
  const bits = new Uint32Array(Float32Array.from(values).buffer)
  const out = new Uint16Array(bits.length)
  for (let i = 0; i < bits.length; i++) out[i] = (bits[i] + 0x7fff + ((bits[i] >>> 16) & 1)) >>> 16
  return new Uint8Array(out.buffer)
}

/**
 * The tensors of our output against ModelOpt's: names, dtypes, shapes, scales; returns the bytes that differ.
 * `loadedAs` [pattern, dtype]: tensors we keep as stored that the transformers loading the model for ModelOpt
 * cast to `dtype` (F32 → BF16 rounded to nearest even, BF16 → F32 exactly), compared in that dtype. Tensors named
 * as `skip` says are left out on both sides; ours are compared under `rename(name)`.
 */
function compareTensors(t, output, goldenDir, loadedAs, skip = /^$/, rename = (name) => name) {
  const without = (tensors) => Object.fromEntries(Object.entries(tensors).filter(([name]) => !skip.test(name)))
  const renamed = (tensors) => Object.fromEntries(Object.entries(tensors).map(([name, tensor]) => [rename(name), tensor]))
  const ours = without(renamed(readTensors(join(output, 'model.safetensors'))))
  const theirs = without(readTensors(join(goldenDir, 'model.safetensors')))
  t.deepEqual(Object.keys(ours).sort(), Object.keys(theirs).sort(), 'tensor names')
  let bytes = 0
  let differing = 0
  for (const [name, expected] of Object.entries(theirs)) {
    let actual = ours[name]
    if (loadedAs && loadedAs[0].test(name) && expected.dtype === loadedAs[1]) actual = castAs(actual, loadedAs[1])
    t.is(actual.dtype, expected.dtype, `${name} dtype`)
    t.deepEqual(actual.shape, expected.shape, `${name} shape`)
    const scalar = expected.dtype === 'F32' && expected.shape.length === 0
    if (scalar && /(input_scale|weight_scale|weight_scale_2|k_scale|v_scale)$/.test(name)) {
      // Activation scales (inputs, keys, values) come from our forward's maxima; weight scales from the weights.
      const tolerance = /(input|k|v)_scale$/.test(name) ? 1e-5 : 1e-6
      const [a, b] = [actual.values[0], expected.values[0]]
      t.true(Math.abs(a - b) <= tolerance * Math.abs(b), `${name}: ${a} vs ModelOpt ${b}`)
      continue
    }
    const [a, b] = [bytesOf(actual), bytesOf(expected)]
    bytes += b.length
    for (let i = 0; i < b.length; i++) if (a[i] !== b[i]) differing++
  }
  t.log(`${differing} of ${bytes} tensor bytes differ from ModelOpt`)
  t.true(differing <= bytes * 0.001, `${differing} of ${bytes} bytes differ`)
  return differing
}

// fp8_pb_wo: the fixtures' weights are single 128×128 tiles, so each has a 0-d scale, and the linears that read one
// input share the largest amax (q/k/v, a shared expert's gate/up; a routed expert's gate and up, one tile fused),
// as ModelOpt's fusion step gives them. ModelOpt does not write stacked experts in this format.
for (const [fixture, golden] of WEIGHT_ONLY_CASES) {
  const formats = STACKED_ON_HUB.has(golden) ? ['w4a16_nvfp4', 'fp8_pc_pt'] : ['w4a16_nvfp4', 'fp8_pc_pt', 'fp8_pb_wo']
  for (const format of formats) {
    test(`${fixture} → ${format} (weight-only) equals ModelOpt's export (${golden})`, async (t) => {
      const output = join(tempDir(), 'out')
      const result = await quantizeModel({ model: join(FIXTURES, fixture), output, format, kvCache: 'none' })
      const differing = compareWithGolden(t, output, join(GOLDEN, golden, format))
      if (format.startsWith('fp8_') || STACKED_ON_HUB.has(golden)) t.is(differing, 0, 'every byte equal')
      t.deepEqual([result.tokens, result.uncalibratedExperts, result.coverageReportPath], [0, [], null])
    })
  }
}

// MXFP8: ModelOpt's export needs every quantized input dimension a multiple of 32, so its goldens are of copies of
// fixtures with wider experts and blocks of edge cases (zero, -0, amaxes on and one step either side of 448·2^k,
// subnormal and near-maximal values), made with them by tools/make_golden.py --mx. Per row and block of 32, a
// power-of-two scale and E4M3 codes: every byte equal, and config.json and hf_quant_config.json as ModelOpt's.
// MXFP4 likewise: E2M1 codes (ties toward zero, zero with the sign bit set) under a power-of-two scale per 32.
for (const name of ['qwen3_moe_hub', 'mixtral_hub', 'qwen2_moe_fused']) {
  for (const format of ['mxfp8', 'mxfp4']) {
    test(`mx_${name} → ${format} (weight-only) equals ModelOpt's export`, async (t) => {
      const output = join(tempDir(), 'out')
      const result = await quantizeModel({ model: join(GOLDEN, `mx_${name}`, 'source'), output, format, kvCache: 'none' })
      t.is(compareWithGolden(t, output, join(GOLDEN, `mx_${name}`, format)), 0, 'every byte equal')
      t.true(result.quantizedTensors > 0)
    })
  }
}

// fp8_pb_wo on weights of several 128×128 tiles, partial ones among them (hidden 320, experts of 256), with an
// all-zero tile, a tile 40× larger than its neighbours and one of bf16-subnormal values (tools/make_golden.py --tiled):
// each tile its own scale, no amax shared (q is not a single tile), F32 [⌈N/128⌉, 1, ⌈K/128⌉, 1] scales.
test('tiled_qwen3_moe → fp8_pb_wo (weights of several tiles) equals ModelOpt\'s export', async (t) => {
  const output = join(tempDir(), 'out')
  await quantizeModel({ model: join(GOLDEN, 'tiled_qwen3_moe', 'source'), output, format: 'fp8_pb_wo', kvCache: 'none' })
  t.is(compareWithGolden(t, output, join(GOLDEN, 'tiled_qwen3_moe', 'fp8_pb_wo')), 0, 'every byte equal')
  const scale = readTensors(join(output, 'model.safetensors'))['model.layers.0.self_attn.k_proj.weight_scale']
  t.deepEqual(scale.shape, [2, 1, 3, 1])
})

// Stacked experts excluded: kept as they are, and listed in exclude_modules as ModelOpt 0.47 lists them when its
// quantizers on `*experts*` are disabled (the whole MLP of GPT-OSS, whose router is unquantized too).
for (const [fixture, pattern, expected] of [
  ['gpt_oss/hub', 'model.layers.*.mlp.experts', ['lm_head', 'model.embed_tokens', 'model.layers.0.mlp*', 'model.layers.1.mlp*']],
  ['llama4_text/hub', 'model.layers.1.feed_forward.experts', ['lm_head', 'model.embed_tokens', 'model.layers.1.feed_forward.experts', 'model.layers.1.feed_forward.router']],
]) {
  test(`${fixture}: excluded stacked experts are kept and listed in exclude_modules`, async (t) => {
    const output = join(tempDir(), 'out')
    await quantizeModel({ model: join(FIXTURES, fixture), output, format: 'w4a16_nvfp4', exclude: [pattern], kvCache: 'none' })
    const quant = JSON.parse(readFileSync(join(output, 'hf_quant_config.json'), 'utf8'))
    t.deepEqual(quant.quantization.exclude_modules, expected)
    const ours = readTensors(join(output, 'model.safetensors'))
    const input = readTensors(join(FIXTURES, fixture, 'model.safetensors'))
    const stacks = Object.keys(input).filter((name) => /experts\.(gate_up|down)_proj$/.test(name))
    t.true(stacks.length > 0)
    for (const name of stacks) t.deepEqual(bytesOf(ours[name]), bytesOf(input[name]), name)
    t.false(Object.keys(ours).some((name) => name.includes('experts') && name.includes('weight_scale')))
  })
}

// Scopes against ModelOpt's NVFP4_EXPERTS_ONLY_CFG and NVFP4_MLP_ONLY_CFG (GLM4-MoE: a dense layer, shared experts).
for (const [scope, golden] of [['experts', 'nvfp4_experts'], ['mlp', 'nvfp4_mlp']]) {
  test(`glm4_moe/hub → nvfp4 with scope '${scope}' equals ModelOpt's ${golden} export`, async (t) => {
    const output = join(tempDir(), 'out')
    const ids = CALIB_ROWS
    const calibration = { ids, samples: ids.length, seqLen: ids[0].length }
    await quantizeModel({ model: join(FIXTURES, 'glm4_moe/hub'), output, format: 'nvfp4', scope, calibration, coverageReport: false, kvCache: 'none' })
    compareWithGolden(t, output, join(GOLDEN, 'glm4_moe_hub', golden))
  })
}

for (const [fixture, golden, ids, loadedAs, formats = ['fp8', 'nvfp4'], unrouted = []] of CASES) {
  for (const format of formats) {
    test(`${fixture} → ${format} equals ModelOpt's export (${golden})`, async (t) => {
      const output = join(tempDir(), 'out')
      const result = await quantizeModel({
        model: join(FIXTURES, fixture),
        output,
        format,
        calibration: { ids, samples: ids.length, seqLen: ids[0].length },
        coverageReport: false,
        kvCache: 'none',
      })
      compareWithGolden(t, output, join(GOLDEN, golden, format), loadedAs)
      if (golden.endsWith('fewtokens')) {
        t.true(result.uncalibratedExperts.length === 2 && result.warnings.some((w) => w.includes('saw no calibration token')))
      } else {
        t.deepEqual(result.uncalibratedExperts, unrouted)
      }
    })
  }
}

// MIXED_PRECISION: ModelOpt's export with a quant_cfg per module group, and our run with the same recipe (recipe.json
// beside each golden, tools/make_golden.py --mixed): NVFP4 experts with FP8 attention (calibrated), and W4A16_NVFP4
// experts with an FP8 shared expert and 128×128-block FP8 attention (calibrated for the shared expert only). The run's
// `format` is that of the experts' rule; every quantized module is named by a rule. quantized_layers lists each
// module once (the routed experts of a layer as their experts module) in the model's order, config.json one config
// group per distinct entry.
for (const [golden, fixture, format] of [
  ['mixed_nvfp4_experts_fp8_attention', 'qwen3_moe/hub', 'nvfp4'],
  ['mixed_w4a16_experts_fp8_shared_fp8pb_attention', 'qwen2_moe/hub', 'w4a16_nvfp4'],
]) {
  test(`${fixture} with a recipe → MIXED_PRECISION equals ModelOpt's export (${golden})`, async (t) => {
    const output = join(tempDir(), 'out')
    const dir = join(GOLDEN, golden)
    const result = await quantizeModel({
      model: join(FIXTURES, fixture),
      output,
      format,
      recipe: join(dir, 'recipe.json'),
      calibration: { ids: CALIB_ROWS, samples: CALIB_ROWS.length, seqLen: CALIB_ROWS[0].length },
      coverageReport: false,
      kvCache: 'none',
    })
    compareWithGolden(t, output, dir)
    const quant = JSON.parse(readFileSync(join(output, 'hf_quant_config.json'), 'utf8')).quantization
    t.is(quant.quant_algo, 'MIXED_PRECISION')
    t.false(Object.hasOwn(quant, 'exclude_modules'))
    const record = JSON.parse(readFileSync(join(output, 'moe-quant-run.json'), 'utf8'))
    t.deepEqual(record.options.recipe, JSON.parse(readFileSync(join(dir, 'recipe.json'), 'utf8')))
    t.true(result.quantizedTensors > 0)
  })
}

// NVFP4 needs input dimensions that are multiples of 16: ModelOpt 0.47 stops on the Jamba fixture's dt_proj
// [128, 4] ("Weight shape is not divisible for block size"), and so do we, unless told to keep such linears.
test('families/jamba/hub → nvfp4 is refused on dt_proj, as ModelOpt fails on it', async (t) => {
  const ids = CALIB_ROWS
  const options = { model: join(FIXTURES, 'families/jamba/hub'), format: 'nvfp4', calibration: { ids, samples: ids.length, seqLen: ids[0].length }, coverageReport: false }
  await t.throwsAsync(quantizeModel({ ...options, output: join(tempDir(), 'out') }), { code: 'E_TENSOR_SHAPE', message: /^model\.layers\.0\.mamba\.dt_proj\.weight \[128, 4\]/ })
  const output = join(tempDir(), 'out')
  const result = await quantizeModel({ ...options, output, indivisible: 'keep' })
  const ours = readTensors(join(output, 'model.safetensors'))
  t.is(ours['model.layers.0.mamba.dt_proj.weight'].dtype, 'BF16')
  t.is(ours['model.layers.0.mamba.x_proj.weight'].dtype, 'U8')
  t.true(result.keptIndivisible.includes('model.layers.0.mamba.dt_proj'))
})

// Families whose ModelOpt export also weight-quantizes, uncalibrated, a part of the model outside the text stack
// that moe-quant keeps as stored (text never reaches it): everything else must be ModelOpt's, and that part is
// listed in exclude_modules. In their transformers 5 layouts, since for the hub layouts ModelOpt writes the names
// transformers holds in memory.
// Kimi-K2.5: a DeepSeek-V3 text model in a vision-language wrapper whose class ties the lm_head by default (the hub
// spells it language_model.model.*, and its vision tower is converted on load). ModelOpt 0.47 quantizes the vision
// projector `mm_projector` (its defaults disable `*multi_modal_projector*`, not this name).
// Qwen3-Omni-MoE's thinker: Qwen3-MoE text layers (M-RoPE, a dense layer from mlp_only_layers) under a vision tower
// and an audio encoder, whose linears ModelOpt 0.47 quantizes (its defaults disable vision modules only).
const PARTLY_QUANTIZED = [
  ['families/kimi_k25/fused', 'families_kimi_k25_fused', /^model\.mm_projector\./, 'model.mm_projector*', ROUTER_F32],
  ['families/qwen3_omni_moe_thinker/fused', 'families_qwen3_omni_moe_thinker_fused', /^model\.audio_tower\./, 'model.audio_tower*'],
]
for (const [fixture, golden, part, excluded, loadedAs] of PARTLY_QUANTIZED) {
  for (const format of ['fp8', 'nvfp4']) {
    test(`${fixture} → ${format} equals ModelOpt's export (${golden}) but for ${excluded}`, async (t) => {
      const output = join(tempDir(), 'out')
      const ids = CALIB_ROWS
      const result = await quantizeModel({
        model: join(FIXTURES, fixture),
        output,
        format,
        calibration: { ids, samples: ids.length, seqLen: ids[0].length },
        coverageReport: false,
        kvCache: 'none',
      })
      const goldenDir = join(GOLDEN, golden, format)
      compareTensors(t, output, goldenDir, loadedAs, part)
      const ours = readTensors(join(output, 'model.safetensors'))
      const input = readTensors(join(FIXTURES, fixture, 'model.safetensors'))
      const kept = Object.keys(input).filter((n) => part.test(n))
      t.true(kept.length > 0)
      for (const name of kept) t.deepEqual(bytesOf(ours[name]), bytesOf(input[name]), name)
      const exclude = (dir) => JSON.parse(readFileSync(join(dir, 'hf_quant_config.json'), 'utf8')).quantization.exclude_modules
      t.deepEqual(exclude(output), [...exclude(goldenDir), excluded].sort())
      t.deepEqual(result.uncalibratedExperts, [])
    })
  }
}

// Vision-language wrappers whose ModelOpt export names the vision tower (and, for Unlimited-OCR's hub layout, the
// language model: model.language_model.* for the hub's model.*) as transformers holds them in memory, where moe-quant
// keeps the checkpoint's names: the language model's tensors and exclude_modules must be ModelOpt's under that
// renaming. DeepSeek-OCR-2 and Unlimited-OCR: DeepSeek-V2's router in Llama layers (Unlimited-OCR's reference sliding
// window spares a whole sequence); transformers loads their routers in F32.
const TEXT = /^(lm_head|model\.(language_model\.)?(layers|embed_tokens|norm)\b)/
const NAMED_OTHERWISE = [
  ['families/deepseek_ocr2/hub', 'families_deepseek_ocr2_hub', (name) => name],
  ['families/unlimited_ocr/hub', 'families_unlimited_ocr_hub', (name) => name.replace(/^model\.(layers|embed_tokens|norm)\b/, 'model.language_model.$1')],
]
for (const [fixture, golden, rename] of NAMED_OTHERWISE) {
  for (const format of ['fp8', 'nvfp4']) {
    test(`${fixture} → ${format}: the language model equals ModelOpt's export (${golden})`, async (t) => {
      const output = join(tempDir(), 'out')
      const ids = CALIB_ROWS
      const result = await quantizeModel({
        model: join(FIXTURES, fixture),
        output,
        format,
        calibration: { ids, samples: ids.length, seqLen: ids[0].length },
        coverageReport: false,
        kvCache: 'none',
      })
      const goldenDir = join(GOLDEN, golden, format)
      const notText = { test: (name) => !TEXT.test(name) }
      compareTensors(t, output, goldenDir, ROUTER_F32, notText, rename)
      const exclude = (dir, name) => JSON.parse(readFileSync(join(dir, 'hf_quant_config.json'), 'utf8')).quantization.exclude_modules.map(name).filter((m) => TEXT.test(m))
      t.deepEqual(exclude(output, rename), exclude(goldenDir, (m) => m))
      t.deepEqual(result.uncalibratedExperts, [])
    })
  }
}

// The KV cache as ModelOpt's hf_ptq quantizes it (tools/make_golden.py --kv-cache: the format's config merged with
// hf_ptq's `--kv_cache_qformat` preset). `fp8` adds every attention's k_proj.k_scale and v_proj.v_scale (Qwen3-MoE: keys
// after k_norm and the rope; DeepSeek-V3: MLA's keys, the nope part and the shared rotary part); `fp8_cast`, hf_ptq's
// default, no tensor; both write kv_cache_quant_algo "FP8" and config.json's kv_cache_scheme.
const KV_CASES = [
  ['qwen3_moe/hub_f32', 'qwen3_moe_hub_f32', 'fp8', 'fp8'],
  ['qwen3_moe/hub_f32', 'qwen3_moe_hub_f32', 'nvfp4', 'fp8'],
  ['qwen3_moe/hub_f32', 'qwen3_moe_hub_f32', 'fp8', 'fp8_cast'],
  ['qwen3_moe/hub_f32', 'qwen3_moe_hub_f32', 'w4a16_nvfp4', 'fp8_cast'],
  ['deepseek_v3/hub', 'deepseek_v3_hub', 'fp8', 'fp8'],
  ['deepseek_v3/hub', 'deepseek_v3_hub', 'nvfp4', 'fp8'],
]
for (const [fixture, golden, format, kvCache] of KV_CASES) {
  test(`${fixture} → ${format} with kvCache '${kvCache}' equals ModelOpt's export (${golden}/${format}_kv_${kvCache})`, async (t) => {
    const output = join(tempDir(), 'out')
    const calibrated = format !== 'w4a16_nvfp4'
    const ids = CALIB_ROWS
    const calibration = calibrated ? { calibration: { ids, samples: ids.length, seqLen: ids[0].length }, coverageReport: false } : {}
    // fp8_cast is the default: left out, it must give the same output.
    const result = await quantizeModel({ model: join(FIXTURES, fixture), output, format, ...calibration, ...(kvCache === 'fp8_cast' ? {} : { kvCache }) })
    t.is(result.kvCache, kvCache)
    const goldenDir = join(GOLDEN, golden, `${format}_kv_${kvCache}`)
    compareWithGolden(t, output, goldenDir)
    const kvScales = (dir) => Object.keys(readTensors(join(dir, 'model.safetensors'))).filter((n) => /\.(k_proj\.k_scale|v_proj\.v_scale)$/.test(n))
    t.is(kvScales(goldenDir).length, kvCache === 'fp8' ? 4 : 0, 'two attentions, a key and a value scale each')
  })
}
