/**
 * The lightning attention of a hybrid family's layer (MiniMax-Text-01): `qkv_proj [3·heads·head_dim, H]`,
 * `output_gate [heads·head_dim, H]`, `out_proj [H, heads·head_dim]` (no biases), the output norm
 * `[heads·head_dim]`; the decays are the checkpoint's buffers where it stores them (transformers then uses them as
 * stored), else they follow from the layer's index and the number of layers.
 */
import type { LightningAttentionDescriptor } from '../../native/contract'
import type { LightningDecl } from '../registry/types'
import type { AttentionShape } from './attention'
import { type LayerTensors, pick, type SpecContext } from './context'

/** The lightning attention whose module is `module` (e.g. `model.layers.0.self_attn`) in layer `index` of `layers`. */
export function lightningDescriptor(context: SpecContext, tensors: LayerTensors, module: string, decl: LightningDecl, heads: AttentionShape, place: { index: number; layers: number }): LightningAttentionDescriptor {
  const { values, hidden } = context
  const width = heads.numHeads * heads.headDim
  const blockSize = values.integer(pick(context, decl.blockSize), 1)
  const m = (name: string): string => `${module}.${name}`
  tensors.use(m('qkv_proj.weight'), [3 * width, hidden], 'qkv_proj [3·num_attention_heads·head_dim, hidden_size]')
  tensors.use(m('output_gate.weight'), [width, hidden], 'output_gate [num_attention_heads·head_dim, hidden_size]')
  tensors.use(m('out_proj.weight'), [hidden, width], 'out_proj [hidden_size, num_attention_heads·head_dim]')
  const norm = tensors.use(m('norm.weight'), [width], 'the output norm [num_attention_heads·head_dim]')
  // transformers saves the decays as persistent buffers and, loading them, uses them as stored.
  const stored = context.tensors.has(m('slope_rate'))
  if (stored) {
    const { numHeads: h } = heads
    tensors.use(m('slope_rate'), [h, 1, 1], 'slope_rate [num_attention_heads, 1, 1]')
    tensors.use(m('query_decay'), [h, blockSize, 1], 'query_decay [num_attention_heads, block_size, 1]')
    tensors.use(m('key_decay'), [h, blockSize, 1], 'key_decay [num_attention_heads, block_size, 1]')
    tensors.use(m('diagonal_decay'), [1, h, blockSize, blockSize], 'diagonal_decay [1, num_attention_heads, block_size, block_size]')
  }
  return {
    qkv_proj: m('qkv_proj'),
    output_gate: m('output_gate'),
    out_proj: m('out_proj'),
    norm,
    norm_eps: decl.normEps,
    num_heads: heads.numHeads,
    head_dim: heads.headDim,
    block_size: blockSize,
    layer_index: place.index,
    num_layers: place.layers,
    stored_decays: stored ? module : null,
  }
}
