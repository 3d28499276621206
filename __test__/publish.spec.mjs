// When the output appears, and what cancelling or a failing progress callback does to it: the overwrite
// decision holds at publish time, a cancellation before the publish leaves a previous output as it was,
// and a callback that throws rejects the call (its error) with nothing published and the process alive.
import test from 'ava'
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { calibrateModel, evaluateModel, quantizeModel } from '../dist/index.js'
import { FIXTURES, tempDir } from './helpers/checkpoint.mjs'

const MODEL = join(FIXTURES, 'qwen3_moe/hub')
const calibration = { ids: [[1, 5, 9, 13, 17, 21, 25, 29], [2, 4, 6, 8, 10, 12, 14, 16]], samples: 2, seqLen: 8 }
const base = (output, extra = {}) => ({ model: MODEL, output, format: 'fp8', calibration, coverageReport: false, ...extra })

/** A previous output at `dir`, recognisable by a marker file. */
function previousOutput(dir) {
  mkdirSync(dir)
  writeFileSync(join(dir, 'previous.txt'), 'the previous output')
}

const leftovers = (parent) => readdirSync(parent).filter((f) => f.includes('.moe-quant-tmp-'))

for (const stage of ['calibrate', 'quantize', 'write']) {
  test(`aborting from the ${stage} progress event with overwrite keeps the previous output`, async (t) => {
    const parent = tempDir()
    const output = join(parent, 'out')
    previousOutput(output)
    const controller = new AbortController()
    const onProgress = (event) => {
      if (event.stage === stage) controller.abort()
    }
    const error = await t.throwsAsync(quantizeModel(base(output, { overwrite: true, signal: controller.signal, onProgress })))
    t.is(error.code, 'E_CANCELLED')
    t.is(readFileSync(join(output, 'previous.txt'), 'utf8'), 'the previous output')
    t.deepEqual(readdirSync(parent), ['out'])
  })
}

test('an abort after the call resolved changes nothing: the published output stays', async (t) => {
  const parent = tempDir()
  const output = join(parent, 'out')
  const controller = new AbortController()
  const result = await quantizeModel(base(output, { signal: controller.signal }))
  controller.abort()
  t.is(result.output, output)
  t.true(existsSync(join(output, 'model.safetensors')))
})

for (const stage of ['calibrate', 'quantize', 'write']) {
  test(`a progress callback that throws at ${stage} rejects with its error and publishes nothing`, async (t) => {
    const parent = tempDir()
    const output = join(parent, 'out')
    const thrown = new Error(`callback failed at ${stage}`)
    const error = await t.throwsAsync(
      quantizeModel(
        base(output, {
          onProgress: (event) => {
            if (event.stage === stage) throw thrown
          },
        }),
      ),
    )
    t.is(error, thrown)
    t.deepEqual(readdirSync(parent), [])
  })
}

test('a throwing callback of calibrateModel and evaluateModel rejects with its error', async (t) => {
  const thrown = new Error('calibration callback failed')
  const error = await t.throwsAsync(calibrateModel({ model: MODEL, calibration, onProgress: () => { throw thrown } }))
  t.is(error, thrown)
  const evaluation = new Error('evaluation callback failed')
  const failed = await t.throwsAsync(evaluateModel(MODEL, MODEL, { samples: 1, seqLen: 4, onProgress: () => { throw evaluation } }))
  t.is(failed, evaluation)
  // The process goes on: the next call works.
  t.true((await calibrateModel({ model: MODEL, calibration })).tokens > 0)
})

test('progress events all arrive before the result, in order', async (t) => {
  const events = []
  const result = await quantizeModel(base(join(tempDir(), 'out'), { onProgress: (e) => events.push(e) }))
  t.is(events.at(-1).stage, 'write')
  t.is(events.filter((e) => e.stage === 'quantize').length, result.layers.length)
  const layers = events.filter((e) => e.stage === 'calibrate').map((e) => e.layer)
  t.deepEqual(layers, [...layers].sort((a, b) => a - b))
})

test('two runs to the same output without overwrite: one publishes, the other is refused and removes its work', async (t) => {
  const parent = tempDir()
  const output = join(parent, 'out')
  const results = await Promise.allSettled([quantizeModel(base(output)), quantizeModel(base(output, { format: 'nvfp4' }))])
  const fulfilled = results.filter((r) => r.status === 'fulfilled')
  const rejected = results.filter((r) => r.status === 'rejected')
  t.is(fulfilled.length, 1)
  t.is(rejected.length, 1)
  t.is(rejected[0].reason.code, 'E_OUTPUT_INVALID', rejected[0].reason.message)
  const algo = JSON.parse(readFileSync(join(output, 'hf_quant_config.json'), 'utf8')).quantization.quant_algo
  t.is(algo, fulfilled[0].value.format.toUpperCase(), 'the output is the one that was published')
  t.deepEqual(leftovers(parent), [])
})

test('calibration progress moves within a layer: batches done of the next layer', async (t) => {
  const events = []
  const calibration3 = { ids: [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]], batchSize: 1 }
  await quantizeModel(base(join(tempDir(), 'out'), { calibration: calibration3, onProgress: (e) => events.push(e) }))
  const within = events.filter((e) => e.stage === 'calibrate' && e.batch < e.batches)
  t.true(within.length >= 1, JSON.stringify(events))
  t.like(within[0], { layer: 0, batch: 1, batches: 3 })
  const layerDone = events.filter((e) => e.stage === 'calibrate' && e.batch === e.batches).map((e) => e.layer)
  t.deepEqual(layerDone, [1, 2])
  const calibrated = []
  await calibrateModel({ model: MODEL, calibration: calibration3, onProgress: (e) => calibrated.push(e) })
  t.like(calibrated[0], { stage: 'calibrate', layer: 0, batch: 1, batches: 3 })
})
