// quantizeModel() behaviour beyond the golden bytes: options, refusals, atomic output, cancellation,
// progress, exclusions, NVFP4 dimension rules and bad weights.
import test from 'ava'
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'

import { calibrateModel, inspectModel, quantizeModel } from '../dist/index.js'
import { FIXTURES, copyFixture, readTensors, tempDir, writeSyntheticQwen3 } from './helpers/checkpoint.mjs'

const calibration = { ids: [[1, 5, 9, 13, 17, 21, 25, 29], [2, 4, 6, 8, 10, 12, 14, 16]], samples: 2, seqLen: 8 }
const base = (output, extra = {}) => ({ model: join(FIXTURES, 'qwen3_moe/hub'), output, format: 'nvfp4', calibration, coverageReport: false, ...extra })

/** Nothing but `keep` in the output's parent: no partial output, no temporary directory. */
function assertClean(t, parent, keep = []) {
  t.deepEqual(readdirSync(parent).filter((f) => !keep.includes(f)), [], 'no output or temporary files left behind')
}

test('a full run reports sizes, errors per layer, stages and progress, and writes the coverage report', async (t) => {
  const parent = tempDir()
  const output = join(parent, 'out')
  const events = []
  const result = await quantizeModel({ ...base(output), coverageReport: undefined, onProgress: (e) => events.push(e) })
  t.is(result.output, output)
  // bf16 embeddings and lm_head dominate this tiny model; the experts shrink 3.6×.
  t.true(result.sizeBytes.after < result.sizeBytes.before * 0.6, JSON.stringify(result.sizeBytes))
  t.deepEqual(result.layers.map((l) => l.layer), [0, 1])
  // NVFP4 on random weights: a relative MSE of roughly 1%.
  t.true(result.layers.every((l) => l.relativeMse > 1e-4 && l.relativeMse < 0.05 && l.tensors === 28), JSON.stringify(result.layers))
  t.is(result.quantizedTensors, 56)
  t.is(result.quantizedOnDevice, 0, 'on the CPU every weight is quantized on the CPU')
  t.is(result.seconds.quantizeOnDevice, 0)
  t.is(result.coverageReportPath, join(output, 'moe-quant-coverage.html'))
  t.true(readFileSync(result.coverageReportPath, 'utf8').includes('Expert coverage'))
  t.deepEqual(readdirSync(dirname(output)), ['out'], 'the report is inside the output')
  t.true(['calibrate', 'quantize', 'total'].every((k) => result.seconds[k] >= 0))
  t.deepEqual([...new Set(events.map((e) => e.stage))], ['calibrate', 'quantize', 'write'])
  t.true(events.at(-1).bytesWritten > 0)
  // Other input files are copied; the output is recognised as quantized.
  for (const file of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) t.true(existsSync(join(output, file)), file)
  const again = await t.throwsAsync(quantizeModel(base(join(parent, 'again'), { model: output })))
  t.is(again.code, 'E_CHECKPOINT_ALREADY_QUANTIZED')
  t.true(again.message.includes(output))
})

test('the output is refused when it is the input, inside it, or not empty without overwrite', async (t) => {
  const model = copyFixture('qwen3_moe/hub')
  for (const output of [model, join(model, 'quantized')]) {
    const error = await t.throwsAsync(quantizeModel(base(output, { model })))
    t.is(error.code, 'E_OUTPUT_INVALID', error.message)
  }
  const busy = join(tempDir(), 'busy')
  mkdirSync(busy)
  writeFileSync(join(busy, 'keep.txt'), 'user data')
  const error = await t.throwsAsync(quantizeModel(base(busy)))
  t.is(error.code, 'E_OUTPUT_INVALID')
  t.is(readFileSync(join(busy, 'keep.txt'), 'utf8'), 'user data')
  await quantizeModel(base(busy, { overwrite: true }))
  t.false(existsSync(join(busy, 'keep.txt')))
  t.true(existsSync(join(busy, 'model.safetensors')))
})

test('aborting mid-run rejects with E_CANCELLED and leaves nothing behind', async (t) => {
  const parent = tempDir()
  const controller = new AbortController()
  const error = await t.throwsAsync(
    quantizeModel(base(join(parent, 'out'), { signal: controller.signal, onProgress: () => controller.abort() })),
  )
  t.is(error.code, 'E_CANCELLED')
  assertClean(t, parent)
})

test('a NaN in a weight is an error naming the tensor, and leaves nothing behind', async (t) => {
  const parent = tempDir()
  const model = writeSyntheticQwen3(join(parent, 'model'), {
    poison: { tensor: 'model.layers.0.mlp.experts.2.up_proj.weight', index: 7, value: Number.NaN },
  })
  const error = await t.throwsAsync(quantizeModel(base(join(parent, 'out'), { model, calibration: { ids: [[1, 2, 3, 4]], samples: 1, seqLen: 4 } })))
  t.is(error.code, 'E_TENSOR_NON_FINITE')
  t.true(error.message.includes('model.layers.0.mlp.experts.2.up_proj.weight'), error.message)
  assertClean(t, parent, ['model'])
})

test('NVFP4 needs input dimensions that are multiples of 16: an error naming the tensor, or kept and listed', async (t) => {
  const parent = tempDir()
  const model = writeSyntheticQwen3(join(parent, 'model'), { intermediate: 40 })
  const options = { model, calibration: { ids: [[1, 2, 3, 4]], samples: 1, seqLen: 4 } }
  const error = await t.throwsAsync(quantizeModel(base(join(parent, 'out'), options)))
  t.is(error.code, 'E_TENSOR_SHAPE')
  t.true(error.message.includes('model.layers.0.mlp.experts') && error.message.includes('I = 40'), error.message)
  assertClean(t, parent, ['model'])

  const result = await quantizeModel(base(join(parent, 'out'), { ...options, indivisible: 'keep' }))
  t.deepEqual(result.keptIndivisible, ['model.layers.0.mlp.experts'])
  t.true(result.warnings.some((w) => w.includes('not a multiple of 16')))
  const tensors = readTensors(join(parent, 'out', 'model.safetensors'))
  t.is(tensors['model.layers.0.mlp.experts.0.down_proj.weight'].dtype, 'BF16')
  t.is(tensors['model.layers.0.self_attn.q_proj.weight'].dtype, 'U8')
  // FP8 has no such constraint.
  const fp8 = await quantizeModel(base(join(parent, 'fp8'), { ...options, format: 'fp8' }))
  t.deepEqual(fp8.keptIndivisible, [])
})

test('exclude patterns keep modules unquantized and list them in exclude_modules', async (t) => {
  const output = join(tempDir(), 'out')
  await quantizeModel(base(output, { exclude: ['model.layers.0.self_attn.*'] }))
  const tensors = readTensors(join(output, 'model.safetensors'))
  t.is(tensors['model.layers.0.self_attn.q_proj.weight'].dtype, 'BF16')
  t.false('model.layers.0.self_attn.q_proj.weight_scale' in tensors)
  t.is(tensors['model.layers.1.self_attn.q_proj.weight'].dtype, 'U8')
  const exclude = JSON.parse(readFileSync(join(output, 'hf_quant_config.json'), 'utf8')).quantization.exclude_modules
  t.true(exclude.some((m) => m.startsWith('model.layers.0.self_attn')), JSON.stringify(exclude))
})

test('two quantizations run at once in one process', async (t) => {
  const parent = tempDir()
  const [a, b] = await Promise.all([
    quantizeModel(base(join(parent, 'a'), { format: 'fp8' })),
    quantizeModel(base(join(parent, 'b'), { model: join(FIXTURES, 'mixtral/hub_sharded') })),
  ])
  t.is(a.format, 'fp8')
  t.is(b.format, 'nvfp4')
  t.deepEqual(readdirSync(parent).sort(), ['a', 'b'])
  const inspected = await inspectModel(join(parent, 'b'))
  t.is(inspected.moeLayers[0].experts, 8)
})

test('small shards give a sharded output with an index', async (t) => {
  const output = join(tempDir(), 'out')
  await quantizeModel(base(output, { maxShardSize: '100KB' }))
  const index = JSON.parse(readFileSync(join(output, 'model.safetensors.index.json'), 'utf8'))
  const shards = new Set(Object.values(index.weight_map))
  t.true(shards.size > 1)
  for (const shard of shards) t.true(existsSync(join(output, shard)))
})

test('options are validated with messages naming the option', async (t) => {
  const output = join(tempDir(), 'out')
  const cases = [
    [{ format: 'int3' }, 'format'],
    [{ maxShardSize: '5 parsecs' }, 'maxShardSize'],
    [{ indivisible: 'maybe' }, 'indivisible'],
    [{ calibration: { ids: calibration.ids, samples: 0 } }, 'calibration.samples'],
    [{ exclude: 'lm_head' }, 'exclude'],
  ]
  for (const [extra, name] of cases) {
    const error = await t.throwsAsync(quantizeModel(base(output, extra)))
    t.is(error.code, 'E_OPTION_INVALID', name)
    t.true(error.message.startsWith(name), error.message)
  }
  const cuda = await t.throwsAsync(quantizeModel(base(output, { device: 'cuda:0' })))
  t.is(cuda.code, 'E_DEVICE_UNAVAILABLE')
  assertClean(t, dirname(output))
})

test('unknown options are refused with the valid ones and the closest match, at every level', async (t) => {
  const output = join(tempDir(), 'out')
  const cases = [
    [{ kvcache: 'fp8' }, /^kvcache: unknown option \(did you mean kvCache\?\); valid options: model, output, format, calibration, .*kvCache, .*signal$/],
    [{ overwirte: true }, /^overwirte: unknown option \(did you mean overwrite\?\)/],
    [{ calibration: { ...calibration, seqlen: 8 } }, /^calibration\.seqlen: unknown option \(did you mean calibration\.seqLen\?\); valid options: calibration\.data, /],
  ]
  for (const [extra, message] of cases) {
    const error = await t.throwsAsync(quantizeModel(base(output, extra)))
    t.is(error.code, 'E_OPTION_INVALID')
    t.regex(error.message, message)
  }
  const calibrated = await t.throwsAsync(calibrateModel({ model: join(FIXTURES, 'qwen3_moe/hub'), calibration, device_: 'cpu' }))
  t.regex(calibrated.message, /^device_: unknown option \(did you mean device\?\)/)
  t.false(existsSync(output))
})

test('an exclude pattern that matches no module is refused before any work', async (t) => {
  const parent = tempDir()
  const error = await t.throwsAsync(quantizeModel(base(join(parent, 'out'), { exclude: ['model.layers.0.self_attn.*', '*visual*'] })))
  t.is(error.code, 'E_OPTION_INVALID')
  t.regex(error.message, /^exclude: "\*visual\*" matches no module of this model/)
  t.deepEqual(readdirSync(parent), [])
})
