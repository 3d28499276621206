/**
 * The decoder layers of the spec: a token mixer (attention, linear attention — Gated DeltaNet or Kimi Delta
 * Attention —, or a hybrid family's Mamba-2, Mamba, short-convolution or lightning-attention mixer) and an MLP or MoE
 * block, each with its norm before it (or after it: post-norm families; or before it with the residual taken after
 * it: MiniMax-Text-01; or both: Gemma 4, whose layers also scale their output); or, in a single-mixer family
 * (Nemotron-H), one mixer of any of these kinds after one norm; or LongCat-Flash's double sublayers (double.ts).
 * Every tensor of a layer must be used by its descriptor, or the layer is refused.
 */
import type { AttentionDescriptor, LayerDescriptor, ResidualScales } from '../../native/contract'
import type { HybridDecl, HybridLayerKind } from '../registry/types'
import type { MoeLayer } from '../resolve'
import { attentionDescriptor, type AttentionShape } from './attention'
import { fmt, hiddenNorm, LayerTensors, refuse, type SpecContext } from './context'
import { doubleSublayerLayer } from './double'
import type { LayerAttention } from './layer-attention'
import { lightningDescriptor } from './lightning'
import { linearMixerDescriptor } from './linear-attention'
import { mambaDescriptor } from './mamba'
import { mamba2Descriptor } from './mamba2'
import { shortConvDescriptor } from './short-conv'
import { mlpDescriptor } from './moe'

/** Tensors of a decoder layer that the forward legitimately does not load (quantization scales of FP8 sources,
 * rotary caches some checkpoints carry). */
const IGNORED_LAYER_TENSOR = /(\.rotary_emb\.inv_freq|_scale_inv|\.weight_scale|\.input_scale)$/

/** What every decoder layer shares. */
export interface LayerParts {
  prefix: string
  attention: AttentionShape
  scaling: number
  /** Per layer: mask, rope, q/k norm after the rope, temperature. */
  variants: LayerAttention[]
  /** Per layer: whether its token mixer is linear attention instead of self-attention. */
  linear: boolean[]
  residualMultiplier: number
  moeByLayer: Map<number, MoeLayer>
  /** A hybrid family's mixer of each layer. */
  kinds?: HybridLayerKind[]
  /** With sparse attention: per layer, whether it runs its own indexer. */
  indexers?: boolean[]
  /** Attention by layer type: each layer's shape, instead of `attention`. */
  shapes?: AttentionShape[]
}

/** Refuses any tensor of layer `index` (names starting with `prefix`) that the descriptor does not use. */
function refuseUnused(context: SpecContext, tensors: LayerTensors, prefix: string, index: number): void {
  for (const t of context.tensors.list) {
    if (!t.name.startsWith(prefix) || tensors.used.has(t.name) || tensors.ignored.has(t.name) || IGNORED_LAYER_TENSOR.test(t.name)) continue
    refuse(context, `${t.name} ${fmt(t.shape)} belongs to layer ${index} but the descriptor's forward would not use it`)
  }
}

/** The token mixer of a layer whose kind is `kind` (`mamba2`, `mamba`, `short_conv`, `lightning` or `attention`). */
function tokenMixer(context: SpecContext, tensors: LayerTensors, prefix: string, index: number, parts: LayerParts, hybrid: HybridDecl | undefined): AttentionDescriptor {
  const kind = parts.kinds?.[index] ?? 'attention'
  if (parts.linear[index]) return linearMixerDescriptor(context, tensors, prefix)
  if (kind === 'mamba2' || kind === 'mamba') {
    const module = hybrid?.modules[kind]
    if (kind === 'mamba2' && module && hybrid?.mamba2) return { kind, ...mamba2Descriptor(context, tensors, `${prefix}${module}`, hybrid.mamba2) }
    if (kind === 'mamba' && module && hybrid?.mamba) return { kind, ...mambaDescriptor(context, tensors, `${prefix}${module}`, hybrid.mamba) }
    refuse(context, `layer ${index} is ${kind} in config.json, but ${context.entry.family} declares no ${kind} mixer`)
  }
  if (kind === 'short_conv') {
    const module = hybrid?.modules.short_conv
    if (module && hybrid?.shortConv) return { kind, ...shortConvDescriptor(context, tensors, `${prefix}${module}`, hybrid.shortConv) }
    refuse(context, `layer ${index} is a short convolution in config.json, but ${context.entry.family} declares none`)
  }
  if (kind === 'lightning') {
    const module = hybrid?.modules.lightning
    const place = { index, layers: parts.linear.length }
    if (module && hybrid?.lightning) return { kind, ...lightningDescriptor(context, tensors, `${prefix}${module}`, hybrid.lightning, parts.attention, place) }
    refuse(context, `layer ${index} is lightning attention in config.json, but ${context.entry.family} declares none`)
  }
  const variant = parts.variants[index] as LayerAttention
  return attentionDescriptor(context, tensors, prefix, parts.shapes?.[index] ?? parts.attention, parts.scaling, variant, hybrid?.modules.attention ?? context.forward.attentionModule, parts.indexers?.[index])
}

/** A single-mixer layer (Nemotron-H): one norm, then a Mamba-2 mixer, attention, an MoE block or a dense MLP. */
function singleMixerLayer(context: SpecContext, tensors: LayerTensors, index: number, parts: LayerParts, hybrid: HybridDecl): LayerDescriptor {
  const prefix = `${parts.prefix}${index}.`
  const inputNorm = tensors.use(`${prefix}${hybrid.norm ?? 'norm'}.weight`, [context.hidden], 'the layer norm [hidden_size]')
  const layer: LayerDescriptor = { index, input_norm: inputNorm, norm_placement: 'pre', residual_multiplier: parts.residualMultiplier }
  const kind = parts.kinds?.[index] as HybridLayerKind
  const moe = parts.moeByLayer.get(index)
  if ((kind === 'moe') !== (moe !== undefined)) refuse(context, `layer ${index} is ${kind} in config.json but ${moe ? 'holds' : 'lacks'} routed experts`)
  if (kind !== 'moe' && kind !== 'mlp') layer.attention = tokenMixer(context, tensors, prefix, index, parts, hybrid)
  else layer.mlp = mlpDescriptor(context, tensors, index, prefix, moe, hybrid.modules[kind] ?? 'mlp')
  return layer
}

/** Decoder layer `index`; any tensor of the layer the forward would not use is refused. */
export function layerDescriptor(context: SpecContext, index: number, parts: LayerParts): LayerDescriptor {
  const prefix = `${parts.prefix}${index}.`
  const hybrid = context.forward.hybrid
  const tensors = new LayerTensors(context.tensors)
  let layer: LayerDescriptor
  if (hybrid?.singleMixer) {
    layer = singleMixerLayer(context, tensors, index, parts, hybrid)
  } else if (context.forward.doubleSublayers) {
    const input = { prefix, attention: parts.attention, scaling: parts.scaling, variant: parts.variants[index] as LayerAttention, residualMultiplier: parts.residualMultiplier }
    layer = doubleSublayerLayer(context, tensors, index, { ...input, moe: parts.moeByLayer.get(index) })
  } else {
    const kind = parts.kinds?.[index]
    if (kind === 'moe' || kind === 'mlp') refuse(context, `layer ${index} is ${kind} in config.json, but ${context.entry.family} layers hold a token mixer and an MLP`)
    // The mixer's and the MLP's norms: on their inputs, or (post-norm families) on their outputs, or (sandwich) on
    // both.
    const post = context.forward.postNorms === true
    const sandwich = context.forward.sandwichNorms
    const pre = hybrid?.norms ? [hybrid.norms.mixer, hybrid.norms.mlp] : ['input_layernorm', 'post_attention_layernorm']
    const [first, second] = (sandwich ? [sandwich.mixerInput, sandwich.mlpInput] : post ? ['post_attention_layernorm', 'post_feedforward_layernorm'] : pre) as [string, string]
    const norm = (name: string): string => hiddenNorm(context, tensors, `${prefix}${name}`, `the ${name} [hidden_size]`)
    const inputNorm = norm(first)
    const postNorm = norm(second)
    const attention = tokenMixer(context, tensors, prefix, index, parts, hybrid)
    const mlp = mlpDescriptor(context, tensors, index, prefix, parts.moeByLayer.get(index))
    const scales = residualScales(context, kind ?? 'attention')
    const placement = sandwich ? 'sandwich' : post ? 'post' : scales ? 'normed_residual' : 'pre'
    layer = { index, input_norm: inputNorm, post_attention_norm: postNorm, norm_placement: placement, residual_multiplier: parts.residualMultiplier, attention, mlp }
    if (scales) layer.residual_scales = scales
    if (sandwich) layer.output_norms = { attention: norm(sandwich.mixerOutput), mlp: norm(sandwich.mlpOutput) }
    const scalar = context.forward.layerScalar
    if (scalar) layer.output_scale = tensors.use(`${prefix}${scalar}`, [1], `${scalar} [1]`)
  }
  refuseUnused(context, tensors, prefix, index)
  return layer
}

/** The weights of the residual terms of a layer whose mixer is `kind`, for a family that takes the residual after
 * the norm (none elsewhere). */
function residualScales(context: SpecContext, kind: HybridLayerKind): ResidualScales | undefined {
  const decl = context.forward.normedResidual
  if (!decl) return undefined
  const mixer = decl.mixer[kind]
  if (!mixer) return refuse(context, `${context.entry.family} declares no residual weights for a ${kind} layer`)
  const { values } = context
  return {
    attention_alpha: values.number(mixer[0]),
    attention_beta: values.number(mixer[1]),
    mlp_alpha: values.number(decl.mlp[0]),
    mlp_beta: values.number(decl.mlp[1]),
  }
}
