// Mixed-precision recipes beyond their goldens (golden.spec.mjs): how a recipe is given (object or JSON file, CLI
// --recipe), what is refused before any work (a malformed recipe or rule, a pattern that names no module, two
// formats for modules that read one input), what a rule of null keeps, and that a recipe leaving one format writes
// that format's plain metadata, as ModelOpt does.
import test from 'ava'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { renderPlan } from '../dist/cli/inspect.js'
import { parseQuantizeArgs } from '../dist/cli/quantize.js'
import { inspectModel, quantizeModel } from '../dist/index.js'
import { FIXTURES, readTensors, tempDir } from './helpers/checkpoint.mjs'

const MODEL = join(FIXTURES, 'qwen3_moe', 'hub')
const CALIBRATION = { ids: [[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15, 16]] }
const run = (options) => quantizeModel({ model: MODEL, output: join(tempDir(), 'out'), kvCache: 'none', coverageReport: false, ...options })
const hfQuant = (output) => JSON.parse(readFileSync(join(output, 'hf_quant_config.json'), 'utf8')).quantization

test('a malformed recipe or rule is refused, naming what is wrong', async (t) => {
  const refused = async (recipe, message) => {
    const error = await t.throwsAsync(run({ format: 'w4a16_nvfp4', recipe }))
    t.is(error.code, 'E_OPTION_INVALID')
    t.regex(error.message, message)
  }
  await refused({}, /expected "rules", a non-empty list/)
  await refused({ rules: [] }, /non-empty list/)
  await refused({ rules: [{ modules: '*', format: 'int4' }] }, /rules\[0\]: "format" must be "fp8", .* or null, got "int4"/)
  await refused({ rules: [{ modules: '', format: 'fp8' }] }, /rules\[0\]: "modules" must be a non-empty pattern/)
  await refused({ rules: [{ modules: '*', format: 'fp8', scope: 'all' }] }, /rules\[0\]: unknown key "scope"/)
  await refused({ rule: [] }, /unknown key "rule"/)
  const dir = tempDir()
  writeFileSync(join(dir, 'bad.json'), '{"rules": [')
  await refused(join(dir, 'bad.json'), /bad\.json is not JSON/)
  await refused(join(dir, 'missing.json'), /cannot read .*missing\.json/)
})

test('a pattern that names no quantizable module is refused, with examples of names', async (t) => {
  const error = await t.throwsAsync(run({ format: 'w4a16_nvfp4', recipe: { rules: [{ modules: '*.attention.*', format: 'fp8_pb_wo' }] } }))
  t.is(error.code, 'E_OPTION_INVALID')
  t.regex(error.message, /recipe: "\*\.attention\.\*" matches no quantizable module of this model \(.*model\.layers\.\*\.self_attn\.q_proj/)
})

test('modules that read one input take one format', async (t) => {
  const recipe = { rules: [{ modules: '*.k_proj', format: 'fp8_pb_wo' }] }
  const error = await t.throwsAsync(run({ format: 'w4a16_nvfp4', recipe }))
  t.is(error.code, 'E_OPTION_INVALID')
  t.regex(error.message, /k_proj is fp8_pb_wo but .*q_proj, which reads the same input, is w4a16_nvfp4/)
})

test('a rule of null keeps its modules in 16 bits; a recipe that leaves one format writes that format plainly', async (t) => {
  const output = join(tempDir(), 'out')
  const recipe = { rules: [{ modules: '*.self_attn.*', format: null }] }
  const result = await quantizeModel({ model: MODEL, output, format: 'w4a16_nvfp4', recipe, kvCache: 'none' })
  const tensors = readTensors(join(output, 'model.safetensors'))
  t.is(tensors['model.layers.0.self_attn.q_proj.weight'].dtype, 'BF16')
  t.is(tensors['model.layers.0.mlp.experts.0.gate_proj.weight'].dtype, 'U8')
  t.false(result.warnings.some((w) => /MIXED_PRECISION/.test(w)))
  const quant = hfQuant(output)
  t.is(quant.quant_algo, 'W4A16_NVFP4')
  t.true(quant.exclude_modules.includes('model.layers.0.self_attn*'), JSON.stringify(quant.exclude_modules))
  // Everything named by rules in one other format: that format's files, not MIXED_PRECISION.
  const all = join(tempDir(), 'all')
  await quantizeModel({ model: MODEL, output: all, format: 'w4a16_nvfp4', recipe: { rules: [{ modules: '*', format: 'fp8_pb_wo' }] }, kvCache: 'none' })
  t.is(hfQuant(all).quant_algo, 'fp8_pb_wo')
  // A calibrated format whose modules all went to a weight-only one: the run still calibrates (as it was asked to,
  // and as its plan was made), and writes that format without input scales.
  const moved = join(tempDir(), 'moved')
  await quantizeModel({ model: MODEL, output: moved, format: 'nvfp4', recipe: { rules: [{ modules: '*', format: 'fp8_pb_wo' }] }, calibration: CALIBRATION, kvCache: 'none', coverageReport: false })
  t.is(hfQuant(moved).quant_algo, 'fp8_pb_wo')
  t.false(Object.keys(readTensors(join(moved, 'model.safetensors'))).some((name) => name.endsWith('input_scale')))
})

test('a recipe with a calibrated format makes the run calibrate; weight-only throughout, it takes no calibration', async (t) => {
  const recipe = { rules: [{ modules: '*.mlp.experts', format: 'nvfp4' }] }
  const missing = await t.throwsAsync(run({ format: 'fp8_pb_wo', recipe }))
  t.regex(missing.message, /calibration: format 'nvfp4' measures activation scales/)
  const output = join(tempDir(), 'out')
  const result = await quantizeModel({ model: MODEL, output, format: 'fp8_pb_wo', recipe, calibration: CALIBRATION, kvCache: 'none', coverageReport: false })
  t.true(result.tokens > 0)
  const quant = hfQuant(output)
  t.is(quant.quant_algo, 'MIXED_PRECISION')
  t.deepEqual(quant.quantized_layers['model.layers.0.mlp.experts'], { quant_algo: 'NVFP4', group_size: 16 })
  t.deepEqual(quant.quantized_layers['model.layers.0.self_attn.q_proj'], { quant_algo: 'fp8_pb_wo' })
  const tensors = readTensors(join(output, 'model.safetensors'))
  // NVFP4 experts carry input scales; the weight-only attention none.
  t.truthy(tensors['model.layers.0.mlp.experts.3.down_proj.input_scale'])
  t.falsy(tensors['model.layers.0.self_attn.q_proj.input_scale'])
  // SGLang reads a MIXED_PRECISION checkpoint with an NVFP4 layer as mixed: no warning of that.
  t.false(result.warnings.some((w) => /w4afp8/.test(w)))
  const weightOnly = await t.throwsAsync(run({ format: 'fp8_pb_wo', recipe: { rules: [{ modules: '*.mlp.experts', format: 'mxfp8' }] }, calibration: CALIBRATION }))
  t.regex(weightOnly.message, /format 'fp8_pb_wo' \(and every format of the recipe\) is weight-only/)
})

test('without an NVFP4 layer, the run warns that SGLang misreads MIXED_PRECISION', async (t) => {
  const result = await run({ format: 'fp8_pb_wo', recipe: { rules: [{ modules: '*.self_attn.*', format: 'fp8_pc_pt' }] } })
  t.true(result.warnings.some((w) => /^serving: SGLang 0\.5\.23 reads a MIXED_PRECISION checkpoint without NVFP4/.test(w)))
})

test('the CLI reads --recipe FILE, and calibrates when the recipe asks for it', (t) => {
  const dir = tempDir()
  const file = join(dir, 'recipe.json')
  writeFileSync(file, JSON.stringify({ rules: [{ modules: '*.mlp.experts', format: 'nvfp4' }] }))
  const parsed = parseQuantizeArgs([MODEL, '--format', 'fp8_pb_wo', '--out', join(dir, 'out'), '--recipe', file], { calibration: 'data.jsonl' })
  t.deepEqual(parsed.options.recipe, { rules: [{ modules: '*.mlp.experts', format: 'nvfp4' }] })
  t.is(parsed.options.calibration.data, 'data.jsonl')
  const weightOnly = parseQuantizeArgs([MODEL, '--format', 'fp8_pb_wo', '--out', join(dir, 'out')], { calibration: 'data.jsonl' })
  t.is(weightOnly.options.calibration, undefined)
})

test('inspect previews the plan of a format and recipe, as the run would follow it', async (t) => {
  const recipe = { rules: [{ modules: '*.self_attn.*', format: 'fp8_pb_wo' }, { modules: '*.self_attn.o_proj', format: null }] }
  const report = await inspectModel(MODEL, { format: 'w4a16_nvfp4', recipe })
  t.is(report.plan.quantAlgo, 'MIXED_PRECISION')
  t.deepEqual(report.plan.layers.slice(0, 4), [
    { module: 'model.layers.0.self_attn.q_proj', format: 'fp8_pb_wo', quantAlgo: 'fp8_pb_wo' },
    { module: 'model.layers.0.self_attn.k_proj', format: 'fp8_pb_wo', quantAlgo: 'fp8_pb_wo' },
    { module: 'model.layers.0.self_attn.v_proj', format: 'fp8_pb_wo', quantAlgo: 'fp8_pb_wo' },
    { module: 'model.layers.0.mlp.experts', format: 'w4a16_nvfp4', quantAlgo: 'W4A16_NVFP4' },
  ])
  // The run writes exactly that plan.
  const output = join(tempDir(), 'out')
  await quantizeModel({ model: MODEL, output, format: 'w4a16_nvfp4', recipe, kvCache: 'none' })
  const written = Object.entries(hfQuant(output).quantized_layers).map(([module, entry]) => [module, entry.quant_algo])
  t.deepEqual(written, report.plan.layers.map((l) => [l.module, l.quantAlgo]))
  const rendered = renderPlan(report.plan)
  t.regex(rendered, /writes MIXED_PRECISION/)
  t.regex(rendered, /model\.layers\.\*\.self_attn\.q_proj\s+fp8_pb_wo\s+fp8_pb_wo\s+0-1/)
  // Without a format nothing is previewed; a recipe alone is refused, as a bad one is.
  t.is((await inspectModel(MODEL)).plan, undefined)
  await t.throwsAsync(inspectModel(MODEL, { recipe }), { code: 'E_OPTION_INVALID' })
  await t.throwsAsync(inspectModel(MODEL, { format: 'w4a16_nvfp4', recipe: { rules: [{ modules: 'nothing', format: 'fp8' }] } }), { code: 'E_OPTION_INVALID' })
})
