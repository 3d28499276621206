// Calibration that stops being finite is refused with a coded error naming the layer and the weight or
// activation where it happened, never turned into a silent input scale of 1.0: a NaN embedding or router
// weight, weights that overflow the activations, and config values that make the forward NaN.
import test from 'ava'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'

import { calibrateModel, quantizeModel } from '../dist/index.js'
import { copyFixture, readJson, tempDir, writeJson, writeSyntheticQwen3 } from './helpers/checkpoint.mjs'

const calibration = { ids: [[1, 2, 3, 4, 5, 6, 7, 8]], samples: 1, seqLen: 8 }

/** Runs quantizeModel and calibrateModel on `model`; both must reject with `code` and every needle. */
async function refused(t, model, code, needles) {
  const parent = tempDir()
  const runs = [
    quantizeModel({ model, output: join(parent, 'out'), format: 'fp8', calibration, coverageReport: false }),
    calibrateModel({ model, calibration }),
  ]
  for (const run of runs) {
    const error = await t.throwsAsync(run)
    t.is(error.code, code, error.message)
    for (const needle of needles) t.true(error.message.includes(needle), `${error.message} lacks ${needle}`)
  }
  t.deepEqual(readdirSync(parent), [], 'nothing written')
}

test('a NaN in the embedding row of a calibration token names the embedding and the token', async (t) => {
  // Row 3 of the embedding (hidden 64): element 3 · 64 + 5.
  const model = writeSyntheticQwen3(join(tempDir(), 'model'), { poison: { tensor: 'model.embed_tokens.weight', index: 3 * 64 + 5, value: Number.NaN } })
  await refused(t, model, 'E_TENSOR_NON_FINITE', ['model.embed_tokens.weight', 'element 197', 'token 3'])
})

test('a NaN in a router weight names the router weight', async (t) => {
  const model = writeSyntheticQwen3(join(tempDir(), 'model'), { layers: 2, poison: { tensor: 'model.layers.1.mlp.gate.weight', index: 10, value: Number.NaN } })
  await refused(t, model, 'E_TENSOR_NON_FINITE', ['model.layers.1.mlp.gate.weight', 'element 10', 'calibration activations'])
})

test('finite weights whose activations overflow name the first layer and activation that is not finite', async (t) => {
  // Layer 1's experts scaled to 1e19: act(gate)·up reaches 1e40, beyond f32, in the experts' down input.
  const model = writeSyntheticQwen3(join(tempDir(), 'model'), { layers: 3, scales: { 'model.layers.1.mlp.experts.': 1e19 } })
  await refused(t, model, 'E_ACTIVATION_NON_FINITE', ['decoder layer 1', 'the input of model.layers.1.mlp.experts (down)'])
})

for (const [key, value, expected] of [
  ['rope_theta', 0, 'a positive number'],
  ['rope_theta', -10000, 'a positive number'],
  ['rms_norm_eps', -1e-6, 'a number ≥ 0'],
]) {
  test(`config.json with ${key} = ${value} is refused before any work`, async (t) => {
    const model = copyFixture('qwen3_moe/hub')
    const config = readJson(join(model, 'config.json'))
    if (key === 'rope_theta') config.rope_parameters = { ...config.rope_parameters, rope_theta: value }
    else config[key] = value
    writeJson(join(model, 'config.json'), config)
    await refused(t, model, 'E_CONFIG_INVALID', [key, expected])
  })
}
