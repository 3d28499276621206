// What calibration accepts: pre-tokenized ids as arrays or typed arrays (numbers or bigints) of any lengths,
// windowed as documented, with defaults from their own shape; precise errors for holes, non-integers and ids
// outside the vocabulary; and experts whose tensors are stored in different dtypes.
import test from 'ava'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { calibrateModel, computeLogits, evaluateModel, quantizeModel } from '../dist/index.js'
import { FIXTURES, copyFixture, readJson, readRaw, tempDir, writeJson, writeSafetensors, writeSyntheticQwen3 } from './helpers/checkpoint.mjs'

const MODEL = join(FIXTURES, 'qwen3_moe/hub')
const calibrate = (calibration) => calibrateModel({ model: MODEL, calibration })

test('ids default samples and seqLen to their own shape; ragged and long rows are windowed', async (t) => {
  const one = await calibrate({ ids: [[1, 2, 3, 4, 5, 6]] })
  t.is(one.seqLen, 6)
  t.is(one.samples, 1)
  // The shortest row (4) sets seqLen; rows of 9 and 4 give 2 and 1 windows.
  const ragged = await calibrate({ ids: [[1, 2, 3, 4, 5, 6, 7, 8, 9], [10, 11, 12, 13]] })
  t.deepEqual([ragged.seqLen, ragged.samples, ragged.tokens], [4, 3, 12])
  // Windowing is the same rule as the native core's: the same ids cut by hand give the same statistics.
  const byHand = await calibrate({ ids: [[1, 2, 3, 4], [5, 6, 7, 8], [10, 11, 12, 13]] })
  t.deepEqual(ragged.inputAmax, byHand.inputAmax)
  t.deepEqual(ragged.experts.map((e) => e.tokens), byHand.experts.map((e) => e.tokens))
  // A row shorter than an explicit seqLen is an error naming it, once its windows are needed.
  const short = await t.throwsAsync(calibrate({ ids: [[1, 2, 3, 4, 5, 6], [1, 2]], seqLen: 4, samples: 2 }))
  t.is(short.code, 'E_CALIBRATION_EMPTY')
  t.true(short.message.includes('row 1'), short.message)
})

test('ragged ids go through calibrateModel as documented: every row cut into windows of seqLen, defaults from the rows', async (t) => {
  const ids = (from, length) => Array.from({ length }, (_, i) => (from + 7 * i) % 256)
  // Rows of 10, 7 and 5 ids, as a plain array, a typed array and bigints.
  const rows = [ids(1, 10), Int32Array.from(ids(2, 7)), ids(3, 5).map(BigInt)]
  const plain = rows.map((row) => Array.from(row, Number))
  // The windows [row, start] cut by hand, for comparison.
  const windows = (seqLen, starts) => starts.map(([row, from]) => plain[row].slice(from, from + seqLen))
  const summary = (r) => ({ seqLen: r.seqLen, samples: r.samples, requestedSamples: r.requestedSamples, tokens: r.tokens })

  // Defaults: seqLen is the shortest row (5) and samples every window: 2 + 1 + 1, each row's tail dropped.
  const all = await calibrate({ ids: rows })
  t.deepEqual(summary(all), { seqLen: 5, samples: 4, requestedSamples: 4, tokens: 20 })
  t.deepEqual(all.warnings, [])
  const byHand = await calibrate({ ids: windows(5, [[0, 0], [0, 5], [1, 0], [2, 0]]) })
  t.deepEqual(all.inputAmax, byHand.inputAmax)
  t.deepEqual(all.experts.map((e) => e.tokens), byHand.experts.map((e) => e.tokens))

  // An explicit seqLen windows every row by it (3 + 2 + 1 windows of 3); samples takes the first windows, row by row.
  const three = await calibrate({ ids: rows, seqLen: 3 })
  t.deepEqual(summary(three), { seqLen: 3, samples: 6, requestedSamples: 6, tokens: 18 })
  const firstFour = await calibrate({ ids: rows, seqLen: 3, samples: 4 })
  t.deepEqual(summary(firstFour), { seqLen: 3, samples: 4, requestedSamples: 4, tokens: 12 })
  t.deepEqual(firstFour.inputAmax, (await calibrate({ ids: windows(3, [[0, 0], [0, 3], [0, 6], [1, 0]]) })).inputAmax)

  // Asking for more windows than the rows hold uses what there is, with a warning.
  const more = await calibrate({ ids: rows, samples: 10 })
  t.deepEqual(summary(more), { seqLen: 5, samples: 4, requestedSamples: 10, tokens: 20 })
  t.deepEqual(more.warnings, ['the calibration data gave 4 sequences of 5 tokens, fewer than the 10 asked for'])

  // A row shorter than seqLen is fine while its windows are not needed (here none: it holds no window).
  const short = await calibrate({ ids: [ids(4, 10), ids(5, 2)], seqLen: 5 })
  t.deepEqual(summary(short), { seqLen: 5, samples: 2, requestedSamples: 2, tokens: 10 })
})

test('typed arrays and bigints are accepted and give the same result as plain numbers', async (t) => {
  const plain = await calibrate({ ids: [[1, 5, 9, 13], [2, 4, 6, 8]] })
  for (const ids of [
    [Int32Array.from([1, 5, 9, 13]), Uint32Array.from([2, 4, 6, 8])],
    [BigInt64Array.from([1n, 5n, 9n, 13n]), [2n, 4n, 6n, 8n]],
    [Uint16Array.from([1, 5, 9, 13]), Float64Array.from([2, 4, 6, 8])],
  ]) {
    const result = await calibrate({ ids })
    t.deepEqual(result.inputAmax, plain.inputAmax)
  }
  const logits = await computeLogits(MODEL, [Int32Array.from([1, 2, 3])])
  t.deepEqual(logits.shape, [1, 3, 256])
  const evaluation = await evaluateModel(MODEL, MODEL, { ids: [Uint32Array.from([1, 2, 3, 4])] })
  t.is(evaluation.klMax, 0)
})

test('holes, non-integers, bigints out of range and ids outside the vocabulary are coded errors naming the position', async (t) => {
  const cases = [
    [[[1, , 3]], 'E_OPTION_INVALID', 'calibration.ids[0][1]: a hole'], // eslint-disable-line no-sparse-arrays
    [[[1, 2], , [3, 4]], 'E_OPTION_INVALID', 'calibration.ids[1]: a hole'], // eslint-disable-line no-sparse-arrays
    [[[1, 2.5]], 'E_OPTION_INVALID', 'calibration.ids[0][1] = 2.5'],
    [[[1, '2']], 'E_OPTION_INVALID', 'calibration.ids[0][1] = "2"'],
    [[[1, null]], 'E_OPTION_INVALID', 'calibration.ids[0][1] = null'],
    [[[]], 'E_OPTION_INVALID', 'calibration.ids[0]: an empty row'],
    [['abc'], 'E_OPTION_INVALID', 'calibration.ids[0]: expected an array or typed array'],
    [[[1, 2n ** 70n]], 'E_CALIBRATION_ID_RANGE', 'calibration.ids[0][1] = 1180591620717411303424n'],
    [[[1, -1]], 'E_CALIBRATION_ID_RANGE', 'calibration.ids[0][1] = -1'],
    [[Int32Array.from([1, 256])], 'E_CALIBRATION_ID_RANGE', 'calibration.ids[0][1] = 256 is not a token id of this model (vocabulary of 256)'],
  ]
  for (const [ids, code, message] of cases) {
    const error = await t.throwsAsync(calibrate({ ids }))
    t.is(error.code, code, error.message)
    t.true(error.message.startsWith(message), error.message)
  }
})

test('an expert whose gate and up are stored in different dtypes calibrates and quantizes like the uniform one', async (t) => {
  const dir = writeSyntheticQwen3(join(tempDir(), 'model'))
  const uniform = await calibrateModel({ model: dir, calibration: { ids: [[1, 2, 3, 4, 5, 6, 7, 8]] } })
  // Expert 1's up_proj as F32 with the same values (bf16 widened exactly).
  const file = join(dir, 'model.safetensors')
  const { header, data } = readRaw(file)
  const tensors = {}
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue
    const bytes = data.subarray(...info.data_offsets)
    if (name !== 'model.layers.0.mlp.experts.1.up_proj.weight') {
      tensors[name] = { dtype: info.dtype, shape: info.shape, data: bytes }
      continue
    }
    const widened = Buffer.alloc(bytes.length * 2)
    for (let i = 0; i < bytes.length / 2; i++) widened.writeUInt32LE(bytes.readUInt16LE(2 * i) * 65536, 4 * i)
    tensors[name] = { dtype: 'F32', shape: info.shape, data: widened }
  }
  writeSafetensors(file, tensors)
  const mixed = await calibrateModel({ model: dir, calibration: { ids: [[1, 2, 3, 4, 5, 6, 7, 8]] } })
  t.deepEqual(mixed.inputAmax, uniform.inputAmax)
  t.deepEqual(mixed.experts, uniform.experts)
  for (const format of ['fp8', 'nvfp4']) {
    const result = await quantizeModel({ model: dir, output: join(tempDir(), 'out'), format, calibration: { ids: [[1, 2, 3, 4]] } })
    t.is(result.quantizedTensors, 4 + 4 * 3, format)
  }
})

test('texts and conversations in memory, and .json files, calibrate like the same documents in JSONL', async (t) => {
  const model = copyFixture('qwen3_moe/hub')
  const config = readJson(join(model, 'tokenizer_config.json'))
  config.chat_template = "{%- for m in messages %}{{- '<|im_start|>' + m['role'] + '\\n' + m['content'].strip() + '<|im_end|>\\n' }}{%- endfor %}"
  writeJson(join(model, 'tokenizer_config.json'), config)
  const conversation = [{ role: 'user', content: ' What is a mixture of experts? ' }, { role: 'assistant', content: 'A layer that routes each token to a few experts.' }]
  // By hand: what the template makes of the conversation.
  const rendered = '<|im_start|>user\nWhat is a mixture of experts?<|im_end|>\n<|im_start|>assistant\nA layer that routes each token to a few experts.<|im_end|>\n'
  const texts = ['Quantization maps weights to a few bits.', rendered, 'Calibration runs the model on real text.']
  const dir = tempDir()
  const jsonl = join(dir, 'calib.jsonl')
  writeFileSync(jsonl, texts.map((text) => `${JSON.stringify({ text })}\n`).join(''))
  const reference = await calibrateModel({ model, calibration: { data: jsonl, samples: 4, seqLen: 16 } })
  t.true(reference.samples > 1)
  const json = join(dir, 'calib.json')
  writeFileSync(json, JSON.stringify([texts[0], { messages: conversation }, { text: texts[2] }]))
  for (const calibration of [{ texts }, { data: json }]) {
    const result = await calibrateModel({ model, calibration: { ...calibration, samples: 4, seqLen: 16 } })
    t.deepEqual(result.inputAmax, reference.inputAmax, JSON.stringify(Object.keys(calibration)))
  }
  // Conversations alone equal their rendered text.
  const fromConversation = await calibrateModel({ model, calibration: { conversations: [conversation], samples: 1, seqLen: 8 } })
  const fromText = await calibrateModel({ model, calibration: { texts: [rendered], samples: 1, seqLen: 8 } })
  t.deepEqual(fromConversation.inputAmax, fromText.inputAmax)
  // Only one source at a time, and each checked.
  const both = await t.throwsAsync(calibrateModel({ model, calibration: { texts, ids: [[1, 2]] } }))
  t.regex(both.message, /give exactly one of data .*, not texts and ids/)
  const hole = await t.throwsAsync(calibrateModel({ model, calibration: { texts: ['a', , 'b'] } })) // eslint-disable-line no-sparse-arrays
  t.is(hole.message, 'calibration.texts[1]: expected a string, got a hole')
  const message = await t.throwsAsync(calibrateModel({ model, calibration: { conversations: [[{ content: 'no role' }]] } }))
  t.regex(message.message, /^calibration\.conversations\[0\]\[0\]: expected a message such as/)
  // A model without a chat template cannot render conversations.
  const plain = await t.throwsAsync(calibrateModel({ model: MODEL, calibration: { conversations: [conversation] } }))
  t.is(plain.code, 'E_TOKENIZER_INVALID')
  t.true(plain.message.includes('no chat template'), plain.message)
})
