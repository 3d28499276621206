/**
 * The linear-attention token mixers of hybrid families (Qwen3-Next, Qwen3.5, Kimi-Linear): which decoder layers have
 * one (config `layer_types`, or what the config class derives without it: every layer but each
 * `full_attention_interval`-th, Kimi-Linear's own rule), and the descriptor of such a layer's mixer (Gated DeltaNet,
 * or Kimi Delta Attention: ./kda.ts), every tensor checked against the shape config.json implies.
 */
import type { AttentionDescriptor, DeltaNetProjections } from '../../native/contract'
import type { GatedDeltaNetDecl } from '../registry/types'
import { type LayerTensors, refuse, type SpecContext } from './context'
import { kdaDescriptor, kdaDefaultLayers } from './kda'

const MIXER_TYPES = ['linear_attention', 'full_attention'] as const

/** Whether each decoder layer mixes tokens with linear attention (all false for families without it). */
export function linearAttentionLayers(context: SpecContext, raw: Record<string, unknown>, layers: number): boolean[] {
  const decl = context.forward.linearAttention
  if (!decl) return Array.from({ length: layers }, () => false)
  const given = raw.layer_types
  if (Array.isArray(given)) {
    if (given.length !== layers || !given.every((t) => (MIXER_TYPES as readonly unknown[]).includes(t))) {
      context.values.invalid('layer_types', `a list of ${layers} of ${MIXER_TYPES.join(', ')} (one per decoder layer)`, given)
    }
    return given.map((t) => t === 'linear_attention')
  }
  if (decl.kind === 'kimi_delta_attention') return kdaDefaultLayers(context, layers)
  const interval = context.values.integer(decl.intervalKey)
  return Array.from({ length: layers }, (_, i) => (i + 1) % interval !== 0)
}

/** The DeltaNet's input projections in the family's layout, each checked and marked as used. */
function projections(decl: GatedDeltaNetDecl, tensors: LayerTensors, mixer: string, hidden: number, sizes: { keyDim: number; valueDim: number; valueHeads: number }): DeltaNetProjections {
  const { keyDim, valueDim, valueHeads } = sizes
  const linear = (name: string, rows: number, what: string): string => {
    tensors.use(`${mixer}.${name}.weight`, [rows, hidden], `${name} [${what}, hidden_size]`)
    return `${mixer}.${name}`
  }
  if (decl.projections === 'grouped') {
    return {
      layout: 'grouped',
      qkvz: linear('in_proj_qkvz', 2 * keyDim + 2 * valueDim, '2·key_dim + 2·value_dim'),
      ba: linear('in_proj_ba', 2 * valueHeads, '2·linear_num_value_heads'),
    }
  }
  return {
    layout: 'split',
    qkv: linear('in_proj_qkv', 2 * keyDim + valueDim, '2·key_dim + value_dim'),
    z: linear('in_proj_z', valueDim, 'value_dim'),
    b: linear('in_proj_b', valueHeads, 'linear_num_value_heads'),
    a: linear('in_proj_a', valueHeads, 'linear_num_value_heads'),
  }
}

/** The linear-attention mixer of the decoder layer whose names start with `prefix`, of the family's kind. */
export function linearMixerDescriptor(context: SpecContext, tensors: LayerTensors, prefix: string): AttentionDescriptor {
  const decl = context.forward.linearAttention
  if (!decl) return refuse(context, `${prefix}: the family declares no linear attention`)
  if (decl.kind === 'kimi_delta_attention') return { kind: 'kimi_delta_attention', ...kdaDescriptor(context, tensors, `${prefix}self_attn`) }
  return deltaNetDescriptor(context, tensors, prefix, decl)
}

/** The Gated DeltaNet of the decoder layer whose names start with `prefix` (`<prefix>linear_attn.*`). */
function deltaNetDescriptor(context: SpecContext, tensors: LayerTensors, prefix: string, decl: GatedDeltaNetDecl): AttentionDescriptor {
  const { values, hidden } = context
  const keyHeads = values.integer('linear_num_key_heads')
  const valueHeads = values.integer('linear_num_value_heads')
  const keyHeadDim = values.integer('linear_key_head_dim')
  const valueHeadDim = values.integer('linear_value_head_dim')
  const kernel = values.integer('linear_conv_kernel_dim')
  // transformers repeats each key head for value_heads / key_heads value heads.
  if (valueHeads % keyHeads !== 0) values.invalid('linear_num_value_heads', `a multiple of linear_num_key_heads (${keyHeads})`)
  const mixer = `${prefix}linear_attn`
  const keyDim = keyHeads * keyHeadDim
  const valueDim = valueHeads * valueHeadDim
  tensors.use(`${mixer}.out_proj.weight`, [hidden, valueDim], 'out_proj [hidden_size, value_dim]')
  return {
    kind: 'gated_delta_net',
    projections: projections(decl, tensors, mixer, hidden, { keyDim, valueDim, valueHeads }),
    conv1d: tensors.use(`${mixer}.conv1d.weight`, [2 * keyDim + valueDim, 1, kernel], 'conv1d [2·key_dim + value_dim, 1, linear_conv_kernel_dim]'),
    dt_bias: tensors.use(`${mixer}.dt_bias`, [valueHeads], 'dt_bias [linear_num_value_heads]'),
    a_log: tensors.use(`${mixer}.A_log`, [valueHeads], 'A_log [linear_num_value_heads]'),
    norm: tensors.use(`${mixer}.norm.weight`, [valueHeadDim], 'the gated norm [linear_value_head_dim]'),
    out_proj: `${mixer}.out_proj`,
    num_key_heads: keyHeads,
    num_value_heads: valueHeads,
    key_head_dim: keyHeadDim,
    value_head_dim: valueHeadDim,
    conv_kernel: kernel,
  }
}
