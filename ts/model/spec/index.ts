/**
 * The model spec (the descriptor the native forward is given): everything the Rust forward needs to reproduce
 * transformers' forward of a checkpoint (full tensor and module names, block kinds, hyper-parameters), decided
 * here once from config.json, the header listing, the inspect report and the registry. The types are declared
 * in Rust and generated (native/contract.ts). Rust never re-derives any of it: every default transformers
 * applies when a config key is absent is resolved here.
 *
 * Naming convention (as the Rust declaration says): projections and MLPs are *module* names (the Rust side
 * appends `.weight` / `.bias`); norms, embeddings, the lm_head, routers, biases and expert tensors are full
 * *tensor* names; per-expert tensor names contain `{e}`.
 */
import * as path from 'node:path'

import { MoeQuantError } from '../../errors'
import type { ModelDescriptor, TokenReplacement } from '../../native/contract'
import { parseConfig, type TextConfig } from '../config'
import { findLayerPrefix } from '../detect'
import { type InspectReport, reportFromListing } from '../inspection'
import { hybridLayerKinds } from '../layer-kinds'
import type { HeaderListing } from '../listing'
import { lookupArchitecture, wrapperTiesEmbeddings } from '../registry'
import { gatedActivation } from './activation'
import { attentionHeads, type AttentionShape, attentionScaling, mlaShape } from './attention'
import { ConfigValues } from './config-values'
import { CheckpointTensors, hiddenNorm, refuse, type SpecContext, unsupported } from './context'
import { layerAttentions, layerRopeThetas } from './layer-attention'
import { layerTypeAttention } from './layer-type-attention'
import { layerDescriptor, type LayerParts } from './layers'
import { linearAttentionLayers } from './linear-attention'
import { buildRope, ropeParameters } from './rope'
import { indexerLayers } from './sparse-attention'

/** The registry entry and forward of the model, refusing families whose forward is not declared. */
function specContext(report: InspectReport, config: TextConfig, listing: HeaderListing): SpecContext {
  const entry = report.architecture === 'registry' ? lookupArchitecture(config.modelType) : undefined
  if (!entry) {
    unsupported(undefined, config.modelType, `model_type "${config.modelType}" has no registry entry, so its forward is unknown (its experts were only recognised by structure)`)
  }
  const declared = entry.forward
  if (!declared) unsupported(entry, config.modelType, entry.forwardUnsupported ?? 'the registry entry declares no forward')
  const other = declared.layoutNames
  const forward = other && listing.tensors.some((t) => t.name.endsWith(other.suffix)) ? { ...declared, ...other.names } : declared
  for (const { suffix, reason } of forward.unreadTensors ?? []) {
    const found = listing.tensors.find((t) => t.name.endsWith(suffix))
    if (found) unsupported(entry, config.modelType, `${found.name}: ${reason}`)
  }
  const file = path.join(listing.dir, 'config.json')
  const values = new ConfigValues(config.raw, forward.configDefaults, file, forward.configAliases)
  return { entry, forward, modelType: config.modelType, hidden: config.hiddenSize, values, file, tensors: new CheckpointTensors(listing.tensors) }
}

/** Features of the family's forward that the descriptor cannot express: refused rather than guessed. */
function refuseInexpressible(context: SpecContext): void {
  const { forward, values } = context
  if (forward.expertActivation === 'silu') gatedActivation(context)
  if (forward.expertActivation === 'gpt_oss') {
    const alpha = values.number('swiglu_alpha')
    const limit = values.number('swiglu_limit')
    if (alpha !== 1.702 || limit !== 7) refuse(context, `swiglu_alpha ${alpha} and swiglu_limit ${limit} (the forward implements GPT-OSS's 1.702 and 7)`)
  }
  if (forward.expertActivation === 'relu2') {
    const act = values.value('mlp_hidden_act')
    if (act !== 'relu2') refuse(context, `mlp_hidden_act ${JSON.stringify(act)} (the forward implements relu2)`)
    const latent = values.value('moe_latent_size')
    if (latent !== null && latent !== undefined) refuse(context, `moe_latent_size ${JSON.stringify(latent)}: the latent projections around the experts are not expressible in the descriptor yet`)
  }
  for (const limit of forward.configLimits ?? []) {
    const value = values.value(limit.key) ?? null
    if (!limit.allowed.includes(value as never)) refuse(context, `${limit.key} ${JSON.stringify(value)}: ${limit.block}, which the forward does not implement`)
  }
  if (forward.clipQkvKey) {
    const clip = values.value(forward.clipQkvKey)
    if (clip !== null && clip !== undefined) refuse(context, `${forward.clipQkvKey} ${JSON.stringify(clip)} (clamping q/k/v) is not expressible in the descriptor yet`)
  }
}

/** The tensors outside the decoder layers: token embedding, output projection (tied or not), final norm. */
function modelTensors(
  context: SpecContext,
  config: TextConfig,
  outer: unknown,
): { layersPrefix: string; embed: string; lmHead: string; lmHeadBias: string | undefined; finalNorm: string; vocab: number } {
  const { tensors, hidden } = context
  const layersPrefix = findLayerPrefix(tensors.list)
  const base = layersPrefix.replace(/(layers|blocks)\.$/, '')
  const tie = wrapperTiesEmbeddings(config.modelType, config.outerModelType, outer) ?? context.values.value('tie_word_embeddings') === true
  const lmHeadName = ['lm_head.weight', ...tensors.list.map((t) => t.name).filter((n) => n.endsWith('.lm_head.weight')).sort((a, b) => a.length - b.length)].find((n) =>
    tensors.has(n),
  )
  const names = context.forward.modelTensors ?? { embed: 'embed_tokens.weight', finalNorm: 'norm.weight' }
  let embed = `${base}${names.embed}`
  if (!tensors.has(embed) && tie && lmHeadName) embed = lmHeadName // transformers ties whichever of the two exists
  const embedTensor = tensors.expect(embed, null, 'the token embedding')
  const vocab = config.vocabSize ?? (embedTensor.shape[0] as number)
  tensors.expect(embed, [vocab, hidden], 'the token embedding [vocab_size, hidden_size]')
  let lmHead: string
  if (lmHeadName) lmHead = lmHeadName
  else if (tie) lmHead = embed
  else {
    throw new MoeQuantError('E_LAYOUT_MISSING_TENSOR', 'lm_head.weight is missing and config.json does not tie the word embeddings (tie_word_embeddings)', {
      tensor: 'lm_head.weight',
    })
  }
  tensors.expect(lmHead, [vocab, hidden], 'the output projection [vocab_size, hidden_size]')
  const finalNorm = hiddenNorm(context, tensors, `${base}${names.finalNorm.replace(/\.weight$/, '')}`, 'the final norm [hidden_size]')
  const lmHeadBias = lmHead.endsWith('lm_head.weight') && tensors.has(lmHead.replace(/weight$/, 'bias')) ? lmHead.replace(/weight$/, 'bias') : undefined
  if (lmHeadBias) tensors.expect(lmHeadBias, [vocab], 'the output projection bias [vocab_size]')
  return { layersPrefix, embed, lmHead, lmHeadBias, finalNorm, vocab }
}

/** The RMSNorm epsilon, under whichever name config.json uses. */
function normEpsilon(context: SpecContext, raw: Record<string, unknown>): number {
  const keys = ['rms_norm_eps', 'layer_norm_eps', 'layer_norm_epsilon', 'norm_eps']
  const key = keys.find((k) => typeof raw[k] === 'number') ?? keys.find((k) => typeof context.forward.configDefaults[k] === 'number') ?? 'rms_norm_eps'
  const eps = context.values.number(key)
  // A negative epsilon can make the normalised variance negative, and its square root NaN.
  if (eps < 0) context.values.invalid(key, 'a number ≥ 0')
  return eps
}

/**
 * Builds the model descriptor of a checkpoint from its inspect report, parsed config and header listing.
 * Every name it returns exists in the listing with the shape the forward expects.
 *
 * @throws MoeQuantError `E_LAYOUT_UNRECOGNISED` ("forward not supported for …") for families or features the
 *   descriptor cannot express yet, `E_CONFIG_INVALID` for config values transformers could not use,
 *   `E_LAYOUT_MISSING_TENSOR` / `E_LAYOUT_SHAPE` when the checkpoint disagrees with config.json.
 */
export function buildDescriptor(report: InspectReport, config: TextConfig, listing: HeaderListing): ModelDescriptor {
  const context = specContext(report, config, listing)
  const { forward, values } = context
  const raw = config.raw
  refuseInexpressible(context)
  const model = modelTensors(context, config, listing.config)
  const heads = attentionHeads(context)
  const rmsNormEps = normEpsilon(context, raw)
  const typed = forward.layerTypeAttention ? layerTypeAttention(context, raw, config.numLayers, heads, forward.layerTypeAttention) : undefined
  // Ropes by layer type replace the model's one rope.
  const params = typed ? {} : ropeParameters(values, raw, forward.ropeDefaults, forward.ropeScalingAliases)
  const thetas = new Set(layerRopeThetas(context, raw, config.numLayers)?.filter((theta) => theta !== 0))
  if (thetas.size > 1) refuse(context, `${forward.layerRopeThetaKey} ${[...thetas].join(', ')}: one rope base per model is expressible, not one per layer`)
  if (thetas.size === 1) params.rope_theta = [...thetas][0]
  const attention: AttentionShape = forward.attention === 'mla' ? { ...heads, mla: mlaShape(context) } : heads
  const withRope = hasRope(context)
  // DeepSeek's config replaces head_dim by qk_rope_head_dim, which is what its rope rotates.
  const rope = withRope && !typed ? buildRope(context, params, attention.mla ? attention.mla.rope : attention.headDim) : undefined
  const scaling = attentionScaling(context, attention, params)
  const multiplier = (key: string | undefined): number => (key ? values.number(key) : 1)
  // Read first: a layer type the family's layers cannot take is a config error before it is anything else.
  const linear = linearAttentionLayers(context, raw, config.numLayers)
  const parts: LayerParts = {
    prefix: model.layersPrefix,
    attention,
    scaling,
    variants: layerAttentions(context, raw, config.numLayers, withRope, typed),
    linear,
    residualMultiplier: multiplier(forward.multipliers?.residual),
    moeByLayer: new Map(report.moeLayers.map((l) => [l.layer, l])),
  }
  if (typed) parts.shapes = typed.shapes
  if (forward.hybrid) parts.kinds = hybridLayerKinds(forward.hybrid, raw, config.numLayers, context.file)
  if (forward.sparseAttention) parts.indexers = indexerLayers(context, raw, config.numLayers)
  const layers = Array.from({ length: config.numLayers }, (_, index) => layerDescriptor(context, index, parts))
  return {
    hidden_size: context.hidden,
    vocab_size: model.vocab,
    embed_as: placeholderTokens(context, config, listing.config, model.vocab),
    rms_norm_eps: rmsNormEps,
    rms_norm_offset: forward.normWeightOffset ?? 0,
    rms_norm_f32_weight: forward.normWeightInF32 === true,
    embed: model.embed,
    embedding_multiplier: forward.embeddingScaleSqrtHidden ? Math.sqrt(context.hidden) : multiplier(forward.multipliers?.embedding),
    final_norm: model.finalNorm,
    lm_head: model.lmHead,
    lm_head_bias: model.lmHeadBias ?? null,
    norm: forward.layerNorm ? 'layer' : 'rms',
    logits_scaling: multiplier(forward.multipliers?.logits),
    final_logit_softcapping: logitSoftcap(context),
    ...(rope ? { rope } : {}),
    layer_type_ropes: typed?.ropes ?? {},
    layers,
  }
}

/** The token ids a wrapper embeds as its pad token (Gemma 4's placeholders), when the checkpoint is that wrapper. */
function placeholderTokens(context: SpecContext, config: TextConfig, outerText: unknown, vocab: number): TokenReplacement | null {
  const decl = context.entry.wrappers?.[config.outerModelType]?.placeholders
  if (!decl || config.outerModelType === config.modelType) return null
  const outer: Record<string, unknown> = typeof outerText === 'string' ? JSON.parse(outerText) : (outerText as Record<string, unknown>)
  const id = (key: string, value: unknown): number => {
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) return context.values.invalid(key, 'a token id ≥ 0', value)
    return value
  }
  const ids = Object.entries(decl.tokens).map(([key, fallback]) => id(key, key in outer ? outer[key] : fallback))
  const by = id(decl.padKey, context.values.value(decl.padKey))
  if (by >= vocab) context.values.invalid(decl.padKey, `a token id below the vocabulary size ${vocab}`, by)
  // Ids beyond the vocabulary never reach the embedding.
  return { ids: ids.filter((i) => i < vocab), by }
}

/** The soft-capping of the logits the family's config sets (null: none). */
function logitSoftcap(context: SpecContext): number | null {
  const key = context.forward.logitSoftcapKey
  const value = key ? context.values.value(key) : null
  if (!key || value === null || value === undefined) return null
  const cap = context.values.number(key)
  if (!(cap > 0)) context.values.invalid(key, 'a positive number or null')
  return cap
}

/** Whether the model has a rotary embedding, as the family declares (Granite-4.0-H: only with
 * `position_embedding_type` "rope"). */
function hasRope(context: SpecContext): boolean {
  const declared = context.forward.positionEmbedding
  if (declared === undefined) return true
  if (declared === 'none') return false
  return context.values.value(declared.key) === declared.rope
}

/** The inspect report and the descriptor of the checkpoint a listing describes. @throws MoeQuantError as buildDescriptor */
export function describeListing(listing: HeaderListing): { report: InspectReport; descriptor: ModelDescriptor } {
  const report = reportFromListing(listing)
  const config = parseConfig(listing.config, path.join(listing.dir, 'config.json'))
  return { report, descriptor: buildDescriptor(report, config, listing) }
}
