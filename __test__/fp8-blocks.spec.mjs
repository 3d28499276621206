// The FP8 block formats beyond their goldens (golden.spec.mjs). fp8_pb_wo (ModelOpt's FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG),
// whose golden weights are all single 128×128 tiles: weights of several tiles, checked against scales computed here
// from the source bf16 values, and the expert shapes ModelOpt 0.47 cannot write in this format, refused with a
// reason. MXFP8 and MXFP4: their output read back into a model that agrees with the original.
import test from 'ava'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import { renderSummary } from '../dist/cli/quantize.js'
import { evaluateModel, quantizeModel } from '../dist/index.js'
import { bf16Values, e4m3, FIXTURES, readTensors, tempDir, writeSyntheticQwen3 } from './helpers/checkpoint.mjs'

const TILE = 128

/** Max |x| of each 128×128 tile of a row-major [rows, cols] weight, tile-row major. */
function tileAmaxes(values, rows, cols) {
  const [tileRows, tileCols] = [Math.ceil(rows / TILE), Math.ceil(cols / TILE)]
  const amax = new Array(tileRows * tileCols).fill(0)
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const tile = Math.floor(r / TILE) * tileCols + Math.floor(c / TILE)
      amax[tile] = Math.max(amax[tile], Math.abs(values[r * cols + c]))
    }
  }
  return { amax, tileCols, shape: [tileRows, 1, tileCols, 1] }
}

test('weights of several tiles: one scale per 128×128 tile, from that tile alone, and codes within E4M3 rounding', async (t) => {
  const model = join(tempDir(), 'model')
  // H 320 (2.5 tiles), I 256: gate/up [256, 320], down [320, 256], q [64, 320], k/v [32, 320], o [320, 64].
  writeSyntheticQwen3(model, { hidden: 320, intermediate: 256, experts: 2, vocab: 128 })
  const output = join(tempDir(), 'out')
  const result = await quantizeModel({ model, output, format: 'fp8_pb_wo', kvCache: 'none' })
  t.is(result.quantizedTensors, 4 + 2 * 3)
  const source = readTensors(join(model, 'model.safetensors'))
  const ours = readTensors(join(output, 'model.safetensors'))
  const modules = ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.experts.0.gate_proj', 'mlp.experts.1.up_proj', 'mlp.experts.1.down_proj']
  for (const module of modules.map((m) => `model.layers.0.${m}`)) {
    const { shape: [rows, cols], values: raw } = source[`${module}.weight`]
    const values = bf16Values(raw)
    const { amax, tileCols, shape } = tileAmaxes(values, rows, cols)
    const scale = ours[`${module}.weight_scale`]
    t.is(scale.dtype, 'F32', module)
    t.deepEqual(scale.shape, shape, module)
    // Each tile's own amax over 448 in f32 (q, k and v do not share theirs: q is not a single tile).
    t.deepEqual(Array.from(scale.values), amax.map((a) => Math.fround(Math.fround(a) / 448)), module)
    const codes = ours[`${module}.weight`]
    t.is(codes.dtype, 'F8_E4M3')
    t.deepEqual(codes.shape, [rows, cols])
    let worst = 0
    for (let i = 0; i < values.length; i++) {
      const tileScale = scale.values[Math.floor(Math.floor(i / cols) / TILE) * tileCols + Math.floor((i % cols) / TILE)]
      const error = Math.abs(e4m3(codes.values[i]) * tileScale - values[i])
      worst = Math.max(worst, error / (Math.abs(values[i]) + tileScale / 64))
    }
    t.true(worst <= 1 / 16, `${module}: worst relative error ${worst}`)
  }
  t.true(result.warnings.some((w) => /^serving: vLLM 0\.34 loads fp8_pb_wo linears whose input dimension is a multiple of 128/.test(w)))
  const quant = JSON.parse(readFileSync(join(output, 'hf_quant_config.json'), 'utf8')).quantization
  t.like(quant, { quant_algo: 'fp8_pb_wo', kv_cache_quant_algo: null })
  t.false(Object.hasOwn(quant, 'group_size'))
  // E4M3 with per-tile scales: a small weight error, and the checkpoint reads back (dequantized by its block scales)
  // into a model whose next-token choices are the original's.
  for (const layer of result.layers) t.true(layer.relativeMse > 0 && layer.relativeMse < 2e-3, `${layer.relativeMse}`)
  const ids = [Uint32Array.from({ length: 24 }, (_, i) => (i * 37 + 5) % 128), Uint32Array.from({ length: 24 }, (_, i) => (i * 11 + 3) % 128)]
  const evaluation = await evaluateModel(model, output, { ids })
  t.log(`top-1 agreement ${evaluation.top1Agreement}, mean KL ${evaluation.klMean}`)
  t.true(evaluation.top1Agreement >= 0.9, JSON.stringify(evaluation))
  t.true(evaluation.klMean < 1e-2, JSON.stringify(evaluation))
})

test('experts whose width ModelOpt tiles across gate and up, and stacked experts, are refused with the reason', async (t) => {
  const model = join(tempDir(), 'model')
  // I 96: the fused gate/up [192, 64] spans two tile rows, and the second mixes gate's rows with up's.
  writeSyntheticQwen3(model, { hidden: 64, intermediate: 96, experts: 2, vocab: 128 })
  const error = await t.throwsAsync(quantizeModel({ model, output: join(tempDir(), 'out'), format: 'fp8_pb_wo' }), { code: 'E_MODEL_UNSUPPORTED' })
  t.regex(error.message, /model\.layers\.0\.mlp\.experts\.0\.gate_proj\.weight: format 'fp8_pb_wo' lays its 128×128 tiles over each expert's fused gate\/up \[2I, H\], and the experts of model\.layers\.0\.mlp have I = 96, not a multiple of 128/)
  t.regex(error.message, /use 'fp8' or 'fp8_pc_pt'/)
  await t.throwsAsync(quantizeModel({ model: join(FIXTURES, 'gpt_oss/hub'), output: join(tempDir(), 'out'), format: 'fp8_pb_wo' }), {
    code: 'E_MODEL_UNSUPPORTED',
    message: /format 'fp8_pb_wo' is not written for experts kept stacked/,
  })
  // The same widths are fine for the other formats.
  await t.notThrowsAsync(quantizeModel({ model, output: join(tempDir(), 'out'), format: 'fp8_pc_pt' }))
})

for (const [format, codes] of [['mxfp8', ['F8_E4M3', [64, 64]]], ['mxfp4', ['U8', [64, 32]]]]) {
  test(`${format}: power-of-two scales per 32 inputs, read back into a model that agrees with the original`, async (t) => {
    const model = join(tempDir(), 'model')
    // Every input dimension a multiple of 32: H 64, I 64, attention 4 × 16.
    writeSyntheticQwen3(model, { hidden: 64, intermediate: 64, experts: 4, layers: 2, vocab: 128 })
    const output = join(tempDir(), 'out')
    const result = await quantizeModel({ model, output, format, kvCache: 'none' })
    t.is(result.quantizedTensors, 2 * (4 + 4 * 3))
    const ours = readTensors(join(output, 'model.safetensors'))
    const weight = ours['model.layers.1.mlp.experts.3.down_proj.weight']
    const scale = ours['model.layers.1.mlp.experts.3.down_proj.weight_scale']
    t.deepEqual([weight.dtype, weight.shape], codes)
    t.deepEqual([scale.dtype, scale.shape], ['U8', [64, 2]])
    t.false(Object.keys(ours).some((n) => n.endsWith('input_scale')))
    // Where the engines' ModelOpt loaders do not take the format, the run says so.
    t.deepEqual(result.warnings.filter((w) => w.startsWith('serving:')).length, format === 'mxfp4' ? 1 : 0)
    const bound = format === 'mxfp8' ? 2e-3 : 3e-2
    for (const layer of result.layers) t.true(layer.relativeMse > 0 && layer.relativeMse < bound, `${layer.relativeMse}`)
    const ids = [Uint32Array.from({ length: 24 }, (_, i) => (i * 37 + 5) % 128), Uint32Array.from({ length: 24 }, (_, i) => (i * 11 + 3) % 128)]
    const evaluation = await evaluateModel(model, output, { ids })
    t.log(`top-1 agreement ${evaluation.top1Agreement}, mean KL ${evaluation.klMean}`)
    t.true(evaluation.top1Agreement >= 0.8 && evaluation.klMean < 1e-2, JSON.stringify(evaluation))
  })
}

test('a weight whose quantized values read back beyond f32 reports an infinite error, and the CLI summary shows it', async (t) => {
  // Layer 0 of the MX checkpoints holds values near the bf16 maximum (tools/make_golden.py --mx): their E2M1 codes
  // times the block's power-of-two scale exceed f32, as they do for ModelOpt.
  const output = join(tempDir(), 'out')
  const result = await quantizeModel({ model: join(FIXTURES, 'golden', 'mx_qwen3_moe_hub', 'source'), output, format: 'mxfp4', kvCache: 'none' })
  t.is(result.layers[0].relativeMse, Number.POSITIVE_INFINITY)
  t.true(Number.isFinite(result.layers[1].relativeMse))
  t.regex(renderSummary(result), /^0 +28 +Infinity$/m)
})
