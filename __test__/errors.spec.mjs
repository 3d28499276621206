// Bad input gets a typed MoeQuantError whose code is stable and whose message names the file, tensor and
// shapes; the Node process never crashes.
import test from 'ava'
import { mkdirSync, readdirSync, readFileSync, rmSync, truncateSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createRequire } from 'node:module'

import { ERROR_CODES, MoeQuantError, NATIVE_ERROR_CODES, evaluateModel, inspectModel, quantizeModel } from '../dist/index.js'
import { FIXTURES, copyFixture, readJson, readRaw, readTensors, tempDir, writeJson, writeRaw, writeSafetensors } from './helpers/checkpoint.mjs'

const require = createRequire(import.meta.url)

async function rejectsWith(t, promise, code, ...mentions) {
  const error = await t.throwsAsync(promise)
  t.true(error instanceof MoeQuantError, `expected a MoeQuantError, got ${error?.name}: ${error?.message}`)
  t.is(error.code, code, error.message)
  for (const mention of mentions) t.true(error.message.includes(mention), `message should name ${mention}: ${error.message}`)
  return error
}

/** A tiny Qwen3-MoE-shaped checkpoint (H 64, I 48, E 4, one layer) with the given expert tensors. */
function syntheticQwen3(experts, configOverrides = {}) {
  const dir = join(tempDir(), 'model')
  mkdirSync(dir)
  writeJson(join(dir, 'config.json'), {
    model_type: 'qwen3_moe',
    hidden_size: 64,
    num_hidden_layers: 1,
    num_experts: 4,
    num_experts_per_tok: 2,
    moe_intermediate_size: 48,
    intermediate_size: 96,
    vocab_size: 256,
    ...configOverrides,
  })
  writeSafetensors(join(dir, 'model.safetensors'), {
    'model.embed_tokens.weight': { dtype: 'BF16', shape: [256, 64] },
    'model.layers.0.self_attn.q_proj.weight': { dtype: 'BF16', shape: [64, 64] },
    'model.layers.0.mlp.gate.weight': { dtype: 'BF16', shape: [4, 64] },
    ...experts,
  })
  return dir
}

const perExpert = (count, shapeOf = () => null) => {
  const tensors = {}
  for (let e = 0; e < count; e++) {
    for (const [proj, shape] of [['gate_proj', [48, 64]], ['up_proj', [48, 64]], ['down_proj', [64, 48]]]) {
      tensors[`model.layers.0.mlp.experts.${e}.${proj}.weight`] = { dtype: 'BF16', shape: shapeOf(e, proj) ?? shape }
    }
  }
  return tensors
}

test('the native error codes equal the TypeScript list', (t) => {
  t.deepEqual(require('../index.js').errorCodes(), [...NATIVE_ERROR_CODES])
})

test('a synthetic per-expert checkpoint is accepted (the base of the cases below)', async (t) => {
  const report = await inspectModel(syntheticQwen3(perExpert(4)))
  t.is(report.moeLayers[0].experts, 4)
  t.is(report.moeLayers[0].intermediate, 48)
})

test('missing config.json', async (t) => {
  const dir = copyFixture('qwen3_moe/hub')
  rmSync(join(dir, 'config.json'))
  await rejectsWith(t, inspectModel(dir), 'E_CONFIG_MISSING', dir)
})

test('config.json that is not JSON', async (t) => {
  const dir = copyFixture('qwen3_moe/hub')
  writeFileSync(join(dir, 'config.json'), '{"model_type": ')
  await rejectsWith(t, inspectModel(dir), 'E_CONFIG_INVALID', 'config.json')
})

test('a shard named in the index is missing', async (t) => {
  const dir = copyFixture('mixtral/hub_sharded')
  const index = readJson(join(dir, 'model.safetensors.index.json'))
  const shard = Object.values(index.weight_map)[0]
  rmSync(join(dir, shard))
  await rejectsWith(t, inspectModel(dir), 'E_CHECKPOINT_SHARD_MISSING', shard)
})

test('a truncated safetensors file', async (t) => {
  const dir = copyFixture('qwen3_moe/hub')
  const file = join(dir, 'model.safetensors')
  truncateSync(file, Math.floor(statSync(file).size / 2))
  await rejectsWith(t, inspectModel(dir), 'E_CHECKPOINT_TRUNCATED', 'model.safetensors')
})

test('a file truncated inside its header', async (t) => {
  const dir = copyFixture('qwen3_moe/hub')
  truncateSync(join(dir, 'model.safetensors'), 100)
  await rejectsWith(t, inspectModel(dir), 'E_CHECKPOINT_TRUNCATED', 'model.safetensors')
})

test('a header whose offsets run past the end of the file', async (t) => {
  const dir = copyFixture('qwen3_moe/hub')
  const file = join(dir, 'model.safetensors')
  const { header, data } = readRaw(file)
  // Grow the last tensor (by offset) consistently with its shape, without adding data.
  const [name, last] = Object.entries(header)
    .filter(([k]) => k !== '__metadata__')
    .sort((a, b) => b[1].data_offsets[1] - a[1].data_offsets[1])[0]
  const rowBytes = (last.data_offsets[1] - last.data_offsets[0]) / last.shape[0]
  last.shape = [last.shape[0] * 2, ...last.shape.slice(1)]
  last.data_offsets = [last.data_offsets[0], last.data_offsets[0] + rowBytes * last.shape[0]]
  writeRaw(file, header, data)
  await rejectsWith(t, inspectModel(dir), 'E_CHECKPOINT_TRUNCATED', 'model.safetensors')
  t.truthy(name)
})

test('a fused gate_up with an odd split', async (t) => {
  const dir = syntheticQwen3({
    'model.layers.0.mlp.experts.gate_up_proj': { dtype: 'BF16', shape: [4, 95, 64] },
    'model.layers.0.mlp.experts.down_proj': { dtype: 'BF16', shape: [4, 64, 48] },
  })
  const error = await rejectsWith(t, inspectModel(dir), 'E_LAYOUT_ODD_SPLIT', 'model.layers.0.mlp.experts.gate_up_proj', '[4, 95, 64]')
  t.is(error.details.tensor, 'model.layers.0.mlp.experts.gate_up_proj')
})

test('an expert count that disagrees with config.json (per-expert)', async (t) => {
  const dir = syntheticQwen3(perExpert(3))
  await rejectsWith(t, inspectModel(dir), 'E_LAYOUT_EXPERT_COUNT', 'model.layers.0.mlp.experts', '3 experts', 'says 4')
})

test('an expert count that disagrees with config.json (fused)', async (t) => {
  const dir = copyFixture('qwen3_moe/fused')
  const config = readJson(join(dir, 'config.json'))
  for (const key of ['num_experts', 'num_local_experts', 'n_routed_experts']) if (key in config) config[key] = 6
  writeJson(join(dir, 'config.json'), config)
  await rejectsWith(t, inspectModel(dir), 'E_LAYOUT_EXPERT_COUNT', 'gate_up_proj', 'says 6')
})

test('an expert tensor in the wrong orientation (per-expert down_proj stored [I, H])', async (t) => {
  const dir = syntheticQwen3(perExpert(4, (e, proj) => (e === 2 && proj === 'down_proj' ? [48, 64] : null)))
  await rejectsWith(t, inspectModel(dir), 'E_LAYOUT_ORIENTATION', 'model.layers.0.mlp.experts.2.down_proj.weight', '[48, 64]')
})

test('an expert tensor in the wrong orientation (fused gate_up transposed against down)', async (t) => {
  const dir = syntheticQwen3({
    'model.layers.0.mlp.experts.gate_up_proj': { dtype: 'BF16', shape: [4, 64, 96] },
    'model.layers.0.mlp.experts.down_proj': { dtype: 'BF16', shape: [4, 64, 48] },
  })
  await rejectsWith(t, inspectModel(dir), 'E_LAYOUT_ORIENTATION', 'gate_up_proj', '[4, 64, 96]')
})

test('gate/up/down that disagree on I', async (t) => {
  const dir = syntheticQwen3(perExpert(4, (e, proj) => (e === 1 && proj === 'up_proj' ? [40, 64] : null)))
  await rejectsWith(t, inspectModel(dir), 'E_LAYOUT_SHAPE', 'model.layers.0.mlp.experts.1.up_proj.weight')
})

test('a missing expert tensor', async (t) => {
  const tensors = perExpert(4)
  delete tensors['model.layers.0.mlp.experts.1.up_proj.weight']
  await rejectsWith(t, inspectModel(syntheticQwen3(tensors)), 'E_LAYOUT_MISSING_TENSOR', 'model.layers.0.mlp.experts.1.up_proj.weight')
})

test('an unsupported dtype', async (t) => {
  const dir = syntheticQwen3({ ...perExpert(4), 'model.layers.0.mlp.odd': { dtype: 'U16', shape: [4] } })
  await rejectsWith(t, inspectModel(dir), 'E_CHECKPOINT_DTYPE_UNSUPPORTED', 'model.layers.0.mlp.odd', 'U16', 'model.safetensors')
})

test('a dtype safetensors does not know', async (t) => {
  const dir = syntheticQwen3(perExpert(4))
  writeRaw(join(dir, 'model.safetensors'), { 'model.x': { dtype: 'Q4_K', shape: [2], data_offsets: [0, 2] } }, Buffer.alloc(2))
  await rejectsWith(t, inspectModel(dir), 'E_CHECKPOINT_DTYPE_UNSUPPORTED', 'model.x', 'Q4_K')
})

test('a directory with no weights at all', async (t) => {
  const dir = copyFixture('qwen3_moe/hub')
  for (const file of readdirSync(dir)) if (file.endsWith('.safetensors') && file !== 'reference.safetensors') rmSync(join(dir, file))
  rmSync(join(dir, 'reference.safetensors'))
  await rejectsWith(t, inspectModel(dir), 'E_CHECKPOINT_NO_WEIGHTS', dir)
})

test('a path that does not exist', async (t) => {
  await rejectsWith(t, inspectModel(join(tempDir(), 'nope')), 'E_IO', 'nope')
})

test('a bad argument is an option error', async (t) => {
  await rejectsWith(t, inspectModel(42), 'E_OPTION_INVALID')
})

test('errors keep the caller\'s stack', async (t) => {
  const error = await t.throwsAsync(inspectModel(join(tempDir(), 'nope')))
  t.true(error.stack.includes('errors.spec.mjs'), error.stack)
})

test('every error code is documented in the README\'s table', (t) => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  const section = readme.slice(readme.indexOf('## Errors'), readme.indexOf('### Failure behaviour'))
  const documented = new Set([...section.matchAll(/^\| ([^|]+) \|/gm)].flatMap((m) => [...m[1].matchAll(/`(E_[A-Z0-9_]+)`/g)].map((c) => c[1])))
  for (const code of ERROR_CODES) t.true(documented.has(code), `${code} is missing from README.md's Errors table`)
  for (const code of documented) t.true(ERROR_CODES.includes(code), `README.md documents ${code}, which no error carries`)
})

test('a native shape error carries its tensor and shape in details, as the Rust error declares them', async (t) => {
  // An FP8 export whose weight has three scales (neither one per tensor nor one per row): only the native
  // dequantizer, which evaluateModel reads the quantized model through, checks this.
  const parent = tempDir()
  const model = join(FIXTURES, 'qwen3_moe/hub')
  const output = join(parent, 'fp8')
  await quantizeModel({ model, output, format: 'fp8', coverageReport: false, calibration: { ids: [[1, 2, 3, 4]], samples: 1, seqLen: 4 } })
  const file = join(output, 'model.safetensors')
  const tensors = readTensors(file)
  const weight = 'model.layers.0.self_attn.q_proj.weight'
  tensors[`${weight}_scale`] = { dtype: 'F32', shape: [3], values: new Float32Array([1, 1, 1]) }
  writeSafetensors(file, Object.fromEntries(Object.entries(tensors).map(([name, { dtype, shape, values }]) => [name, { dtype, shape, data: Buffer.from(values.buffer) }])))
  const error = await rejectsWith(t, evaluateModel(model, output, { samples: 1, seqLen: 4 }), 'E_TENSOR_SHAPE', weight)
  t.is(error.details.tensor, weight)
  t.is(error.details.shape.length, 2)
  t.regex(error.details.message, /one weight_scale per tensor or one per row/)
})

test('a native error with a path names it as details.file', async (t) => {
  const model = copyFixture('qwen3_moe/hub')
  writeFileSync(join(model, 'model.safetensors'), Buffer.from([1, 2, 3]))
  const error = await rejectsWith(t, inspectModel(model), 'E_CHECKPOINT_TRUNCATED')
  t.is(error.details.file, join(model, 'model.safetensors'))
})
