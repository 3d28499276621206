/**
 * LongCat-Flash's decoder layer: two attention sublayers (`self_attn.0`, `self_attn.1`) and two dense MLPs (`mlps.0`,
 * `mlps.1`), each after its norm (`input_layernorm.0`/`.1`, `post_attention_layernorm.0`/`.1`), and the MoE (`mlp`) as
 * a shortcut: it reads the first MLP's normed input and its output is added after the second MLP.
 * transformers: models/longcat_flash/modeling_longcat_flash.py `LongcatFlashDecoderLayer`.
 */
import type { LayerDescriptor } from '../../native/contract'
import type { MoeLayer } from '../resolve'
import { attentionDescriptor, type AttentionShape } from './attention'
import { hiddenNorm, type LayerTensors, refuse, type SpecContext } from './context'
import type { LayerAttention } from './layer-attention'
import { denseMlpDescriptor, mlpDescriptor } from './moe'

/** What a layer of double sublayers is built from: its names' prefix (`model.layers.<i>.`), the attention's shape,
 * scaling and variant (both attentions share them), its MoE and the residual multiplier. */
export interface DoubleLayerInput {
  prefix: string
  attention: AttentionShape
  scaling: number
  variant: LayerAttention
  moe: MoeLayer | undefined
  residualMultiplier: number
}

/** Decoder layer `index` of a family with double sublayers. */
export function doubleSublayerLayer(context: SpecContext, tensors: LayerTensors, index: number, input: DoubleLayerInput): LayerDescriptor {
  const { prefix, moe } = input
  if (!moe) refuse(context, `layer ${index} holds no routed experts: ${context.entry.family} layers all have their MoE shortcut`)
  const norm = (name: string, sublayer: number): string => hiddenNorm(context, tensors, `${prefix}${name}.${sublayer}`, `the ${name}.${sublayer} [hidden_size]`)
  const attention = (sublayer: number) => attentionDescriptor(context, tensors, prefix, input.attention, input.scaling, input.variant, `self_attn.${sublayer}`)
  return {
    index,
    input_norm: norm('input_layernorm', 0),
    post_attention_norm: norm('post_attention_layernorm', 0),
    norm_placement: 'pre',
    residual_multiplier: input.residualMultiplier,
    attention: attention(0),
    mlp: mlpDescriptor(context, tensors, index, prefix, moe),
    double: {
      first_mlp: denseMlpDescriptor(context, tensors, `${prefix}mlps.0`),
      input_norm: norm('input_layernorm', 1),
      attention: attention(1),
      post_attention_norm: norm('post_attention_layernorm', 1),
      second_mlp: denseMlpDescriptor(context, tensors, `${prefix}mlps.1`),
    },
  }
}
