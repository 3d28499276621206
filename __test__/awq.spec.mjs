// The AWQ formats (int4_awq → W4A16_AWQ, w4a8_awq → W4A8_AWQ, nvfp4_awq → NVFP4_AWQ) against ModelOpt 0.47's exports of the same source
// checkpoints and calibration ids (fixtures/golden/awq_*, made by tools/make_awq_golden.py).
//
// Byte identity is checked in crates/core/tests/awq_golden.rs, given ModelOpt's own search statistics: every tensor
// of the three goldens. A run of ours searches on its own forward, in f32 where ModelOpt's CPU run is bf16 (and
// ModelOpt's bf16 GEMMs change with the CPU's instruction set), so where two alphas are close our search may keep the
// other one. Here the whole run is checked against the goldens: the same tensors, dtypes and shapes, the same
// metadata; 4-bit codes, scales, pre_quant_scale and the norms that absorb it close to ModelOpt's; and the
// dequantized model as close to the original as ModelOpt's export is.
import test from 'ava'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import { computeLogits, quantizeModel } from '../dist/index.js'
import { FIXTURES, floatValues, readRaw, readTensors, relativeL2, rows, tempDir } from './helpers/checkpoint.mjs'

const GOLDEN = join(FIXTURES, 'golden')
const calibIds = readTensors(join(GOLDEN, 'calib_ids.safetensors')).input_ids
const CALIB_ROWS = rows(calibIds.values, calibIds.shape[1])
const PROBE = [[5, 17, 99, 3, 200, 45, 8, 77, 12, 140, 33, 250, 61, 2, 90, 180]]

/** The signed INT4 codes of a packed weight, both nibbles of each byte. */
const nibbles = (bytes) => Array.from(bytes).flatMap((b) => [b & 15, b >> 4])

async function compare(t, kase, format) {
  const golden = join(GOLDEN, kase, format)
  const source = join(GOLDEN, kase, 'source')
  const output = join(tempDir(), 'out')
  // ModelOpt's configs alone quantize no KV cache.
  await quantizeModel({ model: source, output, format, calibration: { ids: CALIB_ROWS }, kvCache: 'none' })

  t.is(readFileSync(join(output, 'config.json'), 'utf8'), readFileSync(join(golden, 'config.json'), 'utf8'))
  const { quantizer, ...ours } = JSON.parse(readFileSync(join(output, 'hf_quant_config.json'), 'utf8'))
  t.is(quantizer.name, 'moe-quant')
  t.deepEqual(ours, JSON.parse(readFileSync(join(golden, 'hf_quant_config.json'), 'utf8')))

  const layout = (dir) => {
    const { header } = readRaw(join(dir, 'model.safetensors'))
    delete header.__metadata__
    return Object.fromEntries(Object.entries(header).map(([name, info]) => [name, [info.dtype, info.shape]]))
  }
  t.deepEqual(layout(output), layout(golden), 'the same tensors, dtypes and shapes')

  const a = readTensors(join(output, 'model.safetensors'))
  const b = readTensors(join(golden, 'model.safetensors'))
  let codes = 0
  let equalCodes = 0
  let worst = { scale: 0, smoothing: 0, input: 0 }
  const raw = { ours: readRaw(join(output, 'model.safetensors')), theirs: readRaw(join(golden, 'model.safetensors')) }
  const bytes = (file, name) => {
    const [start, end] = file.header[name].data_offsets
    return file.data.subarray(start, end)
  }
  const maxRel = (x, y) => {
    const [ours, theirs] = [floatValues(x), floatValues(y)]
    return ours.reduce((m, v, i) => Math.max(m, Math.abs(v - theirs[i]) / Math.max(Math.abs(theirs[i]), 1e-12)), 0)
  }
  for (const name of Object.keys(b)) {
    if (name.endsWith('.weight') && b[name].dtype === 'U8') {
      const [ours, theirs] = [nibbles(bytes(raw.ours, name)), nibbles(bytes(raw.theirs, name))]
      codes += theirs.length
      equalCodes += ours.filter((c, i) => c === theirs[i]).length
    } else if (name.endsWith('.weight_scale') || name.endsWith('.weight_scale_2')) {
      worst.scale = Math.max(worst.scale, maxRel(a[name], b[name]))
    } else if (name.endsWith('.pre_quant_scale') || name.endsWith('layernorm.weight')) {
      worst.smoothing = Math.max(worst.smoothing, maxRel(a[name], b[name]))
    } else if (name.endsWith('.input_scale')) {
      // ModelOpt writes each routed expert's own; ours is the layer's, their largest.
      const expert = /^(.*\.experts\.)\d+(\..*)$/.exec(name)
      const same = expert ? Object.keys(b).filter((n) => n.startsWith(expert[1]) && n.endsWith(expert[2]) && /^\d+$/.test(n.slice(expert[1].length, -expert[2].length))) : [name]
      const theirs = Math.max(...same.map((n) => b[n].values[0]))
      worst.input = Math.max(worst.input, Math.abs(a[name].values[0] - theirs) / theirs)
    }
  }
  const agreement = equalCodes / codes
  t.log(`${kase} ${format}: ${(100 * agreement).toFixed(2)}% of ${codes} 4-bit codes equal; max relative difference: block scales ${worst.scale.toExponential(2)}, pre_quant_scale and norms ${worst.smoothing.toExponential(2)}, input scales ${worst.input.toExponential(2)}`)
  // Where our search keeps a neighbouring alpha, that linear's smoothing moves by up to about 15%. NVFP4's loss is
  // flatter across alphas (and ModelOpt's CPU golden searched with a stand-in for its GPU kernel), so its alphas
  // part more often; its E4M3 block scales of near-zero blocks move by whole steps, so codes and logits judge it.
  const nvfp4 = format === 'nvfp4_awq'
  t.true(agreement >= (nvfp4 ? 0.9 : 0.95), `codes equal to ModelOpt's: ${agreement}`)
  t.true(worst.smoothing <= (nvfp4 ? 0.2 : 0.15) && worst.input <= (nvfp4 ? 0.1 : 0.05), JSON.stringify(worst))
  if (!nvfp4) t.true(worst.scale <= 0.15, JSON.stringify(worst))

  // Read back by our forward (pre_quant_scale applied, the norms as written): as close to the original as ModelOpt's.
  const original = (await computeLogits(source, PROBE)).logits
  const ourError = relativeL2((await computeLogits(output, PROBE)).logits, original)
  const theirError = relativeL2((await computeLogits(golden, PROBE)).logits, original)
  t.log(`logits relative L2 to the original: ours ${ourError.toExponential(3)}, ModelOpt's ${theirError.toExponential(3)}`)
  t.true(ourError <= 1.1 * theirError, `${ourError} vs ${theirError}`)
}

test('int4_awq on a dense Qwen3 is ModelOpt\'s W4A16_AWQ export', (t) => compare(t, 'awq_qwen3', 'int4_awq'))
test('w4a8_awq on a dense Qwen3 is ModelOpt\'s W4A8_AWQ export', (t) => compare(t, 'awq_qwen3', 'w4a8_awq'))
test('int4_awq searches each routed expert and averages over the experts as ModelOpt does', (t) => compare(t, 'awq_qwen3_moe', 'int4_awq'))
test('nvfp4_awq on a dense Qwen3 is ModelOpt\'s NVFP4_AWQ export (down_proj folded into up_proj)', (t) => compare(t, 'awq_qwen3', 'nvfp4_awq'))
test('nvfp4_awq without grouped heads folds o_proj into v_proj as ModelOpt does', (t) => compare(t, 'awq_qwen3_mha', 'nvfp4_awq'))
test('nvfp4_awq folds each expert\'s down_proj into its up_proj as ModelOpt does', (t) => compare(t, 'awq_qwen3_moe', 'nvfp4_awq'))
test('int4_awq keeps a shared expert\'s smoothing on it (Qwen2-MoE)', (t) => compare(t, 'awq_qwen2_moe', 'int4_awq'))
test('nvfp4_awq folds nothing in Qwen2-MoE, as ModelOpt does', (t) => compare(t, 'awq_qwen2_moe', 'nvfp4_awq'))

test('calibration progress counts each batch twice with an AWQ format: its statistics, then its search', async (t) => {
  const events = []
  const calibration = { ids: [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]], batchSize: 1 }
  const model = join(GOLDEN, 'awq_qwen3', 'source')
  await quantizeModel({ model, output: join(tempDir(), 'out'), format: 'int4_awq', calibration, kvCache: 'none', onProgress: (e) => events.push(e) })
  const calibrate = events.filter((e) => e.stage === 'calibrate')
  t.true(calibrate.every((e) => e.batches === 6), JSON.stringify(calibrate))
  t.like(calibrate[0], { layer: 0, batch: 1, batches: 6 })
  t.deepEqual(calibrate.filter((e) => e.batch === e.batches).map((e) => e.layer), [1, 2])
})

test('what the AWQ formats are not written for is refused before any work', async (t) => {
  const output = join(tempDir(), 'out')
  const calibration = { ids: [[1, 2, 3, 4, 5, 6, 7, 8]] }
  // MLA attention (DeepSeek-V3): its groups and norms are not the ones AWQ is written for.
  const mla = await t.throwsAsync(quantizeModel({ model: join(FIXTURES, 'deepseek_v3/hub'), output, format: 'int4_awq', calibration }))
  t.is(mla.code, 'E_MODEL_UNSUPPORTED')
  t.regex(mla.message, /'mla'/)
  // A recipe (MIXED_PRECISION with AWQ is not written).
  const source = join(GOLDEN, 'awq_qwen3', 'source')
  const recipe = { rules: [{ modules: '*.self_attn.*', format: 'fp8' }] }
  const mixed = await t.throwsAsync(quantizeModel({ model: source, output, format: 'int4_awq', calibration, recipe }))
  t.is(mixed.code, 'E_OPTION_INVALID')
  // compressed-tensors has no AWQ scheme here.
  const ct = await t.throwsAsync(quantizeModel({ model: source, output, format: 'w4a8_awq', calibration, exportFormat: 'compressed-tensors' }))
  t.is(ct.code, 'E_OPTION_INVALID')
})
