/**
 * Attention that differs by layer type (Gemma 4): the head size and KV heads of each layer (config
 * `per_layer_config`, else the family's keys for its wide layer type), which layers take k's projection as their
 * values, and one rope per layer type from `rope_parameters` keyed by type, over that type's head size.
 */
import type { RopeDescriptor } from '../../native/contract'
import type { LayerTypeAttentionDecl } from '../registry/branches'
import type { AttentionShape } from './attention'
import { isObject } from './config-values'
import { refuse, type SpecContext } from './context'
import { layerTypes } from './layer-attention'
import { buildRope, ropeNumber } from './rope'

/** Per layer: its shape, its type, whether its values are k's projection; and the rope of each type. */
export interface LayerTypeAttention {
  shapes: AttentionShape[]
  types: string[]
  keysAsValues: boolean[]
  ropes: Record<string, RopeDescriptor>
}

/** The overrides of config `per_layer_config` by layer index (transformers writes the keys zero-padded). */
function perLayerOverrides(context: SpecContext, raw: Record<string, unknown>, layers: number): Map<number, Record<string, unknown>> | undefined {
  const given = raw.per_layer_config
  if (given === undefined || given === null) return undefined
  if (!isObject(given)) return context.values.invalid('per_layer_config', 'an object of per-layer overrides', given)
  const overrides = new Map<number, Record<string, unknown>>()
  for (const [key, value] of Object.entries(given)) {
    const index = Number(key)
    if (!Number.isSafeInteger(index) || index < 0 || index >= layers || !isObject(value)) {
      context.values.invalid('per_layer_config', `an object of overrides keyed by layer index (0 to ${layers - 1})`, given)
    }
    const unknown = Object.keys(value).filter((k) => k !== 'head_dim' && k !== 'num_key_value_heads')
    if (unknown.length > 0) refuse(context, `per_layer_config overrides ${unknown.join(', ')} of layer ${index}: only head_dim and num_key_value_heads may differ between layers`)
    overrides.set(index, value)
  }
  return overrides
}

/** The shape of every layer, as transformers' config class resolves it. */
function layerShapes(context: SpecContext, raw: Record<string, unknown>, decl: LayerTypeAttentionDecl, types: string[], base: AttentionShape): AttentionShape[] {
  const { values } = context
  const overrides = perLayerOverrides(context, raw, types.length)
  const positive = (key: string, value: unknown): number => {
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) return values.invalid(key, 'an integer ≥ 1', value)
    return value
  }
  if (overrides) {
    return types.map((_, i) => {
      const o = overrides.get(i) ?? {}
      return {
        ...base,
        headDim: o.head_dim === undefined ? base.headDim : positive('per_layer_config head_dim', o.head_dim),
        numKvHeads: o.num_key_value_heads === undefined ? base.numKvHeads : positive('per_layer_config num_key_value_heads', o.num_key_value_heads),
      }
    })
  }
  // transformers: the wide layers take `global_head_dim` and, when keys are values, `num_global_key_value_heads`.
  const wideHeadDim = values.has(decl.headDim.key) ? values.integer(decl.headDim.key) : decl.headDim.default
  const wideKv = values.boolean(decl.keysAsValues) ? values.optionalInteger(decl.kvHeads) : null
  return types.map((type) => (type === decl.wideType ? { ...base, headDim: wideHeadDim, numKvHeads: wideKv ?? base.numKvHeads } : base))
}

/** The rope of layer type `type` over heads of `headDim`: default and proportional here, other kinds as the
 * model's rope would be. */
function typeRope(context: SpecContext, params: Record<string, unknown>, headDim: number): RopeDescriptor {
  const theta = ropeNumber(params, 'rope_theta', true) as number
  if (!(theta > 0)) refuse(context, `rope_theta ${theta}: the base must be positive`)
  if (params.rope_type !== 'proportional') return buildRope(context, params, headDim)
  // transformers: int(partial_rotary_factor * head_dim // 2) of the head_dim / 2 frequencies rotate.
  const partial = ropeNumber(params, 'partial_rotary_factor', false) ?? 1
  const angles = Math.floor((partial * headDim) / 2)
  const rope: RopeDescriptor = { kind: 'proportional', theta, rotary_dim: headDim, interleaved: false, proportional_angles: angles }
  const factor = ropeNumber(params, 'factor', false)
  if (factor !== undefined) rope.factor = factor
  return rope
}

/** Per-layer shapes, types, values and the ropes by type, for a family that declares `layerTypeAttention`. */
export function layerTypeAttention(
  context: SpecContext,
  raw: Record<string, unknown>,
  layers: number,
  base: AttentionShape,
  decl: LayerTypeAttentionDecl,
): LayerTypeAttention {
  const types = layerTypes(context, raw, layers, Array.from({ length: layers }, () => true))
  const shapes = layerShapes(context, raw, decl, types, base)
  const keysAsValues = types.map((type) => type === decl.wideType && context.values.boolean(decl.keysAsValues))
  const given = raw.rope_parameters
  const ropeParams: Record<string, unknown> = isObject(given) && Object.keys(given).length > 0 ? given : decl.ropeDefaults
  const ropes: Record<string, RopeDescriptor> = {}
  for (const type of new Set(types)) {
    const heads = new Set(shapes.filter((_, i) => types[i] === type).map((s) => s.headDim))
    if (heads.size > 1) refuse(context, `the ${type} layers have head sizes ${[...heads].join(', ')}: transformers needs one rope per layer type`)
    const params = ropeParams[type]
    if (!isObject(params)) context.values.invalid('rope_parameters', `an object of rope parameters per layer type (${[...new Set(types)].join(', ')})`, given)
    ropes[type] = typeRope(context, { ...params, rope_type: params.rope_type ?? 'default' }, [...heads][0] as number)
  }
  return { shapes, types, keysAsValues, ropes }
}
