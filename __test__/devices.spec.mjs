// Several devices (`devices`, `--devices`): the calibration batches dealt out in order, each device running its share
// through its own copy of every layer, what they record merged. The output must be byte for byte what one device
// writes. On a machine without several GPUs the same code runs with several CPU entries (one thread each). Four
// calibration batches: two devices take 2 + 2, three take 2 + 1 + 1. (That the AWQ statistics' sums come out bit for
// bit, which whole runs this small would rarely show in their bytes, is checked in crates/core/src/awq/search.rs.)
import test from 'ava'
import { readdirSync, readFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'

import { calibrateModel, quantizeModel } from '../dist/index.js'
import { FIXTURES, readTensors, rows, ROOT, tempDir, writeSyntheticQwen3 } from './helpers/checkpoint.mjs'

const GOLDEN = join(FIXTURES, 'golden')
const calibIds = readTensors(join(GOLDEN, 'calib_ids.safetensors')).input_ids
const CALIB_ROWS = rows(calibIds.values, calibIds.shape[1])
const MAIN = join(ROOT, 'dist', 'cli', 'main.js')

/** The output files that hold weights and metadata a consumer reads (the run's own report names its devices). */
function consumed(dir) {
  const names = readdirSync(dir).filter((name) => name.endsWith('.safetensors') || name === 'config.json' || name === 'hf_quant_config.json')
  return Object.fromEntries(names.sort().map((name) => [name, readFileSync(join(dir, name))]))
}

function sameBytes(t, a, b, what) {
  t.deepEqual(Object.keys(a), Object.keys(b), what)
  for (const name of Object.keys(a)) {
    const { quantizer: _a, ...ours } = name === 'hf_quant_config.json' ? JSON.parse(a[name]) : {}
    const { quantizer: _b, ...theirs } = name === 'hf_quant_config.json' ? JSON.parse(b[name]) : {}
    if (name === 'hf_quant_config.json') t.deepEqual(ours, theirs, `${what}: ${name}`)
    else t.true(a[name].equals(b[name]), `${what}: ${name} differs`)
  }
}

async function run(model, format, where, extra = {}) {
  const output = join(tempDir(), 'out')
  await quantizeModel({ model, output, format, calibration: { ids: CALIB_ROWS, batchSize: 1 }, ...where, ...extra })
  return output
}

for (const [kase, format] of [
  ['awq_qwen3_moe', 'int4_awq'],
  ['awq_qwen3_moe', 'nvfp4_awq'],
  ['awq_qwen2_moe', 'w4a8_awq'],
]) {
  test(`${format} on ${kase}: two and three devices write what one writes (the AWQ search merged in batch order)`, async (t) => {
    const model = join(GOLDEN, kase, 'source')
    const one = consumed(await run(model, format, { device: 'cpu' }, { kvCache: 'none' }))
    for (const devices of [['cpu', 'cpu'], ['cpu', 'cpu', 'cpu']]) {
      sameBytes(t, consumed(await run(model, format, { devices }, { kvCache: 'none' })), one, `${devices.length} devices`)
    }
  })
}

test('fp8 with a calibrated KV cache on a MoE: three devices write what one writes', async (t) => {
  const model = join(FIXTURES, 'qwen3_moe', 'hub')
  const one = consumed(await run(model, 'fp8', { device: 'cpu' }, { kvCache: 'fp8' }))
  const three = await run(model, 'fp8', { devices: ['cpu', 'cpu', 'cpu'] }, { kvCache: 'fp8' })
  sameBytes(t, consumed(three), one, '3 devices')
  const report = JSON.parse(readFileSync(join(three, 'moe-quant-run.json'), 'utf8'))
  t.deepEqual(report.options.devices, ['cpu', 'cpu', 'cpu'])
})

test('calibrateModel on three devices records what one records', async (t) => {
  const model = join(FIXTURES, 'qwen3_moe', 'hub')
  const calibration = { data: join(ROOT, 'examples', 'calibration.jsonl'), samples: 6, seqLen: 32, batchSize: 1 }
  const recorded = ({ samples, tokens, inputAmax, kvAmax, experts, uncalibratedExperts }) => ({ samples, tokens, inputAmax, kvAmax, experts, uncalibratedExperts })
  const one = await calibrateModel({ model, calibration, device: 'cpu' })
  const three = await calibrateModel({ model, calibration, devices: ['cpu', 'cpu', 'cpu'] })
  t.deepEqual(recorded(three), recorded(one))
  t.true(one.experts.some((layer) => layer.tokens.some((n) => n > 0)))
  t.false(three.warnings.some((w) => w.startsWith('devices:')), 'six batches for three devices')
  // Two batches for three devices: one device gets none, and the result says so.
  const idle = await calibrateModel({ model, calibration: { ...calibration, samples: 2 }, devices: ['cpu', 'cpu', 'cpu'] })
  t.true(idle.warnings.includes('devices: 2 calibration batch(es) for 3 devices; 1 of them had no share and ran nothing (more samples or a smaller batchSize would use them)'), idle.warnings.join('\n'))
  const error = await t.throwsAsync(calibrateModel({ model, calibration, device: 'cpu', devices: ['cpu'] }))
  t.is(error.code, 'E_OPTION_INVALID')
})

test('devices: refused before any work when invalid or given with device', async (t) => {
  const model = join(FIXTURES, 'qwen3_moe', 'hub')
  for (const [options, message] of [
    [{ devices: ['cuda:0', 'cuda:0'] }, /devices: expected a non-empty array of distinct GPUs/],
    [{ devices: ['cpu', 'cuda:1'] }, /devices: expected/],
    [{ devices: [] }, /devices: expected/],
    [{ devices: 'cuda:0' }, /devices: expected/],
    [{ device: 'cpu', devices: ['cpu', 'cpu'] }, /not both/],
  ]) {
    const output = join(tempDir(), 'out')
    const error = await t.throwsAsync(quantizeModel({ model, output, format: 'fp8', calibration: { ids: CALIB_ROWS }, ...options }))
    t.is(error.code, 'E_OPTION_INVALID', JSON.stringify(options))
    t.regex(error.message, message)
  }
})

test('--devices splits the calibration from the command line; with --device it is a usage error', (t) => {
  const model = join(FIXTURES, 'qwen3_moe', 'hub')
  const out = join(tempDir(), 'out')
  const cli = (...args) => spawnSync(process.execPath, [MAIN, 'quantize', model, '--format', 'fp8', '--samples', '4', '--seq-len', '16', '--batch-size', '1', ...args], { encoding: 'utf8' })
  const ok = cli('--out', out, '--devices', 'cpu,cpu')
  t.is(ok.status, 0, ok.stderr)
  t.deepEqual(JSON.parse(readFileSync(join(out, 'moe-quant-run.json'), 'utf8')).options.devices, ['cpu', 'cpu'])
  const both = cli('--out', join(tempDir(), 'o'), '--device', 'cpu', '--devices', 'cpu,cpu')
  t.is(both.status, 2)
  t.regex(both.stderr, /--device or --devices, not both/)
  const bad = cli('--out', join(tempDir(), 'o'), '--devices', 'cuda:0,cuda:0')
  t.is(bad.status, 2)
  t.regex(bad.stderr, /--devices: expected distinct GPUs/)
})

test('a calibration that stops being finite on a later device is refused as on one, nothing written', async (t) => {
  // Token 3's embedding row is NaN, and only the last of three batches uses it: the third device's share.
  const poisoned = writeSyntheticQwen3(join(tempDir(), 'model'), { poison: { tensor: 'model.embed_tokens.weight', index: 3 * 64 + 5, value: Number.NaN } })
  const ids = [[1, 2, 4, 5, 6, 7, 8, 9], [10, 11, 12, 13, 14, 15, 16, 17], [20, 21, 3, 22, 23, 24, 25, 26]]
  // Layer 1's experts scaled to 1e19: act(gate)·up overflows f32 in every device's share.
  const overflowing = writeSyntheticQwen3(join(tempDir(), 'model'), { layers: 3, scales: { 'model.layers.1.mlp.experts.': 1e19 } })
  for (const [model, code, needles] of [
    [poisoned, 'E_TENSOR_NON_FINITE', ['model.embed_tokens.weight', 'element 197', 'token 3']],
    [overflowing, 'E_ACTIVATION_NON_FINITE', ['decoder layer 1', 'the input of model.layers.1.mlp.experts (down)']],
  ]) {
    const parent = tempDir()
    const calibration = { ids, samples: 3, seqLen: 8, batchSize: 1 }
    const run = quantizeModel({ model, output: join(parent, 'out'), format: 'fp8', calibration, devices: ['cpu', 'cpu', 'cpu'], coverageReport: false })
    const error = await t.throwsAsync(run)
    t.is(error.code, code, error.message)
    for (const needle of needles) t.true(error.message.includes(needle), `${error.message} lacks ${needle}`)
    t.deepEqual(readdirSync(parent), [], 'nothing written')
  }
})
