// Config variants, the generic structural match, text_config nesting, and the registry winning over
// structure.
import test from 'ava'
import { readdirSync, renameSync } from 'node:fs'
import { join } from 'node:path'

import { inspectModel } from '../dist/index.js'
import { parseConfig } from '../dist/model/config.js'
import { copyFixture, readJson, readRaw, writeJson, writeRaw } from './helpers/checkpoint.mjs'

function editConfig(dir, edit) {
  const config = readJson(join(dir, 'config.json'))
  writeJson(join(dir, 'config.json'), edit(config) ?? config)
}

/** Renames every tensor of every weight file of `dir` with `rename(name)`. */
function renameTensors(dir, rename) {
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.safetensors') && f !== 'reference.safetensors')) {
    const { header, data } = readRaw(join(dir, file))
    const renamed = {}
    for (const [name, info] of Object.entries(header)) renamed[name === '__metadata__' ? name : rename(name)] = info
    writeRaw(join(dir, file), renamed, data)
  }
}

for (const key of ['num_experts', 'num_local_experts', 'n_routed_experts']) {
  test(`the expert count is read from ${key}`, async (t) => {
    const dir = copyFixture('qwen3_moe/hub')
    editConfig(dir, (c) => {
      const experts = c.num_experts ?? c.num_local_experts
      delete c.num_experts
      delete c.num_local_experts
      c[key] = experts
    })
    const report = await inspectModel(dir)
    t.is(report.moeLayers[0].experts, 8)
  })
}

test('rope_theta + rope_scaling (older configs) and rope_parameters (transformers 5) are both read', (t) => {
  const old = parseConfig(
    JSON.stringify({ model_type: 'x', hidden_size: 8, num_hidden_layers: 1, rope_theta: 1e6, rope_scaling: { rope_type: 'yarn', factor: 4 } }),
    'config.json',
  )
  t.is(old.ropeTheta, 1e6)
  t.is(old.ropeScaling.rope_type, 'yarn')
  const v5 = parseConfig(
    JSON.stringify({ model_type: 'x', hidden_size: 8, num_hidden_layers: 1, rope_parameters: { rope_type: 'llama3', rope_theta: 5e5, factor: 8 } }),
    'config.json',
  )
  t.is(v5.ropeTheta, 5e5)
  t.is(v5.ropeScaling.rope_type, 'llama3')
})

test('config values that are zero, negative or not integers are rejected with the field named', (t) => {
  for (const bad of [0, -4, 2.5, 'many']) {
    const error = t.throws(() => parseConfig(JSON.stringify({ model_type: 'x', hidden_size: bad, num_hidden_layers: 1 }), 'm/config.json'))
    t.is(error.code, 'E_CONFIG_INVALID')
    t.true(error.message.includes('hidden_size') && error.message.includes('m/config.json'), error.message)
  }
})

test('a model nested under text_config with weights under model.language_model is handled', async (t) => {
  const dir = copyFixture('qwen3_moe/hub')
  editConfig(dir, (c) => ({ model_type: 'qwen3_moe_vl_wrapper', architectures: ['Wrapper'], text_config: c }))
  renameTensors(dir, (name) => name.replace(/^model\./, 'model.language_model.'))
  const report = await inspectModel(dir)
  t.is(report.modelType, 'qwen3_moe')
  t.is(report.architecture, 'registry')
  t.is(report.moeLayers[0].block, 'model.language_model.layers.0.mlp')
  t.true(report.notes.some((n) => n.includes('text_config')))
})

test('an unknown model_type whose tensors follow a known pattern is handled generically, and says so', async (t) => {
  const dir = copyFixture('qwen3_moe/fused')
  editConfig(dir, (c) => {
    c.model_type = 'brand_new_moe'
  })
  const report = await inspectModel(dir)
  t.is(report.architecture, 'generic')
  t.is(report.family, 'brand_new_moe (generic)')
  t.is(report.moeLayers[0].layout, 'fused')
  t.is(report.moeLayers.length, 2)
  t.true(report.notes.some((n) => n.includes('brand_new_moe') && n.includes('structure')))
})

test('generic handling also covers transposed fused experts', async (t) => {
  const dir = copyFixture('llama4_text/hub')
  editConfig(dir, (c) => {
    c.model_type = 'someone_elses_moe'
  })
  const report = await inspectModel(dir)
  t.is(report.architecture, 'generic')
  t.is(report.moeLayers[0].layout, 'fused_transposed')
})

test('the registry entry wins: a Qwen3-MoE config over Granite-named experts is refused', async (t) => {
  const dir = copyFixture('granitemoe/hub')
  editConfig(dir, (c) => {
    c.model_type = 'qwen3_moe'
    c.num_experts = c.num_local_experts
  })
  const error = await t.throwsAsync(inspectModel(dir))
  t.is(error.code, 'E_LAYOUT_UNRECOGNISED')
  t.true(error.message.includes('Qwen3-MoE') && error.message.includes('input_linear.weight'), error.message)
  // The same tensors under an unknown model_type are accepted generically.
  editConfig(dir, (c) => {
    c.model_type = 'unknown_granite_like'
  })
  const report = await inspectModel(dir)
  t.is(report.architecture, 'generic')
})

test('a placement rule that disagrees with the tensors is an error', async (t) => {
  const dir = copyFixture('deepseek_v3/hub')
  editConfig(dir, (c) => {
    c.first_k_dense_replace = 0
  })
  const error = await t.throwsAsync(inspectModel(dir))
  t.is(error.code, 'E_LAYOUT_UNRECOGNISED')
  t.true(error.message.includes('first_k_dense'), error.message)
})

test('a renamed directory inspects the same', async (t) => {
  const dir = copyFixture('olmoe/fused')
  const moved = `${dir}-moved`
  renameSync(dir, moved)
  const report = await inspectModel(moved)
  t.is(report.dir, moved)
})

test('config fields are read through the family table: DBRX, ERNIE, LongCat, Nemotron-H, Qwen3-Omni spellings', async (t) => {
  const { parseConfig } = await import('../dist/model/config.js')
  const dbrx = parseConfig(JSON.stringify({ model_type: 'dbrx', d_model: 64, n_layers: 2, n_heads: 4, ffn_config: { moe_num_experts: 8, moe_top_k: 2, ffn_hidden_size: 48 }, attn_config: { kv_n_heads: 2 } }), 'config.json')
  t.like(dbrx, { hiddenSize: 64, numLayers: 2, numExperts: 8, topK: 2, expertIntermediateCandidates: [48], numAttentionHeads: 4, numKeyValueHeads: 2 })
  const ernie = parseConfig(JSON.stringify({ model_type: 'ernie4_5_moe', hidden_size: 64, num_hidden_layers: 4, moe_num_experts: 8, moe_k: 2, moe_intermediate_size: 48, intermediate_size: 80 }), 'config.json')
  t.like(ernie, { numExperts: 8, topK: 2, expertIntermediateCandidates: [48, 80] })
  // A family the table marks as not handled is refused up front, saying why.
  const ernieVl = JSON.stringify({ model_type: 'ernie4_5_vl_moe', text_config: { model_type: 'ernie4_5_vl_moe_text', hidden_size: 64, num_hidden_layers: 4, moe_num_experts: 8 } })
  t.throws(() => parseConfig(ernieVl, 'config.json'), { code: 'E_MODEL_UNSUPPORTED', message: /^config\.json: model_type "ernie4_5_vl_moe_text" is not handled: each MoE block holds text and vision experts/ })
  t.throws(() => parseConfig(JSON.stringify({ model_type: 'switch_transformers', is_encoder_decoder: true, d_model: 64 }), 'config.json'), { code: 'E_MODEL_UNSUPPORTED', message: /encoder-decoder/ })
  const nemotron = parseConfig(JSON.stringify({ model_type: 'nemotron_h', hidden_size: 64, layers_block_type: ['mamba', 'moe', 'attention'], n_routed_experts: 8 }), 'config.json')
  t.is(nemotron.numLayers, 3)
  const omni = parseConfig(JSON.stringify({ model_type: 'qwen3_omni_moe', thinker_config: { text_config: { model_type: 'qwen3_omni_moe_text', hidden_size: 64, num_hidden_layers: 2, num_experts: 8 } } }), 'config.json')
  t.like(omni, { modelType: 'qwen3_omni_moe_text', nested: true, hiddenSize: 64, numExperts: 8 })
  // The family's spelling is the one messages name.
  t.throws(() => parseConfig(JSON.stringify({ model_type: 'dbrx', d_model: 0, n_layers: 2 }), 'config.json'), { code: 'E_CONFIG_INVALID', message: 'config.json: "d_model" must be an integer from 1 to 1048576, got 0' })
  t.throws(() => parseConfig(JSON.stringify({ model_type: 'dbrx', d_model: 64 }), 'config.json'), { code: 'E_CONFIG_INVALID', message: 'config.json: missing required field "n_layers"' })
})

test('a dense model is refused, saying moe-quant quantizes Mixture-of-Experts models (and three dense families)', async (t) => {
  const dir = copyFixture('qwen3_moe/hub')
  editConfig(dir, (c) => {
    c.model_type = 'gemma'
    delete c.num_experts
    delete c.num_local_experts
  })
  // Keep only what a dense Llama has: drop every expert and router tensor.
  const file = join(dir, 'model.safetensors')
  const { header, data } = readRaw(file)
  const kept = {}
  const chunks = []
  let offset = 0
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__' || /mlp\.(experts|gate)\./.test(name)) continue
    const bytes = data.subarray(info.data_offsets[0], info.data_offsets[1])
    kept[name] = { ...info, data_offsets: [offset, offset + bytes.length] }
    chunks.push(bytes)
    offset += bytes.length
  }
  writeRaw(file, kept, Buffer.concat(chunks))
  const error = await t.throwsAsync(inspectModel(dir), { code: 'E_MODEL_UNSUPPORTED' })
  t.regex(error.message, /^this gemma checkpoint is a dense model .*: moe-quant quantizes Mixture-of-Experts models, and of the dense ones Llama, Qwen3 and Mistral$/)
})
