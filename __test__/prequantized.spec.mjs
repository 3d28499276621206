// Checkpoints stored quantized in a form the weight loader cannot read yet (FP8 with 128×128 block scales as
// DeepSeek-V3 and the "-FP8" releases ship, MXFP4 as GPT-OSS ships, any other quant_method) are refused up
// front by name, before calibration could run on raw codes; inspect still describes them.
import test from 'ava'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'

import { calibrateModel, computeLogits, evaluateModel, inspectModel, quantizeModel } from '../dist/index.js'
import { readJson, readRaw, tempDir, writeJson, writeSafetensors, writeSyntheticQwen3 } from './helpers/checkpoint.mjs'

const calibration = { ids: [[1, 2, 3, 4]], samples: 1, seqLen: 4 }

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

/** Every entry point that reads weights refuses `model` naming `needles`; inspect notes it. */
async function refusedEverywhere(t, model, needles) {
  const parent = tempDir()
  const runs = [
    quantizeModel({ model, output: join(parent, 'out'), format: 'fp8', calibration }),
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

test('FP8 with 128x128 block scales (weight_scale_inv) is refused by name', async (t) => {
  const weight = 'model.layers.0.mlp.experts.0.gate_proj.weight'
  const model = variant({
    edit: (tensors) => {
      for (const name of Object.keys(tensors)) {
        if (!/experts\.\d+\.(gate|up|down)_proj\.weight$/.test(name)) continue
        const [rows, cols] = tensors[name].shape
        tensors[name] = { dtype: 'F8_E4M3', shape: [rows, cols] }
        tensors[`${name}_scale_inv`] = { dtype: 'F32', shape: [Math.ceil(rows / 128), Math.ceil(cols / 128)] }
      }
    },
    config: (c) => void (c.quantization_config = { quant_method: 'fp8', fmt: 'e4m3', activation_scheme: 'dynamic', weight_block_size: [128, 128] }),
  })
  await refusedEverywhere(t, model, ['FP8 with block scales', `${weight}_scale_inv`, 'BF16'])
  const error = await t.throwsAsync(calibrateModel({ model, calibration }))
  t.is(error.details.tensor, `${weight}_scale_inv`)
  const report = await inspectModel(model)
  t.true(report.notes.some((n) => n.includes('stored quantized (FP8 with block scales')), report.notes.join('\n'))
})

test('MXFP4 (_blocks with _scales) is refused by name', async (t) => {
  const model = variant({
    edit: (tensors) => {
      tensors['model.layers.0.mlp.experts.gate_up_proj_blocks'] = { dtype: 'U8', shape: [4, 96, 2, 16] }
      tensors['model.layers.0.mlp.experts.gate_up_proj_scales'] = { dtype: 'U8', shape: [4, 96, 2] }
    },
  })
  await refusedEverywhere(t, model, ['MXFP4', 'model.layers.0.mlp.experts.gate_up_proj_blocks'])
})

test('a quantization_config of another method is refused by its name', async (t) => {
  const model = variant({ config: (c) => void (c.quantization_config = { quant_method: 'gptq', bits: 4 }) })
  await refusedEverywhere(t, model, ['quant_method "gptq"'])
})
