// describeModel() / buildDescriptor(): the model descriptor the Rust forward is given, checked against the
// fixtures' checkpoints (every referenced tensor exists with the rank the forward expects) and against
// values transformers 5.17 derives from their configs.
import test from 'ava'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

import { describeModel } from '../dist/index.js'
import { parseConfig } from '../dist/model/config.js'
import { reportFromListing } from '../dist/model/inspection.js'
import { readListing } from '../dist/model/listing.js'
import { buildDescriptor } from '../dist/model/spec/index.js'
import { FIXTURES, FORWARD_REFUSED_LAYOUTS, calibratedFamilyFixtures, manifest } from './helpers/checkpoint.mjs'

/**
 * Every tensor a descriptor references, with the rank the forward expects: module names get `.weight`
 * (and `.bias` where flagged) appended as the Rust loader does; `{e}` is expanded over the experts.
 */
function referencedTensors(d) {
  const refs = []
  const tensor = (name, rank) => refs.push([name, rank])
  const linear = (module, bias = false) => {
    tensor(`${module}.weight`, 2)
    if (bias) tensor(`${module}.bias`, 1)
  }
  // LayerNorms have a bias beside each weight.
  const norm = (weight) => {
    tensor(weight, 1)
    if (d.norm === 'layer') tensor(weight.replace(/weight$/, 'bias'), 1)
  }
  tensor(d.embed, 2)
  norm(d.final_norm)
  tensor(d.lm_head, 2)
  if (d.lm_head_bias) tensor(d.lm_head_bias, 1)
  const dense = (mlp) => {
    for (const m of [mlp.gate, mlp.up, mlp.gate_up, mlp.down]) if (m) linear(m)
  }
  const mixer = (a) => {
    if (!a) {
      // A single-mixer layer whose mixer is its MLP.
    } else if (a.kind === 'mamba2') {
      linear(a.in_proj, a.proj_bias)
      linear(a.out_proj, a.proj_bias)
      tensor(`${a.conv1d}.weight`, 3)
      if (a.conv_bias) tensor(`${a.conv1d}.bias`, 1)
      for (const name of [a.a_log, a.d, a.dt_bias, a.norm]) tensor(name, 1)
    } else if (a.kind === 'mamba') {
      linear(a.in_proj, a.proj_bias)
      linear(a.out_proj, a.proj_bias)
      linear(a.x_proj)
      linear(a.dt_proj, true)
      tensor(`${a.conv1d}.weight`, 3)
      if (a.conv_bias) tensor(`${a.conv1d}.bias`, 1)
      tensor(a.a_log, 2)
      tensor(a.d, 1)
      for (const name of [a.dt_norm, a.b_norm, a.c_norm]) if (name) tensor(name, 1)
    } else if (a.kind === 'short_conv') {
      linear(a.in_proj, a.bias)
      linear(a.out_proj, a.bias)
      tensor(`${a.conv}.weight`, 3)
      if (a.bias) tensor(`${a.conv}.bias`, 1)
    } else if (a.kind === 'lightning') {
      for (const m of [a.qkv_proj, a.output_gate, a.out_proj]) linear(m)
      tensor(a.norm, 1)
      if (a.stored_decays) {
        for (const name of ['slope_rate', 'query_decay', 'key_decay']) tensor(`${a.stored_decays}.${name}`, 3)
        tensor(`${a.stored_decays}.diagonal_decay`, 4)
      }
    } else if (a.kind === 'gqa') {
      for (const m of [a.q, a.k, a.v]) linear(m, a.qkv_bias)
      linear(a.o, a.o_bias)
      if (a.q_norm) tensor(a.q_norm, 1)
      if (a.k_norm) tensor(a.k_norm, 1)
      if (a.sinks) tensor(a.sinks, 1)
    } else if (a.kind === 'kimi_delta_attention') {
      for (const m of [a.q_proj, a.k_proj, a.v_proj, a.f_a_proj, a.f_b_proj, a.b_proj, a.g_a_proj, a.g_b_proj, a.o_proj]) linear(m)
      for (const name of a.conv1d) tensor(name, 3)
      for (const name of [a.dt_bias, a.norm]) tensor(name, 1)
      tensor(a.a_log, 4)
    } else if (a.kind === 'gated_delta_net') {
      const p = a.projections
      for (const m of p.layout === 'grouped' ? [p.qkvz, p.ba] : [p.qkv, p.z, p.b, p.a]) linear(m)
      linear(a.out_proj)
      tensor(a.conv1d, 3)
      for (const name of [a.dt_bias, a.a_log, a.norm]) tensor(name, 1)
    } else {
      for (const m of [a.q_proj, a.q_a_proj, a.q_b_proj, a.kv_a_proj, a.kv_b_proj, a.o_proj]) if (m) linear(m)
      if (a.q_a_norm) tensor(a.q_a_norm, 1)
      tensor(a.kv_a_norm, 1)
      const indexer = a.sparse?.indexer
      if (indexer) {
        for (const m of [indexer.wq_b, indexer.wk, indexer.weights_proj]) linear(m)
        tensor(indexer.k_norm, 1)
        tensor(indexer.k_norm.replace(/weight$/, 'bias'), 1)
      }
    }
  }
  for (const layer of d.layers) {
    norm(layer.input_norm)
    if (layer.post_attention_norm) norm(layer.post_attention_norm)
    if (layer.output_norms) for (const name of [layer.output_norms.attention, layer.output_norms.mlp]) norm(name)
    if (layer.output_scale) tensor(layer.output_scale, 1)
    mixer(layer.attention)
    // LongCat-Flash: the second attention and the two dense MLPs with their norms.
    const double = layer.double
    if (double) {
      for (const weight of [double.input_norm, double.post_attention_norm]) norm(weight)
      mixer(double.attention)
      dense(double.first_mlp)
      dense(double.second_mlp)
    }
    const mlp = layer.mlp
    if (!mlp) continue
    if (mlp.kind === 'dense') {
      dense(mlp)
      continue
    }
    tensor(mlp.router.weight, 2)
    if (mlp.router.bias) tensor(mlp.router.bias, 1)
    if (mlp.router.input_scale) tensor(mlp.router.input_scale.scale, 1)
    if (mlp.router.per_expert_scale) tensor(mlp.router.per_expert_scale, 1)
    if (mlp.branch_norms) for (const name of Object.values(mlp.branch_norms)) norm(name)
    // [E], or ERNIE's [1, E].
    if (mlp.router.correction_bias) tensor(mlp.router.correction_bias, mlp.router.correction_bias.includes('moe_statics') ? 2 : 1)
    const perExpert = mlp.layout === 'per_expert'
    for (const name of [mlp.gate, mlp.up, mlp.down, mlp.gate_up]) {
      if (!name) continue
      if (perExpert) for (let e = 0; e < mlp.experts; e++) tensor(name.replace('{e}', String(e)), 2)
      else tensor(name, 3)
    }
    for (const name of [mlp.gate_up_bias, mlp.down_bias]) if (name) tensor(name, 2)
    if (mlp.shared) {
      dense(mlp.shared.mlp)
      if (mlp.shared.gate) tensor(mlp.shared.gate, 2)
    }
  }
  return refs
}

/** Checks that the values Rust deserializes as usize are non-negative integers and no value is lost in JSON. */
function checkSerializable(t, d) {
  t.deepEqual(JSON.parse(JSON.stringify(d)), d)
  const usize = (v) => Number.isSafeInteger(v) && v >= 0
  t.true([d.hidden_size, d.vocab_size, ...(d.rope ? [d.rope.rotary_dim] : [])].every(usize))
  for (const [layer, a] of d.layers.flatMap((l) => [[l, l.attention], ...(l.double ? [[l, l.double.attention]] : [])])) {
    const ints =
      !a ? []
      : a.kind === 'gqa' ? [a.num_heads, a.num_kv_heads, a.head_dim]
      : a.kind === 'gated_delta_net' ? [a.num_key_heads, a.num_value_heads, a.key_head_dim, a.value_head_dim, a.conv_kernel]
      : a.kind === 'kimi_delta_attention' ? [a.num_heads, a.head_dim, a.conv_kernel]
      : a.kind === 'mamba2' ? [a.num_heads, a.head_dim, a.n_groups, a.state_size, a.conv_kernel, a.chunk_size]
      : a.kind === 'mamba' ? [a.intermediate_size, a.state_size, a.dt_rank, a.conv_kernel]
      : a.kind === 'short_conv' ? [a.conv_kernel]
      : a.kind === 'lightning' ? [a.num_heads, a.head_dim, a.block_size, a.layer_index, a.num_layers]
      : [a.num_heads, a.kv_lora_rank, a.qk_nope_head_dim, a.qk_rope_head_dim, a.v_head_dim]
    const indexer = a?.kind === 'mla' ? a.sparse?.indexer : undefined
    if (a?.kind === 'mla' && a.sparse) ints.push(a.sparse.top_k)
    if (indexer) ints.push(indexer.num_heads, indexer.head_dim, indexer.rope_dim)
    t.true(ints.every(usize), `layer ${layer.index} attention sizes`)
    if (layer.mlp?.kind === 'moe') {
      const m = layer.mlp
      t.true([m.experts, m.top_k, m.hidden, m.intermediate, m.router.n_group, m.router.topk_group, m.zero_experts ?? 0].every(usize))
    }
  }
}

for (const entry of [...manifest(), ...calibratedFamilyFixtures()]) {
  const dir = join(FIXTURES, entry.path)
  test(`describe ${entry.path}: every referenced tensor exists with the expected rank`, async (t) => {
    const d = await describeModel(dir)
    const listing = await readListing(dir)
    const byName = new Map(listing.tensors.map((x) => [x.name, x]))
    const refs = referencedTensors(d)
    for (const [name, rank] of refs) {
      const found = byName.get(name)
      t.truthy(found, `${name} is referenced but not in the checkpoint`)
      if (found) t.is(found.shape.length, rank, `${name} ${JSON.stringify(found.shape)}`)
    }
    // Nothing of the checkpoint's text model is left out of the forward (vision and audio towers and projectors are not
    // part of it).
    const referenced = new Set(refs.map(([name]) => name))
    const tower = /^(model\.)?(visual|vision_tower|vision_model|sam_model|qwen2_model|mm_projector|multi_modal_projector|projector|audio_tower|embed_vision|embed_audio)\.|^model\.(view_separator|view_seperator|image_newline)$/
    const text = listing.tensors.map((x) => x.name).filter((n) => !tower.test(n))
    t.deepEqual(text.filter((n) => !referenced.has(n)), [])

    t.is(d.hidden_size, entry.hidden)
    t.is(d.vocab_size, 256)
    t.is(d.layers.length, entry.num_layers)
    t.deepEqual(d.layers.map((l) => l.index), [...Array(entry.num_layers).keys()])
    t.deepEqual(d.layers.filter((l) => l.mlp?.kind === 'moe').map((l) => l.index), entry.moe_layers)
    // Layers without routed experts: a dense MLP, or (single-mixer layers) none.
    t.deepEqual(d.layers.filter((l) => l.mlp?.kind !== 'moe').map((l) => l.index), entry.dense_layers)
    for (const layer of d.layers.filter((l) => l.mlp?.kind === 'moe')) {
      t.is(layer.mlp.experts, entry.experts)
      t.is(layer.mlp.top_k, entry.top_k)
      t.is(layer.mlp.intermediate, entry.intermediate)
      // Gemma 4's experts take its hidden_activation (the text fixture gelu_pytorch_tanh, the wrapper's gelu).
      const gemma = { gemma4_text: 'gelu_tanh', gemma4: 'gelu' }[entry.model_type]
      t.is(layer.mlp.activation, { gpt_oss: 'gpt_oss', nemotron_h: 'relu2' }[entry.model_type] ?? gemma ?? 'silu')
      // Gemma 4's dense MLP beside the experts is the MoE block's shared branch; its block is the decoder layer.
      t.is(layer.mlp.shared !== undefined, entry.shared_experts || gemma !== undefined)
      t.regex(layer.mlp.block, new RegExp(`^((model|backbone)\\.(language_model\\.)?layers|language_model\\.model\\.blocks)\\.${layer.index}(\\.|$)`))
      t.true(layer.mlp.down.startsWith(`${layer.mlp.block}.`))
    }
    checkSerializable(t, d)
  })
}

// ---------------------------------------------------------------------------------------------------------
// Family values pinned against the fixture configs and transformers' code.

const describe = (path) => describeModel(join(FIXTURES, path))

/** The descriptor of a fixture after editing its config.json text and/or its tensor list (no files written). */
async function variant(path, { config, tensors } = {}) {
  const listing = await readListing(join(FIXTURES, path))
  if (config) {
    const json = JSON.parse(listing.config)
    listing.config = JSON.stringify(config(json) ?? json)
  }
  if (tensors) listing.tensors = tensors(listing.tensors) ?? listing.tensors
  return buildDescriptor(reportFromListing(listing), parseConfig(listing.config, 'config.json'), listing)
}

const close = (t, actual, expected, what) => t.true(Math.abs(actual - expected) <= 1e-12 * Math.abs(expected), `${what}: ${actual} vs ${expected}`)

test('qwen3_moe: per-head q/k norms, renormalised softmax top-k, no biases', async (t) => {
  const d = await describe('qwen3_moe/hub')
  const a = d.layers[0].attention
  t.is(a.kind, 'gqa')
  t.like(a, { num_heads: 4, num_kv_heads: 2, head_dim: 16, qkv_bias: false, o_bias: false, scaling: 0.25 })
  t.is(a.q_norm, 'model.layers.0.self_attn.q_norm.weight')
  t.is(a.k_norm, 'model.layers.0.self_attn.k_norm.weight')
  t.is(d.rms_norm_eps, 1e-6)
  t.deepEqual(d.rope, { kind: 'default', theta: 10000, rotary_dim: 16, interleaved: false })
  t.like(d.layers[0].mlp.router, { kind: 'softmax_topk', norm_topk_prob: true, weight: 'model.layers.0.mlp.gate.weight' })
  t.is(d.layers[0].mlp.gate, 'model.layers.0.mlp.experts.{e}.gate_proj.weight')
  t.like(d, { embed: 'model.embed_tokens.weight', lm_head: 'lm_head.weight', final_norm: 'model.norm.weight' })
  t.like(d, { embedding_multiplier: 1, logits_scaling: 1 })
  t.is(d.layers[0].residual_multiplier, 1)
  const fused = await describe('qwen3_moe/fused')
  t.like(fused.layers[1].mlp, { layout: 'fused', gate_up: 'model.layers.1.mlp.experts.gate_up_proj', down: 'model.layers.1.mlp.experts.down_proj' })
})

test('qwen2_moe: q/k/v biases, sigmoid-gated shared expert, softmax top-k without renormalisation', async (t) => {
  const d = await describe('qwen2_moe/hub')
  t.like(d.layers[0].attention, { kind: 'gqa', qkv_bias: true, o_bias: false })
  t.is(d.layers[0].attention.q_norm, undefined)
  const mlp = d.layers[0].mlp
  t.like(mlp.router, { kind: 'softmax_topk', norm_topk_prob: false })
  t.deepEqual(mlp.shared, {
    mlp: {
      gate: 'model.layers.0.mlp.shared_expert.gate_proj',
      up: 'model.layers.0.mlp.shared_expert.up_proj',
      down: 'model.layers.0.mlp.shared_expert.down_proj',
      activation: 'silu',
    },
    gate: 'model.layers.0.mlp.shared_expert_gate.weight',
  })
})

test('mixtral: always-renormalised router, hub w1/w3/w2 names, rms_norm_eps 1e-5', async (t) => {
  const d = await describe('mixtral/hub')
  const mlp = d.layers[0].mlp
  t.like(mlp, { block: 'model.layers.0.block_sparse_moe', layout: 'per_expert' })
  t.like(mlp, { gate: 'model.layers.0.block_sparse_moe.experts.{e}.w1.weight', up: 'model.layers.0.block_sparse_moe.experts.{e}.w3.weight', down: 'model.layers.0.block_sparse_moe.experts.{e}.w2.weight' })
  t.like(mlp.router, { kind: 'softmax_topk_norm', norm_topk_prob: true, weight: 'model.layers.0.block_sparse_moe.gate.weight' })
  t.is(d.rms_norm_eps, 1e-5)
})

test('olmoe: q/k norms over the whole projection, no renormalisation', async (t) => {
  const d = await describe('olmoe/hub')
  const listing = await readListing(join(FIXTURES, 'olmoe/hub'))
  const shape = (name) => listing.tensors.find((x) => x.name === name).shape
  const a = d.layers[0].attention
  t.deepEqual(shape(a.q_norm), [4 * 16])
  t.deepEqual(shape(a.k_norm), [2 * 16])
  t.like(d.layers[0].mlp.router, { kind: 'softmax_topk', norm_topk_prob: false })
})

test('deepseek_v3: MLA dims, interleaved rope over qk_rope_head_dim, grouped sigmoid router, ungated shared experts', async (t) => {
  const d = await describe('deepseek_v3/hub')
  t.deepEqual(d.rope, { kind: 'default', theta: 10000, rotary_dim: 8, interleaved: true })
  const a = d.layers[0].attention
  t.is(a.kind, 'mla')
  t.like(a, { num_heads: 4, kv_lora_rank: 16, qk_nope_head_dim: 16, qk_rope_head_dim: 8, v_head_dim: 16 })
  t.like(a, {
    q_a_proj: 'model.layers.0.self_attn.q_a_proj',
    q_a_norm: 'model.layers.0.self_attn.q_a_layernorm.weight',
    q_b_proj: 'model.layers.0.self_attn.q_b_proj',
    kv_a_proj: 'model.layers.0.self_attn.kv_a_proj_with_mqa',
    kv_a_norm: 'model.layers.0.self_attn.kv_a_layernorm.weight',
    kv_b_proj: 'model.layers.0.self_attn.kv_b_proj',
    o_proj: 'model.layers.0.self_attn.o_proj',
  })
  t.is(a.q_proj, undefined)
  close(t, a.scaling, (16 + 8) ** -0.5, 'qk_head_dim^-0.5')
  t.deepEqual(d.layers[0].mlp, {
    kind: 'dense',
    gate: 'model.layers.0.mlp.gate_proj',
    up: 'model.layers.0.mlp.up_proj',
    down: 'model.layers.0.mlp.down_proj',
    activation: 'silu',
  })
  const mlp = d.layers[1].mlp
  t.deepEqual(mlp.router, {
    kind: 'sigmoid_group_topk',
    weight: 'model.layers.1.mlp.gate.weight',
    norm_min: 0,
    jitter_eps: 0,
    correction_bias: 'model.layers.1.mlp.gate.e_score_correction_bias',
    norm_topk_prob: true,
    n_group: 2,
    topk_group: 1,
    routed_scaling_factor: 2.5,
  })
  t.deepEqual(mlp.shared, {
    mlp: {
      gate: 'model.layers.1.mlp.shared_experts.gate_proj',
      up: 'model.layers.1.mlp.shared_experts.up_proj',
      down: 'model.layers.1.mlp.shared_experts.down_proj',
      activation: 'silu',
    },
  })
})

test('deepseek_v3: q_lora_rank null uses q_proj', async (t) => {
  const d = await variant('deepseek_v3/hub', {
    config: (c) => {
      c.q_lora_rank = null
    },
    tensors: (list) => {
      const kept = list.filter((x) => !/self_attn\.q_(a_proj|a_layernorm|b_proj)\./.test(x.name))
      for (const layer of [0, 1]) {
        kept.push({ name: `model.layers.${layer}.self_attn.q_proj.weight`, dtype: 'BF16', shape: [4 * 24, 64], file: 'model.safetensors', bytes: 4 * 24 * 64 * 2 })
      }
      return kept
    },
  })
  const a = d.layers[1].attention
  t.is(a.q_proj, 'model.layers.1.self_attn.q_proj')
  t.is(a.q_a_proj, undefined)
  t.is(a.q_b_proj, undefined)
  t.is(a.q_a_norm, undefined)
})

test('deepseek_v3: yarn rope (old rope_scaling) and the mscale² attention scaling match transformers', async (t) => {
  const d = await variant('deepseek_v3/hub', {
    config: (c) => {
      delete c.rope_parameters
      c.rope_theta = 10000
      c.max_position_embeddings = 163840
      c.rope_scaling = { type: 'yarn', factor: 40, mscale: 1.0, mscale_all_dim: 1.0, original_max_position_embeddings: 4096, beta_fast: 32, beta_slow: 1 }
    },
  })
  // transformers 5.17: DeepseekV3Attention(config).scaling and DeepseekV3RotaryEmbedding(config).attention_scaling.
  close(t, d.layers[0].attention.scaling, 0.38249888831204115, 'scaling')
  t.like(d.rope, { kind: 'yarn', theta: 10000, rotary_dim: 8, interleaved: true, factor: 40, original_max_position_embeddings: 4096 })
  t.like(d.rope, { beta_fast: 32, beta_slow: 1, mscale: 1, mscale_all_dim: 1, attention_factor: 1, truncate: true })
})

test('yarn defaults are resolved as transformers does (attention factor from the factor alone)', async (t) => {
  const d = await variant('qwen3_moe/hub', {
    config: (c) => {
      delete c.rope_parameters
      c.rope_theta = 500000
      c.rope_scaling = { rope_type: 'yarn', factor: 4.0, original_max_position_embeddings: 64 }
    },
  })
  // transformers 5.17: _compute_yarn_parameters(Qwen3MoeConfig(...)) returns attention factor 1.138629436111989.
  close(t, d.rope.attention_factor, 1.138629436111989, 'attention_factor')
  t.like(d.rope, { kind: 'yarn', theta: 500000, rotary_dim: 16, factor: 4, original_max_position_embeddings: 64, beta_fast: 32, beta_slow: 1, truncate: true })
  t.is(d.layers[0].attention.scaling, 0.25)
})

test('linear and llama3 rope parameters are copied; unsupported rope types are refused', async (t) => {
  const linear = await variant('qwen3_moe/hub', { config: (c) => void (c.rope_parameters = { rope_type: 'linear', factor: 2, rope_theta: 1e6 }) })
  t.deepEqual(linear.rope, { kind: 'linear', theta: 1e6, rotary_dim: 16, interleaved: false, factor: 2 })
  const llama3 = await variant('qwen3_moe/hub', {
    config: (c) => void (c.rope_parameters = { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, rope_theta: 5e5 }),
  })
  // original_max_position_embeddings defaults to max_position_embeddings (standardize_rope_params).
  t.like(llama3.rope, { kind: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 256 })
  await t.throwsAsync(variant('qwen3_moe/hub', { config: (c) => void (c.rope_parameters = { rope_type: 'longrope', rope_theta: 1e4 }) }), {
    code: 'E_MODEL_UNSUPPORTED',
    message: /rope type "longrope"/,
  })
})

test('glm4_moe: partial rotary (head_dim / 2), q/k/v biases, grouped sigmoid router, dense first layer', async (t) => {
  const d = await describe('glm4_moe/hub')
  const a = d.layers[1].attention
  t.like(a, { kind: 'gqa', head_dim: 16, qkv_bias: true, o_bias: false, scaling: 0.25 })
  t.is(d.rope.rotary_dim, a.head_dim / 2)
  t.false(d.rope.interleaved)
  t.is(a.q_norm, undefined) // use_qk_norm false
  t.like(d.layers[1].mlp.router, { kind: 'sigmoid_group_topk', n_group: 1, topk_group: 1, routed_scaling_factor: 2.5, norm_topk_prob: true })
  t.is(d.layers[1].mlp.shared.gate, undefined)
  t.is(d.layers[0].mlp.kind, 'dense')
  // transformers' GLM4 default partial_rotary_factor is 0.5 even when config.json does not say it.
  const bare = await variant('glm4_moe/hub', {
    config: (c) => {
      delete c.partial_rotary_factor
      delete c.rope_parameters.partial_rotary_factor
    },
  })
  t.is(bare.rope.rotary_dim, 8)
  const full = await variant('glm4_moe/hub', { config: (c) => void (c.rope_parameters.partial_rotary_factor = 1.0) })
  t.is(full.rope.rotary_dim, 16)
})

test('granitemoe: embedding, residual, logits and attention multipliers', async (t) => {
  const d = await describe('granitemoe/hub')
  t.is(d.embedding_multiplier, 12)
  t.is(d.logits_scaling, 4)
  for (const layer of d.layers) {
    t.is(layer.residual_multiplier, 0.22)
    t.is(layer.attention.scaling, 0.0625)
    t.like(layer.mlp, { layout: 'fused', gate_up: `model.layers.${layer.index}.block_sparse_moe.input_linear.weight` })
    t.like(layer.mlp.router, { kind: 'topk_softmax', weight: `model.layers.${layer.index}.block_sparse_moe.router.layer.weight` })
  }
  const fused = await describe('granitemoe/fused')
  t.is(fused.layers[0].mlp.router.weight, 'model.layers.0.block_sparse_moe.router.weight')
})

test('absent config keys take the family defaults of transformers', async (t) => {
  const qwen = await variant('qwen3_moe/hub', {
    config: (c) => {
      delete c.rms_norm_eps
      delete c.norm_topk_prob
      delete c.rope_parameters
    },
  })
  t.is(qwen.rms_norm_eps, 1e-6)
  t.false(qwen.layers[0].mlp.router.norm_topk_prob)
  t.is(qwen.rope.theta, 10000)
  const mixtral = await variant('mixtral/hub', {
    config: (c) => {
      delete c.rms_norm_eps
      delete c.rope_parameters
      delete c.head_dim
    },
  })
  t.is(mixtral.rms_norm_eps, 1e-5)
  t.is(mixtral.rope.theta, 1e6) // MixtralConfig.default_theta
  t.is(mixtral.layers[0].attention.head_dim, 16) // hidden_size / num_attention_heads
  const deepseek = await variant('deepseek_v3/hub', { config: (c) => void delete c.rope_interleave })
  t.true(deepseek.rope.interleaved)
  const olmoe = await variant('olmoe/hub', { config: (c) => void delete c.norm_topk_prob })
  t.false(olmoe.layers[0].mlp.router.norm_topk_prob)
  const granite = await variant('granitemoe/hub', {
    config: (c) => {
      for (const k of ['embedding_multiplier', 'residual_multiplier', 'logits_scaling', 'attention_multiplier']) delete c[k]
    },
  })
  t.like(granite, { embedding_multiplier: 1, logits_scaling: 1 })
  t.like(granite.layers[0], { residual_multiplier: 1 })
  t.is(granite.layers[0].attention.scaling, 1)
})

test('tied embeddings: lm_head is the embedding when the checkpoint has no lm_head', async (t) => {
  const tied = await variant('qwen3_moe/hub', {
    config: (c) => void (c.tie_word_embeddings = true),
    tensors: (list) => list.filter((x) => x.name !== 'lm_head.weight'),
  })
  t.is(tied.lm_head, 'model.embed_tokens.weight')
  await t.throwsAsync(variant('qwen3_moe/hub', { tensors: (list) => list.filter((x) => x.name !== 'lm_head.weight') }), {
    code: 'E_LAYOUT_MISSING_TENSOR',
    message: /lm_head\.weight/,
  })
})

test('features the descriptor cannot express are refused, not ignored', async (t) => {
  const refused = { code: 'E_MODEL_UNSUPPORTED', message: /forward not supported/ }
  // Qwen2-MoE's config class derives alternating sliding layers from max_window_layers: not reproduced.
  await t.throwsAsync(variant('qwen2_moe/hub', { config: (c) => void ((c.use_sliding_window = true), delete c.layer_types) }), { ...refused, message: /use_sliding_window true without layer_types/ })
  // A family whose layers are all alike refuses per-layer kinds.
  await t.throwsAsync(variant('qwen3_moe/hub', { config: (c) => void (c.layer_types = ['sliding_attention', 'full_attention']) }), { ...refused, message: /layer_types/ })
  await t.throwsAsync(variant('olmoe/hub', { config: (c) => void (c.clip_qkv = 8) }), refused)
  await t.throwsAsync(variant('qwen3_moe/hub', { config: (c) => void (c.hidden_act = 'gelu') }), refused)
  const extra = { name: 'model.layers.0.self_attn.sinks', dtype: 'BF16', shape: [4], file: 'model.safetensors', bytes: 8 }
  await t.throwsAsync(variant('qwen3_moe/hub', { tensors: (list) => [...list, extra] }), { ...refused, message: /self_attn\.sinks/ })
})

test('per-layer attention: sliding windows, chunks, sinks and layers without rope, as transformers derives them', async (t) => {
  const window = { kind: 'sliding_window', window: 4096 }
  const mixtral = await variant('mixtral/hub', { config: (c) => void (c.sliding_window = 4096) })
  t.deepEqual(mixtral.layers.map((l) => l.attention.mask), [window, window])
  const qwen3 = await variant('qwen3_moe/hub', { config: (c) => void Object.assign(c, { use_sliding_window: true, sliding_window: 4096 }) })
  t.deepEqual(qwen3.layers.map((l) => l.attention.mask), [window, window])
  const sinks = (d) => d.layers.map((l) => [l.attention.mask, l.attention.sinks])
  const gptOss = [
    [{ kind: 'sliding_window', window: 8 }, 'model.layers.0.self_attn.sinks'],
    [{ kind: 'causal' }, 'model.layers.1.self_attn.sinks'],
  ]
  t.deepEqual(sinks(await describe('gpt_oss/hub')), gptOss)
  // Without layer_types, GPT-OSS's config class alternates sliding and full layers.
  t.deepEqual(sinks(await variant('gpt_oss/hub', { config: (c) => void delete c.layer_types })), gptOss)
  const nope = (d) => d.layers.map(({ attention: a }) => [a.mask, a.rope, a.qk_weightless_norm, a.temperature])
  const llama4 = [
    [{ kind: 'chunked', size: 8 }, true, true, undefined],
    [{ kind: 'causal' }, false, false, { scale: 0.1, floor_scale: 8192 }],
  ]
  const described = await describe('llama4_text/hub')
  t.deepEqual(nope(described), llama4)
  t.true(described.rope.interleaved)
  // Without layer_types and no_rope_layers: every no_rope_layer_interval-th layer has no rope, the others are chunked.
  const derived = await variant('llama4_text/hub', { config: (c) => void (delete c.layer_types, delete c.no_rope_layers, (c.no_rope_layer_interval = 2)) })
  t.deepEqual(nope(derived), llama4)
  await t.throwsAsync(variant('llama4_text/hub', { config: (c) => void (c.no_rope_layers = [1, 0, 1]) }), { code: 'E_CONFIG_INVALID', message: /no_rope_layers/ })
  await t.throwsAsync(variant('gpt_oss/hub', { config: (c) => void (c.layer_types = ['sliding_attention', 'local']) }), { code: 'E_CONFIG_INVALID', message: /layer_types/ })
})

test('qwen3_next and qwen3_5_moe: Gated DeltaNet layers from layer_types or full_attention_interval, gated attention, (1 + w) norms', async (t) => {
  const next = await describe('families/qwen3_next/hub')
  t.deepEqual(next.layers.map((l) => l.attention.kind), ['gated_delta_net', 'gated_delta_net', 'gqa'])
  t.is(next.rms_norm_offset, 1)
  t.is(next.rope.rotary_dim, 4) // head_dim 16 × partial_rotary_factor 0.25
  const [mixer, , attention] = next.layers.map((l) => l.attention)
  t.deepEqual(mixer.projections, { layout: 'grouped', qkvz: 'model.layers.0.linear_attn.in_proj_qkvz', ba: 'model.layers.0.linear_attn.in_proj_ba' })
  t.deepEqual([mixer.num_key_heads, mixer.num_value_heads, mixer.key_head_dim, mixer.value_head_dim, mixer.conv_kernel], [2, 4, 16, 16, 4])
  t.is(mixer.a_log, 'model.layers.0.linear_attn.A_log')
  t.true(attention.output_gate)
  t.is(attention.q_norm, 'model.layers.2.self_attn.q_norm.weight')
  t.deepEqual([next.layers[0].mlp.router.kind, next.layers[0].mlp.router.norm_topk_prob], ['softmax_topk', true])
  t.is(next.layers[0].mlp.shared.gate, 'model.layers.0.mlp.shared_expert_gate.weight')
  const split = await describe('families/qwen3_5_moe_text/hub')
  t.deepEqual(split.layers[1].attention.projections, {
    layout: 'split',
    qkv: 'model.layers.1.linear_attn.in_proj_qkv',
    z: 'model.layers.1.linear_attn.in_proj_z',
    b: 'model.layers.1.linear_attn.in_proj_b',
    a: 'model.layers.1.linear_attn.in_proj_a',
  })
  t.is(split.layers[0].mlp.router.kind, 'softmax_topk_norm')
  // Without layer_types the config class makes every full_attention_interval-th layer full attention.
  t.deepEqual(await variant('families/qwen3_next/hub', { config: (c) => void (delete c.layer_types, (c.full_attention_interval = 3)) }), next)
  // Its default interval, 4, would make layer 2 linear attention, whose tensors the checkpoint lacks.
  await t.throwsAsync(variant('families/qwen3_next/hub', { config: (c) => void delete c.layer_types }), { code: 'E_LAYOUT_MISSING_TENSOR', message: /layers\.2\.linear_attn/ })
  await t.throwsAsync(variant('families/qwen3_next/hub', { config: (c) => void (c.layer_types[2] = 'sliding_attention') }), { code: 'E_CONFIG_INVALID', message: /layer_types/ })
  await t.throwsAsync(variant('families/qwen3_next/hub', { config: (c) => void (c.linear_num_value_heads = 3) }), { code: 'E_CONFIG_INVALID', message: /linear_num_value_heads/ })
  const bias = { name: 'model.layers.0.linear_attn.out_proj.bias', dtype: 'BF16', shape: [64], file: 'model.safetensors', bytes: 128 }
  await t.throwsAsync(variant('families/qwen3_next/hub', { tensors: (list) => [...list, bias] }), { code: 'E_MODEL_UNSUPPORTED', message: /out_proj\.bias/ })
})

test('granitemoehybrid: Mamba-2 and rope-less attention layers from layer_types, fused shared MLP, Granite multipliers', async (t) => {
  for (const layout of ['hub', 'fused']) {
    const d = await describe(`families/granitemoehybrid/${layout}`)
    t.is(d.rope, undefined, 'position_embedding_type "nope": no rotary embedding')
    t.like(d, { embedding_multiplier: 12, logits_scaling: 4, rms_norm_eps: 1e-6 })
    t.deepEqual(d.layers.map((l) => l.attention.kind), ['mamba2', 'gqa', 'mamba2'])
    t.deepEqual(d.layers[0].attention, {
      kind: 'mamba2', in_proj: 'model.layers.0.mamba.in_proj', out_proj: 'model.layers.0.mamba.out_proj', proj_bias: false,
      conv1d: 'model.layers.0.mamba.conv1d', conv_bias: true, a_log: 'model.layers.0.mamba.A_log', d: 'model.layers.0.mamba.D',
      dt_bias: 'model.layers.0.mamba.dt_bias', norm: 'model.layers.0.mamba.norm.weight', norm_eps: 1e-6, num_heads: 4, head_dim: 32,
      n_groups: 1, state_size: 16, conv_kernel: 4, chunk_size: 8, dt_min: 0,
    })
    t.like(d.layers[1], { residual_multiplier: 0.22, attention: { kind: 'gqa', rope: false, scaling: 0.0625, num_heads: 4, num_kv_heads: 2 } })
    t.deepEqual(d.layers[1].mlp.shared, { mlp: { gate_up: 'model.layers.1.shared_mlp.input_linear', down: 'model.layers.1.shared_mlp.output_linear', activation: 'silu' } })
  }
  // position_embedding_type "rope": every attention layer rotates with the default rope over the head.
  const rope = await variant('families/granitemoehybrid/hub', { config: (c) => void (c.position_embedding_type = 'rope') })
  t.deepEqual(rope.rope, { kind: 'default', theta: 10000, rotary_dim: 16, interleaved: false })
  t.true(rope.layers[1].attention.rope)
  // Legacy spellings, a head size derived from mamba_expand, time-step limits.
  const legacy = await variant('families/granitemoehybrid/hub', {
    config: (c) => void ((c.layer_types = ['mamba', 'attention', 'mamba']), (c.mamba_d_head = 'auto'), (c.time_step_limit = [0.001, 0.1])),
  })
  t.deepEqual(legacy.layers.map((l) => l.attention.kind), ['mamba2', 'gqa', 'mamba2'])
  t.like(legacy.layers[2].attention, { head_dim: 32, dt_min: 0.001, dt_max: 0.1 })
  await t.throwsAsync(variant('families/granitemoehybrid/hub', { config: (c) => void (c.layer_types = ['mamba', 'moe', 'mamba']) }), { code: 'E_CONFIG_INVALID', message: /layer_types/ })
  // An attention layer where the checkpoint holds a Mamba mixer: its tensors would go unused.
  await t.throwsAsync(variant('families/granitemoehybrid/hub', { config: (c) => void (c.layer_types = ['attention', 'attention', 'mamba']) }), { code: 'E_LAYOUT_MISSING_TENSOR' })
  await t.throwsAsync(variant('families/granitemoehybrid/hub', { config: (c) => void (c.hidden_act = 'gelu') }), { code: 'E_MODEL_UNSUPPORTED', message: /hidden_act "gelu"/ })
})

test('nemotron_h: one mixer per layer after one norm, relu² experts and shared expert, no rope, backbone names', async (t) => {
  const hub = await describe('families/nemotron_h/hub')
  t.like(hub, { embed: 'backbone.embeddings.weight', final_norm: 'backbone.norm_f.weight', lm_head: 'lm_head.weight', rms_norm_eps: 1e-5 })
  t.is(hub.rope, undefined)
  const [mamba, moe, attention] = hub.layers
  t.deepEqual(Object.keys(mamba), ['index', 'input_norm', 'norm_placement', 'residual_multiplier', 'attention'])
  t.like(mamba, { input_norm: 'backbone.layers.0.norm.weight', attention: { kind: 'mamba2', in_proj: 'backbone.layers.0.mixer.in_proj', num_heads: 4, head_dim: 32, n_groups: 1, state_size: 16, chunk_size: 8, norm_eps: 1e-5 } })
  t.deepEqual(Object.keys(moe), ['index', 'input_norm', 'norm_placement', 'residual_multiplier', 'mlp'])
  t.like(moe.mlp, { kind: 'moe', block: 'backbone.layers.1.mixer', layout: 'per_expert', activation: 'relu2', up: 'backbone.layers.1.mixer.experts.{e}.up_proj.weight' })
  t.is(moe.mlp.gate, undefined)
  t.like(moe.mlp.router, { kind: 'sigmoid_group_topk', n_group: 2, topk_group: 1, routed_scaling_factor: 2.5, norm_topk_prob: true })
  t.deepEqual(moe.mlp.shared, { mlp: { up: 'backbone.layers.1.mixer.shared_experts.up_proj', down: 'backbone.layers.1.mixer.shared_experts.down_proj', activation: 'relu2' } })
  t.like(attention.attention, { kind: 'gqa', q: 'backbone.layers.2.mixer.q_proj', rope: false, head_dim: 16, scaling: 0.25 })
  const fused = await describe('families/nemotron_h/fused')
  t.like(fused.layers[1].mlp, { layout: 'fused', up: 'model.layers.1.mixer.experts.up_proj', down: 'model.layers.1.mixer.experts.down_proj' })
  // The legacy pattern string gives the same layers; a dense MLP layer is an ungated relu² MLP.
  const pattern = await variant('families/nemotron_h/hub', { config: (c) => void (delete c.layers_block_type, (c.hybrid_override_pattern = 'ME*'), (c.num_hidden_layers = 3)) })
  t.deepEqual(pattern.layers, hub.layers)
  await t.throwsAsync(variant('families/nemotron_h/hub', { config: (c) => void (c.moe_latent_size = 32) }), { code: 'E_MODEL_UNSUPPORTED', message: /moe_latent_size/ })
  await t.throwsAsync(variant('families/nemotron_h/hub', { config: (c) => void (c.mlp_hidden_act = 'silu') }), { code: 'E_MODEL_UNSUPPORTED', message: /mlp_hidden_act/ })
  await t.throwsAsync(variant('families/nemotron_h/hub', { config: (c) => void (c.layers_block_type = ['mamba', 'moe', 'mlp']) }), { code: 'E_LAYOUT_MISSING_TENSOR' })
})

test('deepseek_v32: MLA on interleaved pairs restricted by sparse attention, the indexer rotating halves', async (t) => {
  const d = await describe('families/deepseek_v32/hub')
  t.like(d.rope, { kind: 'yarn', rotary_dim: 8, interleaved: true, factor: 4, mscale: 1, mscale_all_dim: 0.8 })
  for (const layer of d.layers) {
    const a = layer.attention
    const indexer = `model.layers.${layer.index}.self_attn.indexer`
    t.like(a, { kind: 'mla', q_a_proj: `model.layers.${layer.index}.self_attn.q_a_proj`, qk_rope_head_dim: 8 })
    t.deepEqual(a.sparse, {
      top_k: 5,
      indexer: {
        wq_b: `${indexer}.wq_b`,
        wk: `${indexer}.wk`,
        weights_proj: `${indexer}.weights_proj`,
        k_norm: `${indexer}.k_norm.weight`,
        k_norm_eps: 1e-6,
        num_heads: 8,
        head_dim: 16,
        rope_dim: 8,
        rope_interleaved: false,
      },
    })
  }
  // yarn_apply_mscale: qk_head_dim^-0.5 · (0.1 · 0.8 · ln 4 + 1)².
  close(t, d.layers[0].attention.scaling, 24 ** -0.5 * (0.1 * 0.8 * Math.log(4) + 1) ** 2, 'scaling')
  // transformers reads layer_types ("indexed_attention") for the cache only.
  t.deepEqual(JSON.parse((await readListing(join(FIXTURES, 'families/deepseek_v32/hub'))).config).layer_types, ['indexed_attention', 'indexed_attention'])
  // Every query keeps at least one key; the indexer reads the q LoRA latent and rotates at least the rope's dimensions.
  await t.throwsAsync(variant('families/deepseek_v32/hub', { config: (c) => void (c.index_topk = 0) }), { code: 'E_CONFIG_INVALID', message: /index_topk/ })
  await t.throwsAsync(variant('families/deepseek_v32/hub', { config: (c) => void (c.index_head_dim = 4) }), { code: 'E_CONFIG_INVALID', message: /index_head_dim/ })
  const withoutQLora = variant('families/deepseek_v32/hub', {
    config: (c) => void (c.q_lora_rank = null),
    tensors: (list) => [
      ...list.filter((x) => !/self_attn\.q_(a_proj|a_layernorm|b_proj)\./.test(x.name)),
      ...[0, 1].map((i) => ({ name: `model.layers.${i}.self_attn.q_proj.weight`, dtype: 'BF16', shape: [4 * 24, 64], file: 'model.safetensors', bytes: 4 * 24 * 64 * 2 })),
    ],
  })
  await t.throwsAsync(withoutQLora, { code: 'E_CONFIG_INVALID', message: /q_lora_rank/ })
  await t.throwsAsync(variant('families/deepseek_v32/hub', { tensors: (list) => list.filter((x) => !x.name.endsWith('layers.1.self_attn.indexer.k_norm.bias')) }), {
    code: 'E_LAYOUT_MISSING_TENSOR',
    message: /layers\.1\.self_attn\.indexer\.k_norm\.bias/,
  })
  await t.throwsAsync(variant('families/deepseek_v32/hub', { config: (c) => void (c.index_n_heads = 4) }), { code: 'E_LAYOUT_SHAPE', message: /indexer\.wq_b/ })
})

test('glm_moe_dsa: shared layers reuse the keys of the last indexer, from indexer_types or the schedule transformers derives', async (t) => {
  const d = await describe('families/glm_moe_dsa/hub')
  t.like(d.rope, { kind: 'default', rotary_dim: 8, interleaved: true })
  t.is(d.rms_norm_eps, 1e-5)
  t.deepEqual(d.layers[1].attention.sparse, { top_k: 4 })
  for (const index of [0, 2]) t.like(d.layers[index].attention.sparse.indexer, { num_heads: 8, head_dim: 16, rope_dim: 8, rope_interleaved: true })
  t.like(d.layers[1].attention, { qk_nope_head_dim: 24, v_head_dim: 32 })
  const owners = (descriptor) => descriptor.layers.map((l) => l.attention.sparse.indexer !== undefined)
  // Layer 1's indexer tensors, when the schedule gives it one.
  const indexerOf = (layer) => (list) => [
    ...list,
    ...list.filter((x) => x.name.startsWith('model.layers.0.self_attn.indexer.')).map((x) => ({ ...x, name: x.name.replace('layers.0.', `layers.${layer}.`) })),
  ]
  const pattern = await variant('families/glm_moe_dsa/hub', { config: (c) => void (delete c.indexer_types, (c.index_topk_pattern = 'FSF')) })
  t.deepEqual(owners(pattern), [true, false, true])
  t.deepEqual(owners(await variant('families/glm_moe_dsa/hub', { config: (c) => void (delete c.indexer_types, (c.index_topk_pattern = ['full', 'shared', 'full'])) })), [true, false, true])
  // GlmMoeDsaConfig: "full" where max(i - offset + 1, 0) % freq == 0 (freq 1, offset 2 when absent: every layer).
  t.deepEqual(owners(await variant('families/glm_moe_dsa/hub', { config: (c) => void delete c.indexer_types, tensors: indexerOf(1) })), [true, true, true])
  const scheduled = await variant('families/glm_moe_dsa/hub', { config: (c) => void (delete c.indexer_types, (c.index_topk_freq = 2), (c.index_skip_topk_offset = 1)) })
  t.deepEqual(owners(scheduled), [true, false, true])
  // A shared layer holding indexer tensors, a first layer without an earlier indexer, a list of the wrong length.
  await t.throwsAsync(variant('families/glm_moe_dsa/hub', { tensors: indexerOf(1) }), { code: 'E_MODEL_UNSUPPORTED', message: /layers\.1\.self_attn\.indexer\./ })
  await t.throwsAsync(variant('families/glm_moe_dsa/hub', { config: (c) => void (c.indexer_types = ['shared', 'full', 'full']) }), { code: 'E_CONFIG_INVALID', message: /indexer_types/ })
  await t.throwsAsync(variant('families/glm_moe_dsa/hub', { config: (c) => void (c.indexer_types = ['full', 'shared']) }), { code: 'E_CONFIG_INVALID', message: /indexer_types/ })
  await t.throwsAsync(variant('families/glm_moe_dsa/hub', { config: (c) => void (delete c.indexer_types, (c.index_topk_pattern = 'FXF')) }), { code: 'E_CONFIG_INVALID', message: /index_topk_pattern/ })
})

test('jamba: Mamba layers with dt/B/C norms and attention without rope by the attention period, MoE by the expert period', async (t) => {
  const hub = await describe('families/jamba/hub')
  t.like(hub, { embed: 'model.embed_tokens.weight', final_norm: 'model.final_layernorm.weight', lm_head: 'lm_head.weight', rms_norm_eps: 1e-6 })
  t.is(hub.rope, undefined)
  t.deepEqual(hub.layers.map((l) => [l.attention.kind, l.mlp.kind]), [['mamba', 'dense'], ['mamba', 'moe'], ['gqa', 'dense']])
  t.like(hub.layers[0], { input_norm: 'model.layers.0.input_layernorm.weight', post_attention_norm: 'model.layers.0.pre_ff_layernorm.weight', norm_placement: 'pre' })
  const m = (name) => `model.layers.0.mamba.${name}`
  t.deepEqual(hub.layers[0].attention, {
    kind: 'mamba', in_proj: m('in_proj'), x_proj: m('x_proj'), dt_proj: m('dt_proj'), out_proj: m('out_proj'), proj_bias: false,
    conv1d: m('conv1d'), conv_bias: true, a_log: m('A_log'), d: m('D'), dt_norm: m('dt_layernorm.weight'), b_norm: m('b_layernorm.weight'),
    c_norm: m('c_layernorm.weight'), norm_eps: 1e-6, intermediate_size: 128, state_size: 16, dt_rank: 4, conv_kernel: 4,
  })
  t.like(hub.layers[2].attention, { kind: 'gqa', q: 'model.layers.2.self_attn.q_proj', rope: false, scaling: 0.25, num_heads: 4, num_kv_heads: 2, head_dim: 16 })
  t.like(hub.layers[0].mlp, { kind: 'dense', gate: 'model.layers.0.feed_forward.gate_proj', down: 'model.layers.0.feed_forward.down_proj' })
  t.like(hub.layers[1].mlp, { kind: 'moe', block: 'model.layers.1.feed_forward', layout: 'per_expert', gate: 'model.layers.1.feed_forward.experts.{e}.gate_proj.weight' })
  t.like(hub.layers[1].mlp.router, { kind: 'softmax_topk', norm_topk_prob: false, weight: 'model.layers.1.feed_forward.router.weight' })
  const fused = await describe('families/jamba/fused')
  t.like(fused.layers[1].mlp, { layout: 'fused', gate_up: 'model.layers.1.feed_forward.experts.gate_up_proj', down: 'model.layers.1.feed_forward.experts.down_proj' })
  // The router never renormalises (it does not read norm_topk_prob); a time-step rank "auto" is ceil(hidden / 16).
  const ignored = await variant('families/jamba/hub', { config: (c) => void ((c.norm_topk_prob = true), (c.mamba_dt_rank = 'auto')) })
  t.deepEqual(ignored, hub)
  // The attention and expert periods place the layers; an offset past its period is invalid, as JambaConfig says.
  await t.throwsAsync(variant('families/jamba/hub', { config: (c) => void (c.attn_layer_offset = 0) }), { code: 'E_LAYOUT_MISSING_TENSOR', message: /layers\.0\.self_attn/ })
  await t.throwsAsync(variant('families/jamba/hub', { config: (c) => void (c.attn_layer_offset = 3) }), { code: 'E_CONFIG_INVALID', message: /attn_layer_offset/ })
  await t.throwsAsync(variant('families/jamba/hub', { config: (c) => void (c.expert_layer_offset = 0) }), { code: 'E_LAYOUT_UNRECOGNISED', message: /layers \[0, 2\]/ })
  await t.throwsAsync(variant('families/jamba/hub', { config: (c) => void (c.hidden_act = 'gelu') }), { code: 'E_MODEL_UNSUPPORTED', message: /hidden_act "gelu"/ })
  await t.throwsAsync(variant('families/jamba/hub', { config: (c) => void (c.mamba_d_state = 8) }), { code: 'E_LAYOUT_SHAPE', message: /x_proj/ })
})

test('gemma4: attention by layer type from per_layer_config or the hub keys, the last layer full, the 26B-A4B configuration only', async (t) => {
  const path = 'families/gemma4_text/hub'
  const d = await describe(path)
  t.like(d, { embedding_multiplier: 8, final_logit_softcapping: 0.25, rms_norm_f32_weight: true })
  t.deepEqual(d.layer_type_ropes.full_attention, { kind: 'proportional', theta: 1e6, rotary_dim: 32, interleaved: false, proportional_angles: 4 })
  t.deepEqual(d.layer_type_ropes.sliding_attention, { kind: 'default', theta: 1e4, rotary_dim: 16, interleaved: false })
  t.like(d.layers[0].attention, { head_dim: 16, num_kv_heads: 2, values_from_keys: false, rope_layer_type: 'sliding_attention', mask: { kind: 'sliding_window', window: 8 } })
  t.like(d.layers[1].attention, { head_dim: 32, num_kv_heads: 1, values_from_keys: true, v: 'model.layers.1.self_attn.k_proj', rope_layer_type: 'full_attention', mask: { kind: 'causal' } })
  // The hub's config.json (transformers before 5.25) gives the full layers' shape by global keys, not per layer.
  const hub = await variant(path, {
    config: (c) => {
      delete c.per_layer_config
      Object.assign(c, { global_head_dim: 32, num_global_key_value_heads: 1 })
    },
  })
  t.deepEqual(hub, d)
  // Without keys as values the full layers need a v_proj.
  await t.throwsAsync(variant(path, { config: (c) => void Object.assign(c, { attention_k_eq_v: false }) }), { code: 'E_LAYOUT_MISSING_TENSOR', message: /layers\.1\.self_attn\.v_proj/ })
  // transformers makes the last layer full attention whatever layer_types says.
  t.deepEqual(await variant(path, { config: (c) => void (c.layer_types[3] = 'sliding_attention') }), d)
  for (const [key, value, block] of [
    ['hidden_size_per_layer_input', 256, /per-layer embeddings/],
    ['num_kv_shared_layers', 2, /KV sharing across layers/],
    ['use_bidirectional_attention', 'all', /bidirectional attention/],
    ['hidden_activation', 'relu', /hidden_activation "relu"/],
  ]) {
    await t.throwsAsync(variant(path, { config: (c) => void (c[key] = value) }), { code: 'E_MODEL_UNSUPPORTED', message: block })
  }
  // The wrapper embeds its image, video and audio placeholders as its pad token; the text model embeds every id.
  t.is(d.embed_as, null)
  t.deepEqual((await describe('families/gemma4/hub')).embed_as, { ids: [253, 251, 246], by: 245 })
  // A config.json without the key takes the class default: per-layer embeddings of 256, refused.
  await t.throwsAsync(variant(path, { config: (c) => void delete c.hidden_size_per_layer_input }), { code: 'E_MODEL_UNSUPPORTED', message: /per-layer embeddings/ })
})

test('lfm2_moe: short convolutions and attention by layer_types, dense first layers, sigmoid router with expert_bias', async (t) => {
  const hub = await describe('families/lfm2_moe/hub')
  t.like(hub, { embed: 'model.embed_tokens.weight', final_norm: 'model.embedding_norm.weight', lm_head: 'model.embed_tokens.weight', rms_norm_eps: 1e-5 })
  t.deepEqual(hub.rope, { kind: 'default', theta: 10000, rotary_dim: 16, interleaved: false })
  t.deepEqual(hub.layers.map((l) => [l.attention.kind, l.mlp.kind]), [['short_conv', 'dense'], ['gqa', 'moe'], ['short_conv', 'moe']])
  t.like(hub.layers[0], { input_norm: 'model.layers.0.operator_norm.weight', post_attention_norm: 'model.layers.0.ffn_norm.weight', norm_placement: 'pre' })
  t.deepEqual(hub.layers[0].attention, {
    kind: 'short_conv', in_proj: 'model.layers.0.conv.in_proj', out_proj: 'model.layers.0.conv.out_proj', conv: 'model.layers.0.conv.conv', bias: true, conv_kernel: 3,
  })
  t.deepEqual(hub.layers[0].mlp, { kind: 'dense', gate: 'model.layers.0.feed_forward.w1', up: 'model.layers.0.feed_forward.w3', down: 'model.layers.0.feed_forward.w2', activation: 'silu' })
  t.like(hub.layers[1].attention, {
    kind: 'gqa', o: 'model.layers.1.self_attn.out_proj', q_norm: 'model.layers.1.self_attn.q_layernorm.weight', k_norm: 'model.layers.1.self_attn.k_layernorm.weight',
    qk_norm_after_rope: false, rope: true, scaling: 0.25,
  })
  t.like(hub.layers[1].mlp, { kind: 'moe', block: 'model.layers.1.feed_forward', layout: 'per_expert', gate: 'model.layers.1.feed_forward.experts.{e}.w1.weight' })
  t.like(hub.layers[2].mlp.router, {
    kind: 'sigmoid_group_topk', weight: 'model.layers.2.feed_forward.gate.weight', correction_bias: 'model.layers.2.feed_forward.expert_bias',
    norm_topk_prob: true, n_group: 1, topk_group: 1, routed_scaling_factor: 2, norm_eps: 1e-6,
  })
  const fused = await describe('families/lfm2_moe/fused')
  t.like(fused.layers[1].mlp, { layout: 'fused', gate_up: 'model.layers.1.feed_forward.experts.gate_up_proj', down: 'model.layers.1.feed_forward.experts.down_proj' })
  // layer_types decides each mixer (without it transformers cannot build the layers); num_dense_layers the MLPs.
  await t.throwsAsync(variant('families/lfm2_moe/hub', { config: (c) => void delete c.layer_types }), { code: 'E_CONFIG_INVALID', message: /layer_types/ })
  await t.throwsAsync(variant('families/lfm2_moe/hub', { config: (c) => void (c.layer_types = ['conv', 'conv', 'conv']) }), { code: 'E_LAYOUT_MISSING_TENSOR', message: /layers\.1\.conv/ })
  await t.throwsAsync(variant('families/lfm2_moe/hub', { config: (c) => void (c.num_dense_layers = 2) }), { code: 'E_LAYOUT_UNRECOGNISED', message: /layers \[2\]/ })
  // A stored expert_bias that use_expert_bias switches off would not be loaded by transformers.
  await t.throwsAsync(variant('families/lfm2_moe/hub', { config: (c) => void (c.use_expert_bias = false) }), { code: 'E_MODEL_UNSUPPORTED', message: /expert_bias/ })
  const unbiased = await variant('families/lfm2_moe/hub', { config: (c) => void (c.conv_bias = false) }).catch((e) => e)
  t.is(unbiased.code, 'E_MODEL_UNSUPPORTED', 'the stored biases would go unused')
})

test('longcat_flash: two MLA and two MLP sublayers with the MoE as a shortcut, zero experts, LoRA-scaled MLA', async (t) => {
  const hub = await describe('families/longcat_flash/hub')
  t.deepEqual(hub.rope, { kind: 'default', theta: 10000, rotary_dim: 8, interleaved: true })
  const [layer] = hub.layers
  t.like(layer, { input_norm: 'model.layers.0.input_layernorm.0.weight', post_attention_norm: 'model.layers.0.post_attention_layernorm.0.weight', norm_placement: 'pre' })
  const scales = { query: Math.sqrt(64 / 32), kv_latent: Math.sqrt(64 / 16) }
  t.like(layer.attention, { kind: 'mla', q_a_proj: 'model.layers.0.self_attn.0.q_a_proj', kv_b_proj: 'model.layers.0.self_attn.0.kv_b_proj', lora_scales: scales })
  close(t, layer.attention.scaling, (16 + 8) ** -0.5, 'scaling')
  // The MoE under `mlp`, its router scoring the 8 experts and the 3 zero experts; the dense MLPs under `mlps`.
  t.like(layer.mlp, { kind: 'moe', block: 'model.layers.0.mlp', experts: 8, top_k: 2, zero_experts: 3 })
  t.deepEqual(layer.mlp.router, {
    kind: 'softmax_bias_topk_scaled', weight: 'model.layers.0.mlp.router.classifier.weight', correction_bias: 'model.layers.0.mlp.router.e_score_correction_bias',
    norm_topk_prob: false, n_group: 1, topk_group: 1, routed_scaling_factor: 6, norm_min: 0, jitter_eps: 0,
  })
  const mlp = (i) => ({ gate: `model.layers.0.mlps.${i}.gate_proj`, up: `model.layers.0.mlps.${i}.up_proj`, down: `model.layers.0.mlps.${i}.down_proj`, activation: 'silu' })
  t.like(layer.double, {
    first_mlp: mlp(0), second_mlp: mlp(1),
    input_norm: 'model.layers.0.input_layernorm.1.weight', post_attention_norm: 'model.layers.0.post_attention_layernorm.1.weight',
    attention: { kind: 'mla', q_a_proj: 'model.layers.0.self_attn.1.q_a_proj', o_proj: 'model.layers.0.self_attn.1.o_proj', lora_scales: scales },
  })
  const fused = await describe('families/longcat_flash/fused')
  t.like(fused.layers[1].mlp, { layout: 'fused', gate_up: 'model.layers.1.mlp.experts.gate_up_proj', zero_experts: 3 })
  // transformers builds the rope for head_dim and views q_b_proj's rows as heads of qk_head_dim: both must agree with
  // the MLA sizes, and the queries always go through q_a_proj.
  await t.throwsAsync(variant('families/longcat_flash/hub', { config: (c) => void (c.head_dim = 16) }), { code: 'E_CONFIG_INVALID', message: /head_dim/ })
  await t.throwsAsync(variant('families/longcat_flash/hub', { config: (c) => void (c.qk_head_dim = 16) }), { code: 'E_CONFIG_INVALID', message: /qk_head_dim/ })
  await t.throwsAsync(variant('families/longcat_flash/hub', { config: (c) => void (c.q_lora_rank = null) }), { code: 'E_CONFIG_INVALID', message: /q_lora_rank/ })
  // The router's rows are the experts and the zero experts.
  await t.throwsAsync(variant('families/longcat_flash/hub', { config: (c) => void (c.zero_expert_num = 2) }), { code: 'E_LAYOUT_SHAPE', message: /router\.classifier\.weight/ })
})

test('kimi_linear: Kimi Delta Attention and MLA without rope, from layer_types or linear_attn_config; config keys under either name', async (t) => {
  const hub = await describe('families/kimi_linear/hub')
  t.is(hub.rope, undefined, 'no position embedding')
  t.deepEqual(hub.layers.map((l) => l.attention.kind), ['kimi_delta_attention', 'mla', 'kimi_delta_attention'])
  const attn = 'model.layers.0.self_attn'
  t.deepEqual(hub.layers[0].attention, {
    kind: 'kimi_delta_attention', q_proj: `${attn}.q_proj`, k_proj: `${attn}.k_proj`, v_proj: `${attn}.v_proj`,
    conv1d: ['q', 'k', 'v'].map((p) => `${attn}.${p}_conv1d.weight`), f_a_proj: `${attn}.f_a_proj`, f_b_proj: `${attn}.f_b_proj`,
    dt_bias: `${attn}.dt_bias`, a_log: `${attn}.A_log`, b_proj: `${attn}.b_proj`, g_a_proj: `${attn}.g_a_proj`, g_b_proj: `${attn}.g_b_proj`,
    norm: `${attn}.o_norm.weight`, o_proj: `${attn}.o_proj`, num_heads: 3, head_dim: 16, conv_kernel: 4,
  })
  t.like(hub.layers[1].attention, { rope: false, q_proj: 'model.layers.1.self_attn.q_proj', qk_nope_head_dim: 16, qk_rope_head_dim: 8 })
  close(t, hub.layers[1].attention.scaling, 24 ** -0.5, 'scaling (qk_head_dim^-0.5, no rope scaling)')
  t.like(hub.layers[1].mlp.router, { kind: 'sigmoid_group_topk', norm_topk_prob: true, n_group: 2, topk_group: 1, routed_scaling_factor: 2.446 })
  // transformers 5.25's hub layout puts the dense MLP under block_sparse_moe too.
  t.is(hub.layers[0].mlp.gate, 'model.layers.0.block_sparse_moe.gate_proj')
  // transformers 5's layout: one convolution over q, k and v, the decay's tensors in forget_gate.
  const fused = await describe('families/kimi_linear/fused')
  t.like(fused.layers[2].attention, {
    conv1d: ['model.layers.2.self_attn.conv1d.weight'],
    f_a_proj: 'model.layers.2.self_attn.forget_gate.f_a_proj',
    a_log: 'model.layers.2.self_attn.forget_gate.A_log',
  })
  t.is(fused.layers[0].mlp.gate, 'model.layers.0.mlp.gate_proj')
  // The hub checkpoints' linear_attn_config (sizes, 1-based lists of layers) as KimiLinearConfig reads it.
  const settings = (c) => {
    for (const key of ['layer_types', 'linear_head_dim', 'linear_num_heads', 'linear_conv_kernel_dim']) delete c[key]
    c.linear_attn_config = { head_dim: 16, num_heads: 3, short_conv_kernel_size: 4, full_attn_layers: [2], kda_layers: [1, 3] }
  }
  t.deepEqual(await variant('families/kimi_linear/hub', { config: settings }), hub)
  // linear_attn_config's sizes win over the class's fields.
  await t.throwsAsync(variant('families/kimi_linear/hub', { config: (c) => void (c.linear_attn_config = { num_heads: 4 }) }), { code: 'E_LAYOUT_SHAPE', message: /q_conv1d .* should be \[64, 1, 4\]/ })
  const gaps = (c) => void (settings(c), (c.linear_attn_config.kda_layers = [1]))
  await t.throwsAsync(variant('families/kimi_linear/hub', { config: gaps }), { code: 'E_CONFIG_INVALID', message: /linear_attn_config/ })
  // Without either, full attention on layers 4, 8, …: layer 1 would be Kimi Delta Attention, which it is not.
  await t.throwsAsync(variant('families/kimi_linear/hub', { config: (c) => void delete c.layer_types }), {
    code: 'E_LAYOUT_MISSING_TENSOR',
    message: /layers\.1\.self_attn\.q_conv1d/,
  })
  // norm_topk_prob and n_group, stored as moe_renormalize and num_expert_group, may be spelled either way.
  const spelled = (c) => void ((c.norm_topk_prob = c.moe_renormalize), (c.n_group = c.num_expert_group), delete c.moe_renormalize, delete c.num_expert_group)
  t.deepEqual(await variant('families/kimi_linear/hub', { config: spelled }), hub)
  const plain = await variant('families/kimi_linear/hub', { config: (c) => void ((c.moe_renormalize = false), (c.num_expert_group = 4)) })
  t.like(plain.layers[2].mlp.router, { norm_topk_prob: false, n_group: 4 })
  // Projections without biases, as transformers builds them: a stored bias would go unused.
  const bias = { name: `${attn}.g_b_proj.bias`, dtype: 'BF16', shape: [48], file: 'model.safetensors', bytes: 96 }
  await t.throwsAsync(variant('families/kimi_linear/hub', { tensors: (list) => [...list, bias] }), { code: 'E_MODEL_UNSUPPORTED', message: /g_b_proj\.bias/ })
})

test('rope on the sliding layers only (EXAONE-MoE, Flint), their default layer types and MoE placements', async (t) => {
  const layers = (d) => d.layers.map(({ attention: a, mlp }) => [a.mask.kind, a.rope, mlp.kind])
  const exaone = [
    ['sliding_window', true, 'dense'],
    ['causal', false, 'moe'],
    ['sliding_window', true, 'moe'],
  ]
  t.deepEqual(layers(await describe('families/exaone_moe/hub')), exaone)
  // Without layer_types, every sliding_window_pattern-th layer is full; without mlp_layer_types, the first
  // first_k_dense_replace layers are dense.
  const derived = await variant('families/exaone_moe/hub', { config: (c) => void (delete c.layer_types, delete c.mlp_layer_types) })
  t.deepEqual(layers(derived), exaone)
  // Without a sliding window, EXAONE-MoE rotates every layer.
  const windowless = await variant('families/exaone_moe/hub', {
    config: (c) => void Object.assign(c, { sliding_window: null, layer_types: ['full_attention', 'full_attention', 'full_attention'] }),
  })
  t.deepEqual(layers(windowless).map(([, rope]) => rope), [true, true, true])
  const flint = [
    ['sliding_window', true, 'moe'],
    ['causal', false, 'dense'],
    ['sliding_window', true, 'moe'],
  ]
  t.deepEqual(layers(await describe('families/flint/hub')), flint)
  t.is((await describe('families/flint/hub')).layers[0].attention.sinks, 'model.layers.0.self_attn.softmax_offset')
  t.is((await describe('families/flint/fused')).layers[0].attention.sinks, 'model.layers.0.self_attn.sinks')
  // Flint's default layer types: full on the first two layers, on every fourth from layer 1 and on the last.
  const flintDefault = await variant('families/flint/hub', { config: (c) => void delete c.layer_types })
  t.deepEqual(layers(flintDefault).map(([kind, rope]) => [kind, rope]), [['causal', false], ['causal', false], ['causal', false]])
  // Without a sliding window, Flint rotates no layer.
  const flintWindowless = await variant('families/flint/hub', {
    config: (c) => void Object.assign(c, { sliding_window: null, layer_types: ['full_attention', 'full_attention', 'full_attention'] }),
  })
  t.deepEqual(layers(flintWindowless).map(([, rope]) => rope), [false, false, false])
})

test('granitemoe_swa: a layer without rope from layer_rope_theta, one rope base, an optional shared MLP', async (t) => {
  const d = await describe('families/granitemoe_swa/hub')
  t.deepEqual(d.layers.map((l) => [l.attention.mask.kind, l.attention.rope]), [['causal', false], ['sliding_window', true], ['sliding_window', true]])
  t.is(d.rope.theta, 10000)
  const based = await variant('families/granitemoe_swa/hub', { config: (c) => void (c.layer_rope_theta = [0, 5e5, 5e5]) })
  t.is(based.rope.theta, 5e5)
  await t.throwsAsync(variant('families/granitemoe_swa/hub', { config: (c) => void (c.layer_rope_theta = [1e4, 5e5, 5e5]) }), {
    code: 'E_MODEL_UNSUPPORTED',
    message: /layer_rope_theta 10000, 500000: one rope base per model/,
  })
  const unshared = await variant('families/granitemoe_swa/hub', {
    config: (c) => void (c.shared_intermediate_size = 0),
    tensors: (list) => list.filter((x) => !x.name.includes('shared_mlp')),
  })
  t.true(unshared.layers.every((l) => l.mlp.shared === undefined))
})

for (const [path, reason] of Object.entries(FORWARD_REFUSED_LAYOUTS)) {
  test(`describe ${path}: refused, naming what the forward cannot read`, async (t) => {
    await t.throwsAsync(describe(path), { code: 'E_MODEL_UNSUPPORTED', message: reason })
  })
}

test('a checkpoint disagreeing with config.json is a shape error naming the tensor', async (t) => {
  const error = await t.throwsAsync(variant('qwen3_moe/hub', { config: (c) => void (c.num_key_value_heads = 4) }), { code: 'E_LAYOUT_SHAPE' })
  t.regex(error.message, /k_proj\.weight/)
})

test('a model_type without a registry entry has no known forward', async (t) => {
  await t.throwsAsync(
    variant('qwen3_moe/hub', { config: (c) => void (c.model_type = 'my_moe') }),
    { code: 'E_MODEL_UNSUPPORTED', message: /no registry entry/ },
  )
  await t.throwsAsync(variant('qwen3_moe/hub', { config: (c) => void (c.model_type = 'constructor') }), { code: 'E_MODEL_UNSUPPORTED', message: /no registry entry/ })
})

test('the committed descriptors (used by the Rust forward tests) equal freshly built ones', async (t) => {
  const { DESCRIBED, descriptorFile } = await import('../tools/write_descriptors.mjs')
  for (const fixture of DESCRIBED) {
    const committed = JSON.parse(readFileSync(join(FIXTURES, 'descriptors', descriptorFile(fixture)), 'utf8'))
    t.deepEqual(committed, JSON.parse(JSON.stringify(await describeModel(join(FIXTURES, fixture)))), `${fixture}: run node tools/write_descriptors.mjs`)
  }
})

test('the committed export plans (used by the GPU quantization test) equal freshly built ones', async (t) => {
  const { PLANNED, PLAN_FORMATS, planFile, fixturePlan } = await import('../tools/write_descriptors.mjs')
  for (const fixture of PLANNED) {
    for (const format of PLAN_FORMATS) {
      const committed = JSON.parse(readFileSync(join(FIXTURES, 'descriptors', planFile(fixture, format)), 'utf8'))
      const fresh = JSON.parse(JSON.stringify(await fixturePlan(join(FIXTURES, fixture), format)))
      t.deepEqual(committed, fresh, `${fixture} ${format}: run node tools/write_descriptors.mjs`)
      t.true(fresh.experts.length > 0, `${fixture}: the plan quantizes experts`)
    }
  }
})
