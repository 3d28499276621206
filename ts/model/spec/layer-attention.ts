/**
 * What differs between the attention of one decoder layer and the next: the mask (causal, sliding window,
 * chunked) from the family's sliding-window rule and `layer_types`, and the layers without rope: on Llama4
 * `no_rope_layers`, which take attention temperature tuning instead of the weightless q/k norm; on EXAONE-MoE and
 * Flint the full-attention layers.
 */
import type { AttentionMask, AttentionTemperature } from '../../native/contract'
import { refuse, type SpecContext } from './context'

/** The per-layer part of a grouped-query attention descriptor. */
export interface LayerAttention {
  mask: AttentionMask
  rope: boolean
  qk_weightless_norm: boolean
  temperature?: AttentionTemperature
  /** Attention by layer type (Gemma 4): the layer's rope, values from k's projection, the weightless v norm. */
  rope_layer_type?: string
  values_from_keys?: boolean
  v_norm?: boolean
}

const LAYER_TYPES = ['full_attention', 'sliding_attention', 'chunked_attention'] as const
type LayerType = (typeof LAYER_TYPES)[number]

/** Whether each layer uses rope: config `no_rope_layers` (1 = rope), else transformers' default from the interval;
 * or a per-layer rope base of 0 (`layer_rope_theta`). */
function ropeLayers(context: SpecContext, raw: Record<string, unknown>, layers: number): boolean[] {
  const thetas = layerRopeThetas(context, raw, layers)
  if (thetas) return thetas.map((theta) => theta !== 0)
  const decl = context.forward.noRope
  if (!decl) return Array.from({ length: layers }, () => true)
  const list = raw[decl.layersKey]
  // transformers: `no_rope_layers if no_rope_layers else default` (an empty list takes the default).
  if (Array.isArray(list) && list.length > 0) {
    if (list.length !== layers || !list.every((v) => v === 0 || v === 1 || typeof v === 'boolean')) {
      context.values.invalid(decl.layersKey, `a list of ${layers} values 0 or 1 (one per decoder layer)`, list)
    }
    return list.map((v) => v === 1 || v === true)
  }
  const interval = context.values.integer(decl.intervalKey)
  return Array.from({ length: layers }, (_, i) => (i + 1) % interval !== 0)
}

/** config `layer_types`, or what the family's config class derives without it; the last layer of the type the
 * config class forces there (Gemma 4). */
export function layerTypes(context: SpecContext, raw: Record<string, unknown>, layers: number, rope: boolean[]): LayerType[] {
  const types = declaredLayerTypes(context, raw, layers, rope)
  const last = context.forward.layerTypeAttention?.lastLayer
  if (last && layers > 0) types[layers - 1] = last as LayerType
  return types
}

function declaredLayerTypes(context: SpecContext, raw: Record<string, unknown>, layers: number, rope: boolean[]): LayerType[] {
  const given = raw.layer_types
  if (Array.isArray(given)) {
    if (given.length !== layers || !given.every((t) => (LAYER_TYPES as readonly unknown[]).includes(t))) {
      context.values.invalid('layer_types', `a list of ${layers} of ${LAYER_TYPES.join(', ')} (one per decoder layer)`, given)
    }
    return [...given] as LayerType[]
  }
  switch (context.forward.defaultLayerTypes) {
    case 'alternate_sliding':
      return Array.from({ length: layers }, (_, i) => ((i + 1) % 2 ? 'sliding_attention' : 'full_attention'))
    case 'chunked_on_rope_layers': {
      const chunked = context.values.value('attention_chunk_size') !== null && context.values.value('attention_chunk_size') !== undefined
      return rope.map((r) => (r && chunked ? 'chunked_attention' : 'full_attention'))
    }
    case 'full_every_pattern': {
      // transformers takes (i + 1) % pattern, with pattern 0 when sliding_window is unset: it cannot build either.
      context.values.integer('sliding_window')
      const pattern = context.values.integer('sliding_window_pattern')
      return Array.from({ length: layers }, (_, i) => ((i + 1) % pattern !== 0 ? 'sliding_attention' : 'full_attention'))
    }
    case 'full_every_fourth':
      return Array.from({ length: layers }, (_, i) => (i % 4 === 0 ? 'full_attention' : 'sliding_attention'))
    case 'full_every_sixth_and_last':
      return Array.from({ length: layers }, (_, i) => ((i + 1) % 6 !== 0 && i !== layers - 1 ? 'sliding_attention' : 'full_attention'))
    case 'full_first_two_every_fourth_last':
      return Array.from({ length: layers }, (_, i) => (i < 2 || i % 4 === 1 || i === layers - 1 ? 'full_attention' : 'sliding_attention'))
    case 'sliding_from_max_window_layers': {
      const set = context.values.value('sliding_window') !== null && context.values.value('sliding_window') !== undefined
      const from = set ? context.values.integer('max_window_layers', 0) : layers
      return Array.from({ length: layers }, (_, i) => (i >= from ? 'sliding_attention' : 'full_attention'))
    }
    case undefined:
      // Qwen2-MoE derives alternating sliding layers from use_sliding_window and max_window_layers.
      if (context.values.value('use_sliding_window') === true) refuse(context, 'use_sliding_window true without layer_types')
      return Array.from({ length: layers }, () => 'full_attention')
  }
}

/** The mask of every layer under the family's sliding-window rule. */
function masks(context: SpecContext, raw: Record<string, unknown>, layers: number, rope: boolean[]): AttentionMask[] {
  const { forward, values } = context
  const every = (mask: AttentionMask): AttentionMask[] => Array.from({ length: layers }, () => mask)
  const window = (): AttentionMask => ({ kind: 'sliding_window', window: values.integer('sliding_window') })
  if (forward.slidingWindow === 'layer_types') {
    return layerTypes(context, raw, layers, rope).map((type): AttentionMask => {
      if (type === 'sliding_attention') return window()
      if (type === 'chunked_attention') return { kind: 'chunked', size: values.integer('attention_chunk_size') }
      return { kind: 'causal' }
    })
  }
  // Linear-attention layers (their own mixer, linear-attention.ts) take no mask; a hybrid family's layer_types
  // name each layer's mixer, not its mask; sparse-attention families' (`indexed_attention`) their cache.
  const mixerKinds = forward.hybrid?.layerTypes.includes('layer_types') === true || forward.sparseAttention !== undefined
  const causal = ['full_attention', ...(forward.causalLayerTypes ?? [])]
  const attentionTypes = Array.isArray(raw.layer_types) && !mixerKinds ? raw.layer_types.filter((t) => !(forward.linearAttention && t === 'linear_attention')) : []
  if (attentionTypes.some((t) => !causal.includes(t))) {
    refuse(context, `layer_types ${JSON.stringify(raw.layer_types)}: ${context.entry.family} layers are all alike (its attention does not read layer_types)`)
  }
  const set = (key: string): boolean => values.value(key) !== null && values.value(key) !== undefined
  if (forward.slidingWindow === 'when_set' && set('sliding_window')) return every(window())
  if (forward.slidingWindow === 'when_enabled' && values.value('use_sliding_window') === true) return every(window())
  return every({ kind: 'causal' })
}

/** The attention variant of every decoder layer; `modelRope` false: the model has no rotary embedding; `typed`: the
 * family's attention by layer type. */
export function layerAttentions(context: SpecContext, raw: Record<string, unknown>, layers: number, modelRope = true, typed?: { types: string[]; keysAsValues: boolean[] }): LayerAttention[] {
  const { forward, values } = context
  const rope = ropeLayers(context, raw, layers).map((r) => r && modelRope)
  const mask = masks(context, raw, layers, rope)
  const weightless = forward.weightlessQkNormKey ? values.boolean(forward.weightlessQkNormKey) : false
  const tuning = forward.noRope?.temperature
  const tuned = tuning ? values.boolean(tuning.enabled) : false
  const slidingOnly = forward.ropeOnSlidingLayersOnly
  if (slidingOnly) {
    // A sliding layer without sliding_window was refused by the masks.
    const windowless = values.value('sliding_window') === null || values.value('sliding_window') === undefined
    mask.forEach((m, i) => {
      rope[i] = m.kind === 'sliding_window' || (windowless && slidingOnly.withoutWindow === 'everywhere')
    })
  }
  return rope.map((withRope, i) => {
    const layer: LayerAttention = { mask: mask[i] as AttentionMask, rope: withRope, qk_weightless_norm: weightless && withRope }
    if (tuning && tuned && !withRope) layer.temperature = { scale: values.number(tuning.scale), floor_scale: values.number(tuning.floorScale) }
    if (typed) {
      layer.rope_layer_type = typed.types[i] as string
      layer.values_from_keys = typed.keysAsValues[i] === true
    }
    if (forward.valueNorm) layer.v_norm = true
    return layer
  })
}

/** The per-layer rope bases of a family that declares them (`layer_rope_theta`), when config.json lists them. */
export function layerRopeThetas(context: SpecContext, raw: Record<string, unknown>, layers: number): number[] | undefined {
  const key = context.forward.layerRopeThetaKey
  const list = key ? raw[key] : undefined
  if (!key || list === undefined || list === null) return undefined
  if (!Array.isArray(list) || list.length !== layers || !list.every((v) => typeof v === 'number' && Number.isFinite(v) && v >= 0)) {
    context.values.invalid(key, `a list of ${layers} numbers ≥ 0 (one per decoder layer)`, list)
  }
  return list as number[]
}

