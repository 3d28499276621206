// Hostile input through the public API: crafted checkpoints, index files, config.json values, tokenizers and
// calibration files must fail fast with their stable code and a message naming the file (and the tensor or
// field), never crash or hang the Node process, and never allocate what a file merely claims. The precise
// per-allocation accounting lives in crates/core/tests/hostile.rs; here the process's peak RSS is watched.
import test from 'ava'
import { execFileSync } from 'node:child_process'
import { closeSync, mkdirSync, openSync, rmSync, symlinkSync, writeFileSync, writeSync, ftruncateSync } from 'node:fs'
import { join } from 'node:path'

import { calibrateModel, inspectModel, isQuantizedCheckpoint, quantizeModel } from '../dist/index.js'
import { FIXTURES, readJson, tempDir, writeJson, writeSafetensors, writeSyntheticQwen3 } from './helpers/checkpoint.mjs'

/** A small valid Qwen3-MoE checkpoint (2 layers, 4 experts) in a fresh directory. */
function validModel() {
  return writeSyntheticQwen3(join(tempDir(), 'model'), { layers: 2 })
}

/** Writes a safetensors file whose header is the given text, verbatim, followed by `data` bytes. */
function writeHeaderText(path, headerText, data = Buffer.alloc(0), declaredLength) {
  const header = Buffer.from(headerText)
  const length = Buffer.alloc(8)
  length.writeBigUInt64LE(declaredLength ?? BigInt(header.length))
  writeFileSync(path, Buffer.concat([length, header, data]))
}

const peakRssBytes = () => process.resourceUsage().maxRSS * 1024
const ALLOWED_GROWTH = 256 * 1024 * 1024

/**
 * Awaits `promise`, expecting a MoeQuantError with `code` whose message mentions every needle; checks that it
 * came within `seconds` and that the process's peak RSS grew by less than 256 MB (a claimed terabyte would
 * show, or kill the process).
 */
async function rejects(t, promise, code, needles, seconds = 20) {
  const before = peakRssBytes()
  const started = Date.now()
  const error = await t.throwsAsync(promise)
  const elapsed = (Date.now() - started) / 1000
  t.is(error?.code, code, error?.message)
  for (const needle of needles) t.true(error?.message.includes(needle), `${JSON.stringify(error?.message)} lacks ${JSON.stringify(needle)}`)
  t.true(elapsed < seconds, `took ${elapsed}s`)
  t.true(peakRssBytes() - before < ALLOWED_GROWTH, `peak RSS grew by ${peakRssBytes() - before} bytes`)
  return error
}

// ---- safetensors headers --------------------------------------------------------------------------------

const HUGE = '{"w":{"dtype":"U8","shape":[1048576,1048576],"data_offsets":[0,1099511627776]}}'
const HEADERS = [
  ['element count overflowing u64', '{"w":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,16]}}', 16, 'E_CHECKPOINT_HEADER_INVALID', ['tensor w', 'overflows']],
  ['a shape fitting u64 with small data_offsets', '{"w":{"dtype":"U8","shape":[1099511627776],"data_offsets":[0,16]}}', 16, 'E_CHECKPOINT_HEADER_INVALID', ['tensor w', '1099511627776']],
  ['2^40 elements claimed by a 100-byte file', HUGE, 100 - 8 - HUGE.length, 'E_CHECKPOINT_TRUNCATED', ['1099511627776']],
  ['overlapping ranges', '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', 12, 'E_CHECKPOINT_HEADER_INVALID', ['tensor a', 'tensor b', 'overlap']],
  ['a deeply nested header', `{"w":${'['.repeat(100000)}${']'.repeat(100000)}}`, 0, 'E_CHECKPOINT_HEADER_INVALID', ['tensor w']],
  ['a header that is not an object', '[1,2,3]', 0, 'E_CHECKPOINT_HEADER_INVALID', ['not valid safetensors JSON']],
]

for (const [what, header, dataBytes, code, needles] of HEADERS) {
  test.serial(`inspect refuses ${what}`, async (t) => {
    const dir = validModel()
    writeHeaderText(join(dir, 'model.safetensors'), header, Buffer.alloc(dataBytes))
    await rejects(t, inspectModel(dir), code, ['model.safetensors', ...needles])
  })
}

test.serial('inspect refuses a header length of 2^63', async (t) => {
  const dir = validModel()
  writeHeaderText(join(dir, 'model.safetensors'), '{}', Buffer.alloc(0), 1n << 63n)
  await rejects(t, inspectModel(dir), 'E_CHECKPOINT_HEADER_INVALID', ['model.safetensors', '100 MB', '9223372036854775808'])
})

test.serial('inspect refuses a header of 100 MB of spaces', async (t) => {
  const dir = validModel()
  const path = join(dir, 'model.safetensors')
  const fd = openSync(path, 'w')
  const length = Buffer.alloc(8)
  length.writeBigUInt64LE(100_000_000n)
  writeSync(fd, length)
  const spaces = Buffer.alloc(1 << 20, 0x20)
  let written = 0
  while (written < 100_000_000) written += writeSync(fd, spaces, 0, Math.min(spaces.length, 100_000_000 - written))
  closeSync(fd)
  await rejects(t, inspectModel(dir), 'E_CHECKPOINT_HEADER_INVALID', ['model.safetensors', 'not valid safetensors JSON'])
})

// ---- index files ----------------------------------------------------------------------------------------

/** A sharded directory: a valid model.safetensors renamed 1.safetensors, and the given weight_map. */
function shardedModel(weightMap) {
  const dir = validModel()
  execFileSync('mv', [join(dir, 'model.safetensors'), join(dir, '1.safetensors')])
  writeJson(join(dir, 'model.safetensors.index.json'), { metadata: {}, weight_map: weightMap })
  return dir
}

for (const name of ['../x.safetensors', '/etc/passwd', 'shard/../../x.safetensors']) {
  test.serial(`inspect refuses an index naming ${name}`, async (t) => {
    const dir = shardedModel({ 'model.norm.weight': name })
    writeSafetensors(join(dir, '..', 'x.safetensors'), { 'model.norm.weight': { dtype: 'F32', shape: [1] } })
    await rejects(t, inspectModel(dir), 'E_CHECKPOINT_INDEX_INVALID', ['model.safetensors.index.json', 'model.norm.weight', 'inside the model directory'])
  })
}

test.serial('inspect refuses file and directory symlinks leaving the model directory', async (t) => {
  const dir = shardedModel({ 'model.norm.weight': 'link.safetensors' })
  const outside = join(dir, '..', 'outside')
  mkdirSync(outside)
  writeSafetensors(join(outside, 'x.safetensors'), { 'model.norm.weight': { dtype: 'F32', shape: [1] } })
  symlinkSync(join(outside, 'x.safetensors'), join(dir, 'link.safetensors'))
  await rejects(t, inspectModel(dir), 'E_CHECKPOINT_INDEX_INVALID', ['link.safetensors', 'outside the model directory'])

  symlinkSync('../outside', join(dir, 'sub'))
  writeJson(join(dir, 'model.safetensors.index.json'), { weight_map: { 'model.norm.weight': 'sub/x.safetensors' } })
  await rejects(t, inspectModel(dir), 'E_CHECKPOINT_INDEX_INVALID', ['sub/x.safetensors', 'outside the model directory'])
})

test.serial('inspect refuses an index with a million entries naming one small shard', async (t) => {
  const dir = shardedModel({})
  const entries = new Array(1_000_000)
  for (let i = 0; i < entries.length; i++) entries[i] = `"t${i}":"1.safetensors"`
  writeFileSync(join(dir, 'model.safetensors.index.json'), `{"weight_map":{${entries.join(',')}}}`)
  await rejects(t, inspectModel(dir), 'E_CHECKPOINT_INDEX_INVALID', ['model.safetensors.index.json', '1.safetensors', 'does not hold it'])
})

test.serial('inspect refuses a deeply nested index', async (t) => {
  const dir = shardedModel({})
  writeFileSync(join(dir, 'model.safetensors.index.json'), `{"weight_map":${'{"a":'.repeat(100000)}`)
  await rejects(t, inspectModel(dir), 'E_CHECKPOINT_INDEX_INVALID', ['model.safetensors.index.json', 'not valid JSON'])
})

// ---- config.json ----------------------------------------------------------------------------------------

/** A valid model whose config.json has `patch` applied. */
function modelWithConfig(patch) {
  const dir = validModel()
  writeJson(join(dir, 'config.json'), { ...readJson(join(dir, 'config.json')), ...patch })
  return dir
}

const CONFIG_CASES = [
  ['hidden_size', 0],
  ['hidden_size', -64],
  ['hidden_size', 64.5],
  ['hidden_size', 2 ** 53],
  ['hidden_size', '64'],
  ['hidden_size', [64]],
  ['num_hidden_layers', 0],
  ['num_hidden_layers', -1],
  ['num_hidden_layers', 1e9],
  ['num_hidden_layers', 1.5],
  ['num_experts', 0],
  ['num_experts', 1e12],
  ['num_experts', 4.5],
  ['num_experts_per_tok', 1e12],
  ['moe_intermediate_size', 2 ** 40],
  ['vocab_size', 1e15],
  ['head_dim', -16],
  ['num_attention_heads', 1e10],
]

for (const [field, value] of CONFIG_CASES) {
  test.serial(`inspect refuses config.json with ${field} = ${JSON.stringify(value)}`, async (t) => {
    const dir = modelWithConfig({ [field]: value })
    await rejects(t, inspectModel(dir), 'E_CONFIG_INVALID', ['config.json', `"${field}"`], 5)
  })
}

test.serial('a config value too large for JSON numbers (1e400 = Infinity) is refused by name', async (t) => {
  const dir = validModel()
  const text = JSON.stringify(readJson(join(dir, 'config.json'))).replace(/"hidden_size":\d+/, '"hidden_size":1e400')
  writeFileSync(join(dir, 'config.json'), text)
  await rejects(t, inspectModel(dir), 'E_CONFIG_INVALID', ['config.json', '"hidden_size"', 'Infinity'], 5)
})

test.serial('a layer count above the tensors (but under the cap) fails on the first missing layer, without looping', async (t) => {
  const dir = modelWithConfig({ num_hidden_layers: 16384 })
  await rejects(t, inspectModel(dir), 'E_LAYOUT_MISSING_TENSOR', ['16384 layers', 'model.layers.2.'], 5)
})

test.serial('a deeply nested value in config.json is refused or ignored, never a crash', async (t) => {
  const dir = validModel()
  const config = JSON.stringify(readJson(join(dir, 'config.json')))
  // As an unused field it is ignored; as a field that is read, it is refused by name.
  writeFileSync(join(dir, 'config.json'), `${config.slice(0, -1)},"unused":${'['.repeat(100000)}${']'.repeat(100000)}}`)
  const report = await inspectModel(dir)
  t.is(report.numLayers, 2)
  // Writing it into the output's config.json would need the whole value: every format is refused, by code.
  t.true(report.formats.every((f) => f.support === 'refused' && f.reason.startsWith('E_CONFIG_INVALID: ')))
  writeFileSync(join(dir, 'config.json'), config.replace(/"hidden_size":\d+/, `"hidden_size":${'['.repeat(100000)}${']'.repeat(100000)}`))
  await rejects(t, inspectModel(dir), 'E_CONFIG_INVALID', ['config.json', '"hidden_size"', 'an array'], 5)
})

test.serial('a config.json of 4 GiB is refused before it is read', async (t) => {
  const dir = validModel()
  const fd = openSync(join(dir, 'config.json'), 'w')
  ftruncateSync(fd, 2 ** 32) // sparse
  closeSync(fd)
  await rejects(t, inspectModel(dir), 'E_CONFIG_INVALID', ['config.json', 'more than'])
})

test.serial('a config.json that is a FIFO does not block inspect', async (t) => {
  const dir = validModel()
  rmSync(join(dir, 'config.json'))
  execFileSync('mkfifo', [join(dir, 'config.json')])
  await rejects(t, inspectModel(dir), 'E_IO', ['config.json', 'not a regular file'])
})

test.serial('isQuantizedCheckpoint refuses a FIFO config.json and a 4 GiB hf_quant_config.json without reading them', async (t) => {
  const dir = validModel()
  rmSync(join(dir, 'config.json'))
  execFileSync('mkfifo', [join(dir, 'config.json')])
  await rejects(t, isQuantizedCheckpoint(dir), 'E_IO', ['config.json', 'not a regular file'])
  rmSync(join(dir, 'config.json'))
  writeJson(join(dir, 'config.json'), { model_type: 'qwen3_moe' })
  const fd = openSync(join(dir, 'hf_quant_config.json'), 'w')
  ftruncateSync(fd, 2 ** 32)
  closeSync(fd)
  await rejects(t, isQuantizedCheckpoint(dir), 'E_CONFIG_INVALID', ['hf_quant_config.json', 'more than'])
  await rejects(t, inspectModel(dir), 'E_CONFIG_INVALID', ['hf_quant_config.json', 'more than'])
})

// ---- tokenizer and calibration data ---------------------------------------------------------------------

function calibrationModel() {
  const dir = validModel()
  execFileSync('cp', [join(FIXTURES, 'qwen3_moe/hub/tokenizer.json'), join(dir, 'tokenizer.json')])
  return dir
}

for (const [what, contents] of [['that does not parse', '{"model": '], ['of 0 bytes', '']]) {
  test.serial(`calibration from text with a tokenizer.json ${what}`, async (t) => {
    const dir = calibrationModel()
    writeFileSync(join(dir, 'tokenizer.json'), contents)
    const data = join(dir, '..', 'calib.jsonl')
    writeFileSync(data, '{"text":"hello world"}\n')
    await rejects(t, calibrateModel({ model: dir, calibration: { data, samples: 2, seqLen: 4 } }), 'E_TOKENIZER_INVALID', ['tokenizer.json'])
  })
}

test.serial('calibration from a JSONL file with a 50 MB line', async (t) => {
  const dir = calibrationModel()
  const data = join(dir, '..', 'calib.jsonl')
  const fd = openSync(data, 'w')
  writeSync(fd, '{"text":"short"}\n{"text":"')
  const words = Buffer.from('word '.repeat(1 << 18))
  for (let i = 0; i < 40; i++) writeSync(fd, words)
  writeSync(fd, '"}\n')
  closeSync(fd)
  await rejects(t, calibrateModel({ model: dir, calibration: { data, samples: 512, seqLen: 2048 } }), 'E_CALIBRATION_INVALID', ['calib.jsonl', 'line 2', '16.0 MiB'])
})

test.serial('calibration data that is a FIFO is refused at once instead of being waited on', async (t) => {
  const dir = calibrationModel()
  const data = join(dir, '..', 'calib.jsonl')
  execFileSync('mkfifo', [data])
  const calibration = { data, samples: 2, seqLen: 4 }
  await rejects(t, calibrateModel({ model: dir, calibration }), 'E_IO', ['calib.jsonl', 'a FIFO (named pipe), not a regular file'])
  const output = join(tempDir(), 'out')
  await rejects(t, quantizeModel({ model: dir, output, format: 'fp8', calibration }), 'E_IO', ['calib.jsonl', 'a FIFO'])
})

test.serial('a tokenizer.json that is a FIFO is named as such, not reported missing', async (t) => {
  const dir = calibrationModel()
  rmSync(join(dir, 'tokenizer.json'))
  execFileSync('mkfifo', [join(dir, 'tokenizer.json')])
  const data = join(dir, '..', 'calib.jsonl')
  writeFileSync(data, '{"text":"hello world"}\n')
  await rejects(t, calibrateModel({ model: dir, calibration: { data, samples: 2, seqLen: 4 } }), 'E_IO', ['tokenizer.json', 'a FIFO (named pipe)'])
})

test.serial('an index that is a link to /dev/zero is named as such, not "no weights"', async (t) => {
  const dir = validModel()
  symlinkSync('/dev/zero', join(dir, 'model.safetensors.index.json'))
  await rejects(t, inspectModel(dir), 'E_IO', ['model.safetensors.index.json', 'a device (a link to /dev/zero), not a regular file'])
})
