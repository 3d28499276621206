// inspectModel() against the fixtures' ground truth (fixtures/MANIFEST.json, written by
// tools/make_fixtures.py from the transformers models themselves).
import test from 'ava'
import { join } from 'node:path'

import { expertTensorNames, inspectModel } from '../dist/index.js'
import { FIXTURES, manifest } from './helpers/checkpoint.mjs'

/** The layout kind the manifest's tensor names and in-memory layout imply. */
function expectedLayout(entry) {
  if (entry.expert_tensor_names.some((n) => /\.experts\.\d+\./.test(n))) return 'per_expert'
  const memory = entry.in_memory_experts_layout
  if (entry.layout !== 'fused' && memory.transposed && !memory.gate_up_concatenated) return 'fused_interleaved'
  if (entry.layout !== 'fused' && memory.transposed) return 'fused_transposed'
  return 'fused'
}

for (const entry of manifest()) {
  test(`inspect ${entry.path}: layout, E, K, H, I and layer placement`, async (t) => {
    const report = await inspectModel(join(FIXTURES, entry.path))
    t.is(report.modelType, entry.model_type)
    t.is(report.architecture, 'registry')
    t.is(report.numLayers, entry.num_layers)
    t.is(report.hiddenSize, entry.hidden)
    t.deepEqual(report.moeLayers.map((l) => l.layer), entry.moe_layers)
    t.deepEqual(report.denseLayers, entry.dense_layers)
    for (const layer of report.moeLayers) {
      t.is(layer.layout, expectedLayout(entry))
      t.is(layer.experts, entry.experts)
      t.is(layer.topK, entry.top_k)
      t.is(layer.hidden, entry.hidden)
      t.is(layer.intermediate, entry.intermediate)
      t.is(layer.sharedExperts !== null, entry.shared_experts)
    }
    const first = report.moeLayers.find((l) => l.layer === entry.moe_layers[0])
    t.deepEqual(expertTensorNames(first).sort(), [...entry.expert_tensor_names].sort())
  })
}

test('inspect reports parameter counts that add up', async (t) => {
  const report = await inspectModel(join(FIXTURES, 'qwen3_moe/hub'))
  // 2 MoE layers × 8 experts × 3 projections × 48 × 64.
  t.is(report.parameters.experts, 2 * 8 * 3 * 48 * 64)
  // One token uses K = 2 of the 8 experts per layer.
  t.is(report.parameters.activePerToken, report.parameters.total - report.parameters.experts + 2 * 2 * 3 * 48 * 64)
  t.true(report.parameters.total > report.parameters.experts)
  t.is(report.dtype, 'BF16')
  t.true(report.sizeBytes > 0)
})

test('inspect classifies tensors to quantize and to keep as SPEC §5 says', async (t) => {
  const report = await inspectModel(join(FIXTURES, 'qwen2_moe/hub'))
  const keep = new Map(report.tensors.keep.map((k) => [k.name, k.reason]))
  const quantize = new Set(report.tensors.quantize)
  t.is(keep.get('lm_head.weight'), 'lm_head')
  t.is(keep.get('model.embed_tokens.weight'), 'embedding')
  t.is(keep.get('model.layers.0.mlp.gate.weight'), 'router')
  t.is(keep.get('model.layers.0.mlp.shared_expert_gate.weight'), 'router')
  t.is(keep.get('model.layers.0.input_layernorm.weight'), 'norm')
  t.is(keep.get('model.norm.weight'), 'norm')
  for (const name of [
    'model.layers.0.self_attn.q_proj.weight',
    'model.layers.0.self_attn.o_proj.weight',
    'model.layers.0.mlp.shared_expert.gate_proj.weight',
    'model.layers.1.mlp.experts.7.down_proj.weight',
  ]) {
    t.true(quantize.has(name), name)
  }
  t.is(quantize.size + keep.size, report.tensors.quantize.length + report.tensors.keep.length)
})

test('GPT-OSS experts are interleaved because the registry says so, not because the structure could tell', async (t) => {
  const report = await inspectModel(join(FIXTURES, 'gpt_oss/hub'))
  const layer = report.moeLayers[0]
  t.is(layer.layout, 'fused_interleaved')
  t.is(layer.tensors.gateUpBias, 'model.layers.0.mlp.experts.gate_up_proj_bias')
  t.is(layer.tensors.downBias, 'model.layers.0.mlp.experts.down_proj_bias')
  t.is(layer.tensors.routerBias, 'model.layers.0.mlp.router.bias')
})

test('DeepSeek-V3 reports its correction bias, dense first layer and ungated shared experts', async (t) => {
  const report = await inspectModel(join(FIXTURES, 'deepseek_v3/hub'))
  const layer = report.moeLayers[0]
  t.is(layer.router, 'sigmoid_group_topk')
  t.is(layer.tensors.correctionBias, 'model.layers.1.mlp.gate.e_score_correction_bias')
  t.deepEqual(report.denseLayers, [0])
  t.is(layer.sharedExperts.module, 'model.layers.1.mlp.shared_experts')
  t.is(layer.sharedExperts.gate, undefined)
})

test('a sharded checkpoint lists every shard', async (t) => {
  const report = await inspectModel(join(FIXTURES, 'mixtral/hub_sharded'))
  t.true(report.files.length > 1)
  const single = await inspectModel(join(FIXTURES, 'mixtral/hub'))
  t.is(report.parameters.total, single.parameters.total)
  t.deepEqual(report.tensors.quantize.sort(), single.tensors.quantize.sort())
})
