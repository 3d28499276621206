/**
 * The self-attention part of the spec: the heads and dimensions config.json gives (with the family's
 * defaults), the scaling of q·k, and per decoder layer the projections of grouped-query attention or of
 * DeepSeek's multi-head latent attention (MLA), each checked against the shape those dimensions imply.
 */
import { MoeQuantError } from '../../errors'
import type { AttentionDescriptor, GqaDescriptor, MlaDescriptor } from '../../native/contract'
import { truthy } from './config-values'
import { type LayerTensors, refuse, type SpecContext } from './context'
import type { LayerAttention } from './layer-attention'
import { ropeNumber, yarnMscale } from './rope'
import { sparseAttention } from './sparse-attention'

/** MLA's low-rank and per-head dimensions (`q_lora_rank` null: q is projected directly). */
export interface MlaShape {
  qLora: number | null
  kvLora: number
  nope: number
  rope: number
  v: number
}

/** The attention dimensions shared by every layer. */
export interface AttentionShape {
  numHeads: number
  numKvHeads: number
  headDim: number
  mla?: MlaShape
}

/** Heads and head dimension; `num_key_value_heads` null means as many as the heads. */
export function attentionHeads(context: SpecContext): AttentionShape {
  const { values, hidden } = context
  const numHeads = values.integer('num_attention_heads')
  const kvValue = values.value('num_key_value_heads')
  const numKvHeads = kvValue === null || kvValue === undefined ? numHeads : values.integer('num_key_value_heads')
  // config.json's head_dim, else the config class's (Flint: 128), else hidden_size / heads.
  const headDim = typeof values.value('head_dim') === 'number' ? values.integer('head_dim') : Math.floor(hidden / numHeads)
  return { numHeads, numKvHeads, headDim }
}

/** MLA's dimensions, for a family whose forward declares MLA attention. */
export function mlaShape(context: SpecContext): MlaShape {
  const { values } = context
  const mla = {
    qLora: values.optionalInteger('q_lora_rank'),
    kvLora: values.integer('kv_lora_rank'),
    nope: values.integer('qk_nope_head_dim', 0),
    rope: values.integer('qk_rope_head_dim'),
    v: values.integer('v_head_dim'),
  }
  if (values.value('attention_bias') === true) {
    refuse(context, 'attention_bias true: MLA projection biases are not expressible in the descriptor yet')
  }
  // transformers views q_b_proj's output as heads of qk_head_dim and splits them into the nope and rope parts.
  const qkHeadDim = values.value('qk_head_dim')
  if (typeof qkHeadDim === 'number' && qkHeadDim !== mla.nope + mla.rope) {
    values.invalid('qk_head_dim', `qk_nope_head_dim + qk_rope_head_dim (${mla.nope + mla.rope})`)
  }
  const ropeKey = context.forward.mlaRopeHeadDimKey
  if (ropeKey && values.integer(ropeKey) !== mla.rope) values.invalid(ropeKey, `qk_rope_head_dim (${mla.rope}), the dimensions its rope rotates`)
  if (context.forward.mlaLoraScaling && mla.qLora === null) values.invalid('q_lora_rank', `an integer (${context.entry.family} always projects its queries through q_a_proj)`)
  return mla
}

/** What multiplies q·k, as the family's forward declares it. */
export function attentionScaling(context: SpecContext, shape: AttentionShape, params: Record<string, unknown>): number {
  const { entry, forward, values } = context
  switch (forward.attentionScale) {
    case 'inverse_sqrt_head_dim':
      return shape.headDim ** -0.5
    case 'one':
      return 1
    case 'inverse_sqrt_qk_head_dim': {
      const mla = shape.mla
      if (!mla) throw new MoeQuantError('E_INTERNAL', `${entry.family}: inverse_sqrt_qk_head_dim scaling without MLA attention`)
      return (mla.nope + mla.rope) ** -0.5
    }
    case 'attention_multiplier':
      return values.number('attention_multiplier')
    case 'mla_yarn_mscale': {
      const mla = shape.mla
      if (!mla) throw new MoeQuantError('E_INTERNAL', `${entry.family}: mla_yarn_mscale scaling without MLA attention`)
      let scaling = (mla.nope + mla.rope) ** -0.5
      // modeling_deepseek_v3.yarn_apply_mscale: any scaled rope with a non-zero mscale_all_dim.
      if (params.rope_type !== 'default' && truthy(params.mscale_all_dim)) {
        const factor = ropeNumber(params, 'factor', true) as number
        const m = yarnMscale(factor, params.mscale_all_dim)
        scaling = scaling * m * m
      }
      return scaling
    }
  }
}

/** MLA projections of the layer whose attention module is `attn`, whether its rope rotates (`rope`), and its sparse
 * attention in a family that has it (`ownIndexer`: the layer runs its own indexer). */
function mlaAttention(
  context: SpecContext,
  tensors: LayerTensors,
  attn: string,
  shape: AttentionShape,
  mla: MlaShape,
  scaling: number,
  layer: { rope: boolean; ownIndexer: boolean },
): AttentionDescriptor {
  const { hidden } = context
  const { numHeads } = shape
  const qkHead = mla.nope + mla.rope
  for (const module of ['q_a_proj', 'q_proj', 'kv_a_proj_with_mqa', 'o_proj']) {
    if (tensors.has(`${attn}.${module}.bias`)) refuse(context, `${attn}.${module}.bias: MLA projection biases are not expressible in the descriptor yet`)
  }
  const descriptor: MlaDescriptor = {
    kv_a_proj: `${attn}.kv_a_proj_with_mqa`,
    kv_a_norm: `${attn}.kv_a_layernorm.weight`,
    kv_b_proj: `${attn}.kv_b_proj`,
    o_proj: `${attn}.o_proj`,
    num_heads: numHeads,
    kv_lora_rank: mla.kvLora,
    qk_nope_head_dim: mla.nope,
    qk_rope_head_dim: mla.rope,
    v_head_dim: mla.v,
    scaling,
    // transformers builds q_a_layernorm and kv_a_layernorm with its default eps, not rms_norm_eps.
    lora_norm_eps: 1e-6,
    rope: layer.rope,
  }
  if (mla.qLora === null) {
    if (tensors.has(`${attn}.q_a_proj.weight`)) {
      throw new MoeQuantError('E_CONFIG_INVALID', `${context.file}: q_lora_rank is null but the checkpoint holds ${attn}.q_a_proj.weight`, { file: context.file })
    }
    descriptor.q_proj = `${attn}.q_proj`
    tensors.use(`${attn}.q_proj.weight`, [numHeads * qkHead, hidden], 'q_proj [heads·qk_head_dim, hidden_size]')
  } else {
    descriptor.q_a_proj = `${attn}.q_a_proj`
    descriptor.q_a_norm = `${attn}.q_a_layernorm.weight`
    descriptor.q_b_proj = `${attn}.q_b_proj`
    tensors.use(`${attn}.q_a_proj.weight`, [mla.qLora, hidden], 'q_a_proj [q_lora_rank, hidden_size]')
    tensors.use(descriptor.q_a_norm, [mla.qLora], 'q_a_layernorm [q_lora_rank]')
    tensors.use(`${attn}.q_b_proj.weight`, [numHeads * qkHead, mla.qLora], 'q_b_proj [heads·qk_head_dim, q_lora_rank]')
  }
  tensors.use(`${attn}.kv_a_proj_with_mqa.weight`, [mla.kvLora + mla.rope, hidden], 'kv_a_proj_with_mqa [kv_lora_rank + qk_rope_head_dim, hidden_size]')
  tensors.use(descriptor.kv_a_norm, [mla.kvLora], 'kv_a_layernorm [kv_lora_rank]')
  tensors.use(`${attn}.kv_b_proj.weight`, [numHeads * (mla.nope + mla.v), mla.kvLora], 'kv_b_proj [heads·(qk_nope_head_dim + v_head_dim), kv_lora_rank]')
  tensors.use(`${attn}.o_proj.weight`, [hidden, numHeads * mla.v], 'o_proj [hidden_size, heads·v_head_dim]')
  if (context.forward.mlaLoraScaling && mla.qLora !== null) {
    descriptor.lora_scales = { query: Math.sqrt(hidden / mla.qLora), kv_latent: Math.sqrt(hidden / mla.kvLora) }
  }
  if (context.forward.sparseAttention) descriptor.sparse = sparseAttention(context, tensors, attn, { qLora: mla.qLora, rope: mla.rope }, layer.ownIndexer)
  return { kind: 'mla', ...descriptor }
}

/** The q/k norms of a GQA layer: per head `[head_dim]` (Qwen3, GLM4) or over the whole projection (OLMoE). */
function qkNorms(context: SpecContext, tensors: LayerTensors, attn: string, shape: AttentionShape, gqa: GqaDescriptor): void {
  const { forward, values } = context
  const { numHeads, numKvHeads, headDim } = shape
  const qkNormEnabled = forward.withoutQkNorm ? false : forward.qkNormKey ? values.value(forward.qkNormKey) === true : undefined
  const qNorm = `${attn}.${forward.qkNorm?.q ?? 'q_norm'}.weight`
  const kNorm = `${attn}.${forward.qkNorm?.k ?? 'k_norm'}.weight`
  const withNorms = qkNormEnabled ?? (tensors.has(qNorm) || tensors.has(kNorm))
  if (withNorms) {
    // The shape tells the two kinds apart.
    const qShape = tensors.get(qNorm)?.shape ?? []
    const perHead = qShape.length === 1 && qShape[0] === headDim
    tensors.use(qNorm, perHead ? [headDim] : [numHeads * headDim], perHead ? 'q_norm [head_dim]' : 'q_norm [heads·head_dim]')
    tensors.use(kNorm, perHead ? [headDim] : [numKvHeads * headDim], perHead ? 'k_norm [head_dim]' : 'k_norm [kv_heads·head_dim]')
    gqa.q_norm = qNorm
    gqa.k_norm = kNorm
    if (forward.qkNorm?.afterRope) gqa.qk_norm_after_rope = true
  } else if (qkNormEnabled === false) {
    // transformers builds no q/k norm modules; tensors in the checkpoint are unused.
    tensors.ignored.add(qNorm).add(kNorm)
  }
}

/** Grouped-query projections (and their biases, norms and sinks) of the layer whose attention module is `attn`. */
function gqaAttention(context: SpecContext, tensors: LayerTensors, attn: string, shape: AttentionShape, scaling: number, variant: LayerAttention): AttentionDescriptor {
  const { hidden } = context
  const { numHeads, numKvHeads, headDim } = shape
  const output = context.forward.attentionOutput ?? 'o_proj'
  const fused = context.forward.fusedQkv
  const [q, k, v, o] = (fused ? [fused, fused, fused, output] : ['q_proj', 'k_proj', 'v_proj', output]).map((p) => `${attn}.${p}`) as [
    string,
    string,
    string,
    string,
  ]
  // With an output gate, q_proj yields each head's query and gate.
  const gated = context.forward.attentionOutputGate === true
  const qRows = numHeads * headDim * (gated ? 2 : 1)
  const kvRows = numKvHeads * headDim
  let qkvBias: boolean
  if (variant.values_from_keys) {
    // k's projection is the values too: there is no v_proj (Gemma 4's attention_k_eq_v).
    tensors.use(`${q}.weight`, [qRows, hidden], 'q_proj [heads·head_dim, hidden_size]')
    tensors.use(`${k}.weight`, [kvRows, hidden], 'k_proj [kv_heads·head_dim, hidden_size] (also the values)')
    if (tensors.has(`${v}.weight`)) refuse(context, `${v}.weight: the keys are the values on this layer, so transformers would not load a v projection`)
    qkvBias = false
  } else if (fused) {
    const rows = qRows + 2 * kvRows
    tensors.use(`${q}.weight`, [rows, hidden], `${fused} [(heads + 2·kv_heads)·head_dim, hidden_size]`)
    qkvBias = tensors.has(`${q}.bias`)
    if (qkvBias) tensors.use(`${q}.bias`, [rows], `${fused} bias`)
  } else {
    tensors.use(`${q}.weight`, [qRows, hidden], gated ? 'q_proj [heads·2·head_dim (query and output gate), hidden_size]' : 'q_proj [heads·head_dim, hidden_size]')
    tensors.use(`${k}.weight`, [kvRows, hidden], 'k_proj [kv_heads·head_dim, hidden_size]')
    tensors.use(`${v}.weight`, [kvRows, hidden], 'v_proj [kv_heads·head_dim, hidden_size]')
    const biases = [q, k, v].map((m) => tensors.has(`${m}.bias`))
    if (biases.some((b) => b !== biases[0])) {
      throw new MoeQuantError('E_LAYOUT_UNRECOGNISED', `${attn}: q/k/v biases must all be present or all absent (found q ${biases[0]}, k ${biases[1]}, v ${biases[2]})`)
    }
    qkvBias = biases[0] === true
    if (qkvBias) {
      tensors.use(`${q}.bias`, [qRows], 'q_proj bias')
      tensors.use(`${k}.bias`, [kvRows], 'k_proj bias')
      tensors.use(`${v}.bias`, [kvRows], 'v_proj bias')
    }
  }
  tensors.use(`${o}.weight`, [hidden, numHeads * headDim], `${output} [hidden_size, heads·head_dim]`)
  const oBias = tensors.has(`${o}.bias`)
  if (oBias) tensors.use(`${o}.bias`, [hidden], `${output} bias`)
  const gqa: GqaDescriptor = {
    q,
    k,
    v: variant.values_from_keys ? k : v,
    o,
    qkv_bias: qkvBias,
    o_bias: oBias,
    num_heads: numHeads,
    num_kv_heads: numKvHeads,
    head_dim: headDim,
    scaling,
    qk_norm_after_rope: false,
    output_gate: gated,
    ...(fused ? { qkv: q } : {}),
    ...variant,
    values_from_keys: variant.values_from_keys === true,
    v_norm: variant.v_norm === true,
  }
  if (context.forward.attentionSinks) {
    const names = (context.forward.sinkNames ?? ['sinks']).map((n) => `${attn}.${n}`)
    gqa.sinks = tensors.use(names.find((n) => tensors.has(n)) ?? (names[0] as string), [numHeads], 'the attention sinks [heads]')
  }
  qkNorms(context, tensors, attn, shape, gqa)
  return { kind: 'gqa', ...gqa }
}

/** The attention of the decoder layer whose names start with `prefix`; `ownIndexer` false: with sparse attention,
 * the layer reuses the keys of an earlier layer's indexer. */
export function attentionDescriptor(
  context: SpecContext,
  tensors: LayerTensors,
  prefix: string,
  shape: AttentionShape,
  scaling: number,
  variant: LayerAttention,
  module = 'self_attn',
  ownIndexer = true,
): AttentionDescriptor {
  const attn = `${prefix}${module}`
  if (!shape.mla) return gqaAttention(context, tensors, attn, shape, scaling, variant)
  if (variant.mask.kind !== 'causal' || variant.temperature) refuse(context, 'MLA attention with a sliding or chunked layer, or with attention temperature tuning')
  // The lightning indexer of sparse attention rotates its keys.
  if (!variant.rope && context.forward.sparseAttention) refuse(context, 'DeepSeek sparse attention on a layer without rope')
  return mlaAttention(context, tensors, attn, shape, shape.mla, scaling, { rope: variant.rope, ownIndexer })
}
