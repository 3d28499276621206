// The weight-only formats (w4a16_nvfp4, fp8_pc_pt, fp8_pb_wo, mxfp8, mxfp4) from the user's side: no calibration asked or accepted, any
// family detected (with or without a forward), what inspect reports, and the refusals that name what is missing.
// Bytes are compared with ModelOpt's exports in golden.spec.mjs.
import test from 'ava'
import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'

import { inspectModel, quantizeModel } from '../dist/index.js'
import { FIXTURES, ROOT, readTensors, tempDir } from './helpers/checkpoint.mjs'
import { materializeZoo, removeZooCheckpoint } from './helpers/zoo.mjs'

const MAIN = join(ROOT, 'dist', 'cli', 'main.js')
const cli = (...args) => spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8' })

test('a weight-only format takes no calibration, and a calibrated one needs it', async (t) => {
  const model = join(FIXTURES, 'qwen3_moe/hub')
  const output = join(tempDir(), 'out')
  await t.throwsAsync(quantizeModel({ model, output, format: 'w4a16_nvfp4', calibration: { data: 'x.jsonl' } }), {
    code: 'E_OPTION_INVALID',
    message: /format 'w4a16_nvfp4' is weight-only and runs no calibration/,
  })
  await t.throwsAsync(quantizeModel({ model, output, format: 'fp8_pc_pt', coverageReport: join(tempDir(), 'c.html') }), {
    code: 'E_OPTION_INVALID',
    message: /coverageReport: .* no expert coverage/,
  })
  await t.throwsAsync(quantizeModel({ model, output, format: 'nvfp4' }), {
    code: 'E_OPTION_INVALID',
    message: /format 'nvfp4' measures activation scales and needs calibration data \(the weight-only formats 'w4a16_nvfp4', 'fp8_pc_pt', 'fp8_pb_wo', 'mxfp8', 'mxfp4' need none\)/,
  })
  t.false(existsSync(output))
})

test('weight-only output: no input_scale, no coverage report, weights within the format precision', async (t) => {
  const output = join(tempDir(), 'out')
  const result = await quantizeModel({ model: join(FIXTURES, 'mixtral/hub'), output, format: 'fp8_pc_pt' })
  t.false(readdirSync(output).includes('moe-quant-coverage.html'))
  const tensors = readTensors(join(output, 'model.safetensors'))
  t.false(Object.keys(tensors).some((n) => n.endsWith('input_scale')))
  t.deepEqual(tensors['model.layers.0.block_sparse_moe.experts.3.w2.weight_scale'].shape, [64])
  // FP8 E4M3 with a per-row scale: relative error per weight ≤ 2^-4, so the mean squared error is far below 1e-2.
  t.is(result.layers.length, 2)
  for (const layer of result.layers) t.true(layer.relativeMse > 0 && layer.relativeMse < 2e-3, `${layer.relativeMse}`)
})

test('a family without a forward: calibrated formats refused in one line naming what is missing', async (t) => {
  // Cohere2-MoE (parallel attention and MLP), from the zoo: detected by structure, no forward yet.
  const model = materializeZoo('cohere2_moe', 'hub')
  try {
    const error = await t.throwsAsync(quantizeModel({ model, output: join(tempDir(), 'out'), format: 'fp8', calibration: { ids: [[1, 2, 3, 4]] } }), {
      code: 'E_MODEL_UNSUPPORTED',
    })
    t.false(error.message.includes('\n'))
    t.regex(
      error.message,
      /^forward not supported for Cohere2-MoE \(cohere2_moe\): Cohere's parallel layer \(attention and MLP both read one norm of the layer's input\), which the decoder layer does not apply \(the weight-only formats w4a16_nvfp4, fp8_pc_pt, fp8_pb_wo, mxfp8, mxfp4 need no forward\)$/,
    )
    const report = await inspectModel(model)
    for (const f of report.formats) {
      t.is(f.support, ['fp8', 'nvfp4', 'int4_awq', 'w4a8_awq', 'nvfp4_awq'].includes(f.format) ? 'refused' : 'weight_only', f.format)
      if (f.support === 'refused') t.regex(f.reason, /^E_MODEL_UNSUPPORTED: forward not supported/)
    }
  } finally {
    removeZooCheckpoint(model)
  }
})

test('inspect lists the formats each model takes, and why not', async (t) => {
  const qwen = await inspectModel(join(FIXTURES, 'qwen3_moe/hub'))
  t.deepEqual(qwen.formats.map((f) => [f.format, f.support]), [['fp8', 'calibrated'], ['nvfp4', 'calibrated'], ['w4a16_nvfp4', 'weight_only'], ['fp8_pc_pt', 'weight_only'], ['fp8_pb_wo', 'weight_only'], ['mxfp8', 'weight_only'], ['mxfp4', 'weight_only'], ['int4_awq', 'calibrated'], ['w4a8_awq', 'calibrated'], ['nvfp4_awq', 'calibrated']])
  // MXFP8 and MXFP4 scale blocks of 32 inputs, and the experts' down projections have 48: kept unquantized if asked.
  for (const f of qwen.formats.slice(5, 7)) t.is(f.reason, '2 linears stay unquantized: an input dimension is not a multiple of 32', f.format)
  // INT4 AWQ scales blocks of 128, and every input dimension of this fixture is 64 or 48.
  for (const f of qwen.formats.slice(7, 9)) t.is(f.reason, '10 linears stay unquantized: an input dimension is not a multiple of 128', f.format)
  const llama4 = await inspectModel(join(FIXTURES, 'llama4_text/hub'))
  // MXFP8: its experts (down projection input 48) would stay unquantized, so no stacked MXFP8 is written.
  t.deepEqual(llama4.formats.map((f) => f.support), ['calibrated', 'calibrated', 'weight_only', 'weight_only', 'refused', 'weight_only', 'weight_only', 'calibrated', 'calibrated', 'refused'])
  // NVFP4_AWQ takes every dimension of this fixture, so its stacked experts are refused (no AWQ for stacked experts).
  t.regex(llama4.formats[9].reason, /^E_MODEL_UNSUPPORTED: .*format 'nvfp4_awq' is not written for experts kept stacked/)
  t.regex(llama4.formats[4].reason, /^E_MODEL_UNSUPPORTED: .*format 'fp8_pb_wo' is not written for experts kept stacked/)
  const shown = cli('inspect', join(FIXTURES, 'qwen3_moe/hub'))
  t.is(shown.status, 0, shown.stderr)
  t.regex(shown.stdout, /w4a16_nvfp4 +W4A16_NVFP4 +weight-only/)
})

test('CLI: weight-only formats run without calibration flags and refuse them', (t) => {
  const out = join(tempDir(), 'out')
  const refused = cli('quantize', join(FIXTURES, 'qwen3_moe/hub'), '--format', 'w4a16_nvfp4', '--out', out, '--samples', '8')
  t.is(refused.status, 2)
  t.regex(refused.stderr, /--samples: --format w4a16_nvfp4 is weight-only and runs no calibration/)
  const ran = cli('quantize', join(FIXTURES, 'qwen3_moe/hub'), '--format', 'w4a16_nvfp4', '--out', out, '--scope', 'experts', '--json')
  t.is(ran.status, 0, ran.stderr)
  const result = JSON.parse(ran.stdout)
  t.is(result.format, 'w4a16_nvfp4')
  t.is(result.quantizedTensors, 2 * 8 * 3, 'experts only: 2 layers × 8 experts × 3 projections')
})

test('stacked expert biases are kept, not counted as weights to quantize (GPT-OSS)', async (t) => {
  const report = await inspectModel(join(FIXTURES, 'gpt_oss/hub'))
  const biases = report.tensors.keep.filter((k) => k.reason === 'expert bias').map((k) => k.name)
  t.deepEqual(biases.sort(), [0, 1].flatMap((l) => [`model.layers.${l}.mlp.experts.down_proj_bias`, `model.layers.${l}.mlp.experts.gate_up_proj_bias`]))
  t.false(report.tensors.quantize.some((n) => n.endsWith('_bias')))
})
