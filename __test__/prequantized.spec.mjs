// Checkpoints stored pre-quantized in a form transformers dequantizes when it loads them are read dequantized,
// as transformers does (fixtures/prequant, made by tools/make_prequant_vectors.py with transformers 5.25):
// GPT-OSS' MXFP4 experts and DeepSeek-V3's FP8 with 128x128 block scales are detected like their bf16
// releases, and quantizing or calibrating them sees the values transformers loads. Any other quant_method
// (AWQ, GPTQ, bitsandbytes, compressed-tensors …) is refused by name before detection could say anything.
import test from 'ava'
import { createHash } from 'node:crypto'
import { cpSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'

import { calibrateModel, computeLogits, describeModel, evaluateModel, inspectModel, quantizeModel } from '../dist/index.js'
import { FIXTURES, readJson, readRaw, readTensors, relativeL2, rows, tempDir, writeJson, writeSafetensors, writeSyntheticQwen3 } from './helpers/checkpoint.mjs'

const GPT_OSS = join(FIXTURES, 'prequant/gpt_oss_mxfp4')
const DEEPSEEK = join(FIXTURES, 'prequant/deepseek_v3_fp8')
const calibration = { ids: [[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15, 16]] }

/** What detection says about a model, leaving out its sizes. */
function structure(report) {
  return {
    modelType: report.modelType,
    family: report.family,
    architecture: report.architecture,
    numLayers: report.numLayers,
    denseLayers: report.denseLayers,
    moeLayers: report.moeLayers.map(({ layer, block, layout, router, tensors, topK }) => ({ layer, block, layout, router, tensors, topK })),
    // In file order, which differs: compared as sets.
    quantize: [...report.tensors.quantize].sort(),
    keep: [...report.tensors.keep].sort((a, b) => a.name.localeCompare(b.name)),
  }
}

/** The tensors of a safetensors file: name → { dtype, shape, bytes }. */
function tensorsOf(path) {
  const { header, data } = readRaw(path)
  const out = {}
  for (const [name, info] of Object.entries(header)) {
    if (name !== '__metadata__') out[name] = { dtype: info.dtype, shape: info.shape, bytes: data.subarray(...info.data_offsets) }
  }
  return out
}

test('GPT-OSS with MXFP4 experts is detected like its bf16 release, the experts in bf16', async (t) => {
  const [report, hub] = await Promise.all([inspectModel(GPT_OSS), inspectModel(join(FIXTURES, 'gpt_oss/hub'))])
  t.deepEqual(structure(report), structure(hub))
  t.is(report.dtype, 'BF16')
  t.is(report.quantization, null)
  t.true(
    report.notes.includes('stored as MXFP4 (dequantized to bf16 on read, as transformers does): 4 tensors, e.g. model.layers.0.mlp.experts.down_proj'),
    report.notes.join('\n'),
  )
  // The experts have the shapes transformers gives them ([E, H, 2I] and [E, I, H]); the values are compared
  // with transformers' in crates/core/tests/prequant.rs, the forward below.
  const expected = tensorsOf(join(GPT_OSS, 'dequantized.safetensors'))
  t.deepEqual(expected['model.layers.0.mlp.experts.gate_up_proj'].shape, [4, 32, 64])
  t.deepEqual(
    report.moeLayers.map(({ experts, hidden, intermediate }) => ({ experts, hidden, intermediate })),
    [0, 1].map(() => ({ experts: 4, hidden: 32, intermediate: 32 })),
  )
  const expertParams = Object.values(expected).reduce((sum, { shape }) => sum + shape.reduce((a, b) => a * b, 1), 0)
  t.is(report.parameters.experts, expertParams + 2 * 4 * (64 + 32), 'weights and biases')
  // Like the bf16 release, it quantizes weight-only, its experts stacked as ModelOpt exports GPT-OSS.
  const output = join(tempDir(), 'out')
  await quantizeModel({ model: GPT_OSS, output, format: 'w4a16_nvfp4' })
  const written = tensorsOf(join(output, 'model.safetensors'))
  t.like(written['model.layers.0.mlp.experts.gate_up_proj'], { dtype: 'U8', shape: [4, 16, 64] })
  t.like(written['model.layers.0.mlp.experts.gate_up_proj_weight_scale'], { dtype: 'F8_E4M3', shape: [4, 2, 64] })
})

test('GPT-OSS as shipped (MXFP4 experts): the calibrated forward equals transformers, and it quantizes calibrated', async (t) => {
  const reference = readTensors(join(GPT_OSS, 'reference.safetensors'))
  const ids = rows(reference.input_ids.values, reference.input_ids.shape[1])
  const { logits } = await computeLogits(GPT_OSS, ids)
  const error = relativeL2(logits, reference.logits.values)
  t.true(error < 1e-5, `relative L2 ${error}`)
  const output = join(tempDir(), 'out')
  const result = await quantizeModel({ model: GPT_OSS, output, format: 'nvfp4', calibration: { ids, samples: ids.length, seqLen: ids[0].length } })
  t.deepEqual(result.uncalibratedExperts, [])
  const written = tensorsOf(join(output, 'model.safetensors'))
  t.like(written['model.layers.0.mlp.experts.gate_up_proj'], { dtype: 'U8', shape: [4, 16, 64] })
  t.like(written['model.layers.1.mlp.experts.down_proj_input_scale'], { dtype: 'F32', shape: [] })
  t.false(Object.keys(written).some((name) => /_(blocks|scales)$/.test(name)))
})

test('DeepSeek-V3 with FP8 block-scaled linears is detected like its bf16 release', async (t) => {
  const [report, hub] = await Promise.all([inspectModel(DEEPSEEK), inspectModel(join(FIXTURES, 'deepseek_v3/hub'))])
  t.deepEqual(structure(report), structure(hub))
  t.is(report.dtype, 'BF16')
  const note = report.notes.find((n) => n.startsWith('stored as FP8 E4M3 with 128x128 block scales (weight_scale_inv) (dequantized to bf16 on read'))
  t.truthy(note, report.notes.join('\n'))
  t.false([...report.tensors.quantize, ...report.tensors.keep.map((k) => k.name)].some((n) => n.endsWith('_scale_inv')))
})

test('quantizing DeepSeek-V3 FP8 reads the values transformers loads', async (t) => {
  const parent = tempDir()
  // Everything excluded: every tensor is copied as read, so the output holds what the reader gives.
  const copy = join(parent, 'copy')
  await quantizeModel({ model: DEEPSEEK, output: copy, format: 'w4a16_nvfp4', exclude: ['*'] })
  const { tensors: loaded } = readJson(join(DEEPSEEK, 'dequantized.json'))
  const written = tensorsOf(join(copy, 'model.safetensors'))
  t.deepEqual(Object.keys(written).sort(), Object.keys(loaded).sort())
  for (const [name, { dtype, shape, sha256 }] of Object.entries(loaded)) {
    t.deepEqual([written[name].dtype, written[name].shape], [dtype, shape], name)
    t.is(createHash('sha256').update(written[name].bytes).digest('hex'), sha256, `${name} differs from what transformers loads`)
  }
  // Its config.json declares ModelOpt's quantization only; the source's FP8 quantization_config is gone.
  const config = readJson(join(copy, 'config.json'))
  t.is(config.quantization_config.quant_method, 'modelopt')
  t.is(config.quantization_config.weight_block_size, undefined)

  // As a plain bf16 checkpoint, that copy quantizes to the same bytes as the FP8 source.
  rmSync(join(copy, 'hf_quant_config.json'))
  delete config.quantization_config
  writeJson(join(copy, 'config.json'), config)
  const [fromFp8, fromBf16] = [join(parent, 'fp8'), join(parent, 'bf16')]
  const result = await quantizeModel({ model: DEEPSEEK, output: fromFp8, format: 'w4a16_nvfp4' })
  await quantizeModel({ model: copy, output: fromBf16, format: 'w4a16_nvfp4' })
  t.true(result.quantizedTensors > 0)
  const [a, b] = [tensorsOf(join(fromFp8, 'model.safetensors')), tensorsOf(join(fromBf16, 'model.safetensors'))]
  t.deepEqual(Object.keys(a).sort(), Object.keys(b).sort())
  for (const name of Object.keys(b)) t.true(Buffer.compare(a[name].bytes, b[name].bytes) === 0, name)
  t.false(Object.keys(a).some((name) => name.endsWith('_scale_inv')))
  t.is(readJson(join(fromFp8, 'config.json')).quantization_config.quant_method, 'modelopt')

  // The calibration forward runs on it and sees the same model as on the bf16 copy.
  const [fp8, bf16] = await Promise.all([calibrateModel({ model: DEEPSEEK, calibration }), calibrateModel({ model: copy, calibration })])
  t.true(Object.keys(fp8.inputAmax).length > 0)
  t.deepEqual(fp8.inputAmax, bf16.inputAmax)
  t.deepEqual(fp8.experts, bf16.experts)
})

/** A synthetic Qwen3-MoE whose tensors are changed by `edit(tensors)` and config by `config(c)`. */
function variant({ edit = () => {}, config = () => {} }) {
  const dir = writeSyntheticQwen3(join(tempDir(), 'model'), { layers: 1 })
  const { header, data } = readRaw(join(dir, 'model.safetensors'))
  const tensors = {}
  for (const [name, info] of Object.entries(header)) {
    if (name !== '__metadata__') tensors[name] = { dtype: info.dtype, shape: info.shape, data: data.subarray(...info.data_offsets) }
  }
  edit(tensors)
  writeSafetensors(join(dir, 'model.safetensors'), tensors)
  const json = readJson(join(dir, 'config.json'))
  config(json)
  writeJson(join(dir, 'config.json'), json)
  return dir
}

/** Every entry point refuses `model` with E_CHECKPOINT_ALREADY_QUANTIZED naming `needles`, writing nothing. */
async function refusedEverywhere(t, model, needles) {
  const parent = tempDir()
  const runs = [
    inspectModel(model),
    describeModel(model),
    quantizeModel({ model, output: join(parent, 'out'), format: 'fp8', calibration }),
    quantizeModel({ model, output: join(parent, 'out'), format: 'w4a16_nvfp4' }),
    calibrateModel({ model, calibration }),
    evaluateModel(model, model, { samples: 1, seqLen: 4 }),
    computeLogits(model, [[1, 2, 3]]),
  ]
  for (const run of runs) {
    const error = await t.throwsAsync(run)
    t.is(error.code, 'E_CHECKPOINT_ALREADY_QUANTIZED', error.message)
    for (const needle of needles) t.true(error.message.includes(needle), `${error.message} lacks ${needle}`)
  }
  t.deepEqual(readdirSync(parent), [])
}

/** GPTQ's packing of the experts: no `.weight` left for detection to find. */
const gptqExperts = (tensors) => {
  for (const name of Object.keys(tensors)) {
    if (!/experts\.\d+\.(gate|up|down)_proj\.weight$/.test(name)) continue
    const [rows, cols] = tensors[name].shape
    const module = name.slice(0, -'.weight'.length)
    delete tensors[name]
    tensors[`${module}.qweight`] = { dtype: 'I32', shape: [cols / 8, rows] }
    tensors[`${module}.qzeros`] = { dtype: 'I32', shape: [Math.ceil(cols / 128), rows / 8] }
    tensors[`${module}.scales`] = { dtype: 'F16', shape: [Math.ceil(cols / 128), rows] }
  }
}

for (const method of ['gptq', 'awq', 'bitsandbytes', 'compressed-tensors']) {
  test(`quant_method "${method}" is refused by its name before any detection`, async (t) => {
    const model = variant({ edit: gptqExperts, config: (c) => void (c.quantization_config = { quant_method: method, bits: 4 }) })
    await refusedEverywhere(t, model, [`quant_method "${method}"`, 'BF16'])
  })
}

test('without its quantization_config, the same packed checkpoint fails detection instead', async (t) => {
  const model = variant({ edit: gptqExperts })
  const error = await t.throwsAsync(inspectModel(model))
  t.not(error.code, 'E_CHECKPOINT_ALREADY_QUANTIZED', error.message)
})

test('a block-scaled FP8 Qwen3-MoE is read dequantized; scales the reader does not take are refused', async (t) => {
  const fp8Experts = (dtype) => (tensors) => {
    for (const name of Object.keys(tensors)) {
      if (!/experts\.\d+\.(gate|up|down)_proj\.weight$/.test(name)) continue
      const [rows, cols] = tensors[name].shape
      tensors[name] = { dtype, shape: [rows, cols], data: Buffer.alloc(rows * cols, 0x38) }
      tensors[`${name}_scale_inv`] = { dtype: 'F32', shape: [Math.ceil(rows / 128), Math.ceil(cols / 128)], data: Buffer.from(new Float32Array([0.5]).buffer) }
    }
  }
  const fp8 = { quant_method: 'fp8', fmt: 'e4m3', activation_scheme: 'dynamic', weight_block_size: [128, 128] }
  const model = variant({ edit: fp8Experts('F8_E4M3'), config: (c) => void (c.quantization_config = fp8) })
  const report = await inspectModel(model)
  t.true(report.notes.some((n) => n.startsWith('stored as FP8 E4M3 with 128x128 block scales')), report.notes.join('\n'))
  t.true(report.tensors.quantize.includes('model.layers.0.mlp.experts.0.gate_proj.weight'))
  const out = join(tempDir(), 'out')
  await quantizeModel({ model, output: out, format: 'w4a16_nvfp4' })
  t.false(JSON.stringify(readJson(join(out, 'config.json'))).includes('"fp8"'))

  // I8 weights with block scales (an FP4 packing of FP8 checkpoints) are not read: refused naming a scale.
  const packed = variant({ edit: fp8Experts('I8'), config: (c) => void (c.quantization_config = fp8) })
  await refusedEverywhere(t, packed, ['weight_scale_inv', 'model.layers.0.mlp.experts.0'])
})

test('FP8 weights without block scales under quant_method "fp8" are refused', async (t) => {
  const model = variant({
    edit: (tensors) => {
      const name = 'model.layers.0.mlp.experts.0.gate_proj.weight'
      tensors[name] = { dtype: 'F8_E4M3', shape: tensors[name].shape }
    },
    config: (c) => void (c.quantization_config = { quant_method: 'fp8', weight_block_size: [128, 128] }),
  })
  await refusedEverywhere(t, model, ['FP8 weights without block scales', 'model.layers.0.mlp.experts.0.gate_proj.weight'])
})

test('a copy of the MXFP4 checkpoint with a stray bf16 tensor of a dequantized name is refused as duplicate', async (t) => {
  const dir = join(tempDir(), 'model')
  cpSync(GPT_OSS, dir, { recursive: true })
  const tensors = tensorsOf(join(dir, 'model.safetensors'))
  const entries = Object.fromEntries(Object.entries(tensors).map(([name, { dtype, shape, bytes }]) => [name, { dtype, shape, data: bytes }]))
  entries['model.layers.0.mlp.experts.down_proj'] = { dtype: 'BF16', shape: [4, 32, 32] }
  writeSafetensors(join(dir, 'model.safetensors'), entries)
  const error = await t.throwsAsync(inspectModel(dir))
  t.is(error.code, 'E_TENSOR_DUPLICATE', error.message)
  t.true(error.message.includes('model.layers.0.mlp.experts.down_proj'), error.message)
  t.truthy(readFileSync(join(dir, 'config.json'), 'utf8'))
})
