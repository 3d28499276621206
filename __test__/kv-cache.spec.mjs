// The KV cache option (`kvCache`, hf_ptq's --kv_cache_qformat): the scales of every calibrated family against
// ModelOpt's (fixtures/golden/kv_scales.json, made by tools/make_golden.py --kv-cache from its FP8 exports with the
// calibrated preset: names exactly, values within 1e-5 since they come from our forward's key and value maxima), the
// default, and what is refused. Whole exports against ModelOpt's, byte for byte, are in golden.spec.mjs.
import test from 'ava'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'

import { calibrateModel, quantizeModel } from '../dist/index.js'
import { FIXTURES, readTensors, rows, tempDir } from './helpers/checkpoint.mjs'

const GOLDEN = join(FIXTURES, 'golden')
const ORACLE = JSON.parse(readFileSync(join(GOLDEN, 'kv_scales.json'), 'utf8'))
const calibIds = readTensors(join(GOLDEN, 'calib_ids.safetensors')).input_ids
const CALIB_ROWS = rows(calibIds.values, calibIds.shape[1])
const calibration = { ids: CALIB_ROWS, samples: CALIB_ROWS.length, seqLen: CALIB_ROWS[0].length }
const KV_SCALE = /\.(k_proj\.k_scale|v_proj\.v_scale)$/

// ModelOpt names Unlimited-OCR's language model as transformers holds it (model.language_model.*, the hub's model.*):
// our names, which keep the checkpoint's, compared under that renaming (as golden.spec.mjs compares its tensors).
const RENAMES = { 'families/unlimited_ocr/hub': (name) => name.replace(/^model\.layers\./, 'model.language_model.layers.') }

const hfQuant = (dir) => JSON.parse(readFileSync(join(dir, 'hf_quant_config.json'), 'utf8')).quantization
const quantizationConfig = (dir) => JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).quantization_config

const fixtures = Object.keys(ORACLE).filter((key) => key !== 'modelopt_version')

test('the KV scale oracle covers every calibrated fixture of the goldens', (t) => {
  t.is(ORACLE.modelopt_version, '0.47.0')
  t.is(fixtures.length, 51)
  // Every family exports scales but LongCat-Flash, whose attention ModelOpt does not recognise.
  t.deepEqual(fixtures.filter((f) => ORACLE[f].kv_cache_quant_algo !== 'FP8'), ['families/longcat_flash/hub'])
})

for (const fixture of fixtures.filter((f) => ORACLE[f].kv_cache_quant_algo === 'FP8')) {
  test(`${fixture}: kvCache 'fp8' writes ModelOpt's k_scale and v_scale`, async (t) => {
    const output = join(tempDir(), 'out')
    const result = await quantizeModel({ model: join(FIXTURES, fixture), output, format: 'fp8', calibration, kvCache: 'fp8', coverageReport: false })
    t.is(result.kvCache, 'fp8')
    const rename = RENAMES[fixture] ?? ((name) => name)
    const ours = Object.fromEntries(Object.entries(readTensors(join(output, 'model.safetensors'))).filter(([name]) => KV_SCALE.test(name)).map(([name, tensor]) => [rename(name), tensor]))
    const theirs = ORACLE[fixture].scales
    t.deepEqual(Object.keys(ours).sort(), Object.keys(theirs).sort())
    for (const [name, expected] of Object.entries(theirs)) {
      const { dtype, shape, values } = ours[name]
      t.deepEqual([dtype, shape], ['F32', []], name)
      t.true(Math.abs(values[0] - expected) <= 1e-5 * expected, `${name}: ${values[0]} vs ModelOpt ${expected}`)
    }
    t.is(hfQuant(output).kv_cache_quant_algo, 'FP8')
    t.deepEqual(quantizationConfig(output).kv_cache_scheme, { dynamic: false, num_bits: 8, type: 'float' })
  })
}

test('calibrateModel reports the maxima of the keys and values of each attention, which the scales are made of', async (t) => {
  const result = await calibrateModel({ model: join(FIXTURES, 'qwen3_moe/hub_f32'), calibration })
  t.deepEqual(Object.keys(result.kvAmax), ['model.layers.0.self_attn', 'model.layers.1.self_attn'])
  for (const [attention, { key, value }] of Object.entries(result.kvAmax)) {
    const scales = ORACLE['qwen3_moe/hub_f32'].scales
    t.true(Math.abs(key / 448 - scales[`${attention}.k_proj.k_scale`]) <= 1e-5 * scales[`${attention}.k_proj.k_scale`], attention)
    t.true(Math.abs(value / 448 - scales[`${attention}.v_proj.v_scale`]) <= 1e-5 * scales[`${attention}.v_proj.v_scale`], attention)
  }
})

test("the default is hf_ptq's fp8_cast: kv_cache_quant_algo FP8, no scale tensor, recorded in the run record", async (t) => {
  const output = join(tempDir(), 'out')
  const result = await quantizeModel({ model: join(FIXTURES, 'qwen3_moe/hub'), output, format: 'nvfp4', calibration, coverageReport: false })
  t.is(result.kvCache, 'fp8_cast')
  t.is(hfQuant(output).kv_cache_quant_algo, 'FP8')
  t.deepEqual(quantizationConfig(output).kv_cache_scheme, { dynamic: false, num_bits: 8, type: 'float' })
  t.false(Object.keys(readTensors(join(output, 'model.safetensors'))).some((name) => KV_SCALE.test(name)))
  t.is(JSON.parse(readFileSync(result.runRecordPath, 'utf8')).options.kvCache, 'fp8_cast')
})

test("kvCache 'none' writes kv_cache_quant_algo null and no kv_cache_scheme", async (t) => {
  const output = join(tempDir(), 'out')
  await quantizeModel({ model: join(FIXTURES, 'qwen3_moe/hub'), output, format: 'w4a16_nvfp4', kvCache: 'none' })
  t.is(hfQuant(output).kv_cache_quant_algo, null)
  t.false(Object.hasOwn(quantizationConfig(output), 'kv_cache_scheme'))
})

test('kvCache values are checked before any work, and fp8 needs a calibrated format', async (t) => {
  const parent = tempDir()
  const output = join(parent, 'out')
  const model = join(FIXTURES, 'qwen3_moe/hub')
  for (const kvCache of ['FP8', 'nvfp4', '', null, true]) {
    const error = await t.throwsAsync(quantizeModel({ model, output, format: 'nvfp4', calibration, kvCache }))
    t.is(error.code, 'E_OPTION_INVALID')
    t.is(error.message, `kvCache: expected 'fp8', 'fp8_cast' or 'none', got ${JSON.stringify(kvCache)}`)
  }
  for (const format of ['w4a16_nvfp4', 'fp8_pc_pt']) {
    const error = await t.throwsAsync(quantizeModel({ model, output, format, kvCache: 'fp8' }))
    t.is(error.code, 'E_OPTION_INVALID')
    t.regex(error.message, new RegExp(`^kvCache: 'fp8' calibrates the key and value scales, but format '${format}' is weight-only .* use 'fp8_cast'`))
  }
  t.false(existsSync(output))
})

test("LongCat-Flash, whose KV cache ModelOpt does not quantize: 'none' by default with a warning, the others refused", async (t) => {
  const model = join(FIXTURES, 'families/longcat_flash/hub')
  const output = join(tempDir(), 'out')
  const result = await quantizeModel({ model, output, format: 'fp8', calibration, coverageReport: false })
  t.is(result.kvCache, 'none')
  t.true(result.warnings.some((w) => w.startsWith('LongCat-Flash: KV cache left unquantized, as ModelOpt leaves it')), result.warnings.join('\n'))
  t.is(hfQuant(output).kv_cache_quant_algo, ORACLE['families/longcat_flash/hub'].kv_cache_quant_algo)
  for (const kvCache of ['fp8', 'fp8_cast']) {
    const error = await t.throwsAsync(quantizeModel({ model, output: join(tempDir(), 'out'), format: 'fp8', calibration, kvCache }))
    t.is(error.code, 'E_MODEL_UNSUPPORTED')
    t.regex(error.message, new RegExp(`^kvCache: '${kvCache}' is not available for LongCat-Flash: its attention class, LongcatFlashMLA, is not one ModelOpt 0\\.47 puts KV cache quantizers on.*; pass kvCache: 'none'$`))
  }
})
