/**
 * Which tensors a quantization would quantize and which it keeps in the source dtype (SPEC §5): attention
 * projections, dense MLPs, shared experts and routed experts are quantized; lm_head, embeddings, routers,
 * shared-expert gates, norms, conv1d, the small gate projections of linear-attention mixers, vision towers and
 * MTP layers are kept.
 */
import type { DetectedLayer } from './detect'
import type { TensorHeader } from './listing'

export type KeepReason =
  | 'already quantized'
  | 'not floating point'
  | 'not a matrix'
  | 'lm_head'
  | 'embedding'
  | 'router'
  | 'norm'
  | 'conv1d'
  | 'mixer gate'
  | 'expert bias'
  | 'vision tower'
  | 'MTP layer'
  | 'outside the decoder layers'

export interface TensorPlan {
  quantize: TensorHeader[]
  keep: Array<{ tensor: TensorHeader; reason: KeepReason }>
}

const FLOAT_DTYPES = new Set(['F16', 'BF16', 'F32', 'F64', 'F8_E4M3'])

/** By name, as ModelOpt 0.47's default_disabled_quantizers leaves them unquantized (and a few more spellings). */
const KEEP_BY_NAME: Array<[RegExp, KeepReason]> = [
  [/(^|\.)lm_head\./, 'lm_head'],
  [/(^|\.)(output_layer|proj_out)\./, 'lm_head'],
  [/(^|\.)(embed_tokens|wte|word_embeddings|embeddings|embed|embed_vision)\./, 'embedding'],
  [/(^|\.)(router|shared_expert_gate)(\.|$)/, 'router'],
  // The whole gate module of an MoE block: a router, or a router MLP (Zaya).
  [/(^|\.)(mlp|block_sparse_moe)\.gate\./, 'router'],
  [/norm/, 'norm'],
  [/conv1d/, 'conv1d'],
  [/(^|\.)linear_attn\.in_proj_[ab]/, 'mixer gate'],
  [/(^|\.)(vision_tower|vision_model|visual|vision|multi_modal_projector|mm_projector)\./, 'vision tower'],
  [/(^|\.)(mtp|nextn)[._]/, 'MTP layer'],
]

/** Splits the checkpoint's tensors into those to quantize and those to keep, with the reason. */
export function planTensors(tensors: readonly TensorHeader[], layers: readonly DetectedLayer[], layersPrefix: string): TensorPlan {
  const routers = new Set<string>()
  const expertBiases = new Set<string>()
  for (const layer of layers) {
    if (!layer.experts) continue
    const block = layer.experts.block ? `${layer.prefix}${layer.experts.block}.` : layer.prefix
    if (layer.router) routers.add(block + layer.router.weight)
    // Stacked biases ([E, 2I], [E, H]: GPT-OSS) are 2-D but no weight.
    for (const bias of [layer.experts.tensors.gateUpBias, layer.experts.tensors.downBias]) if (bias) expertBiases.add(block + bias)
  }
  const layerCount = layers.length
  const plan: TensorPlan = { quantize: [], keep: [] }
  for (const tensor of tensors) {
    const reason = expertBiases.has(tensor.name) ? 'expert bias' : keepReason(tensor, routers, layersPrefix, layerCount)
    if (reason) plan.keep.push({ tensor, reason })
    else plan.quantize.push(tensor)
  }
  return plan
}

function keepReason(tensor: TensorHeader, routers: Set<string>, layersPrefix: string, layerCount: number): KeepReason | undefined {
  if (tensor.quantized) return 'already quantized'
  if (!FLOAT_DTYPES.has(tensor.dtype)) return 'not floating point'
  for (const [pattern, reason] of KEEP_BY_NAME) if (pattern.test(tensor.name)) return reason
  if (routers.has(tensor.name)) return 'router'
  if (!tensor.name.startsWith(layersPrefix)) return 'outside the decoder layers'
  const index = Number(tensor.name.slice(layersPrefix.length).split('.')[0])
  if (Number.isInteger(index) && index >= layerCount) return 'MTP layer'
  if (tensor.shape.length < 2) return 'not a matrix'
  return undefined
}
