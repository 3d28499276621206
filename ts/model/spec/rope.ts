/**
 * The rotary embedding of the spec, every default resolved as transformers' modeling_rope_utils.py resolves
 * it (default, linear, llama3 and yarn), so that the native forward never re-derives one.
 */
import { MoeQuantError } from '../../errors'
import type { RopeDescriptor } from '../../native/contract'
import { type ConfigValues, isObject, truthy } from './config-values'
import { type SpecContext, unsupported } from './context'

/** transformers' yarn `get_mscale`. */
export function yarnMscale(scale: number, mscale = 1): number {
  return scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1
}

/** The rope parameters after transformers' `convert_rope_params_to_dict` + `standardize_rope_params`; `defaults` are
 * the family config class's when config.json gives none (GPT-OSS's yarn), `aliases` the rope types of a legacy
 * `rope_scaling` it renames. */
export function ropeParameters(
  values: ConfigValues,
  raw: Record<string, unknown>,
  defaults?: Readonly<Record<string, unknown>>,
  aliases?: Readonly<Record<string, string>>,
): Record<string, unknown> {
  // `rope_scaling` (older configs) wins over `rope_parameters`, as in convert_rope_params_to_dict.
  const source = [raw.rope_scaling, raw.rope_parameters, defaults].find((v) => isObject(v) && Object.keys(v).length > 0)
  const params: Record<string, unknown> = isObject(source) ? { ...source } : {}
  const legacy = source === raw.rope_scaling ? [params.type, params.rope_type].find((t) => typeof t === 'string' && aliases?.[t] !== undefined) : undefined
  if (typeof legacy === 'string') {
    delete params.type
    params.rope_type = aliases?.[legacy]
  }
  for (const key of ['full_attention', 'sliding_attention', 'chunked_attention']) {
    if (isObject(params[key])) {
      throw new MoeQuantError('E_CONFIG_INVALID', `rope parameters given per attention type (${key}) are not supported by this family`)
    }
  }
  params.rope_type = params.rope_type ?? params.type ?? 'default'
  params.rope_theta = params.rope_theta ?? values.value('rope_theta')
  const partial = params.partial_rotary_factor ?? values.value('partial_rotary_factor')
  if (partial !== undefined && partial !== null) params.partial_rotary_factor = partial
  if (['llama3', 'yarn', 'longrope'].includes(params.rope_type as string)) {
    // A top-level original_max_position_embeddings (Phi-3 style) takes priority.
    const topLevel = raw.original_max_position_embeddings
    if (topLevel !== undefined) params.original_max_position_embeddings = topLevel
    else params.original_max_position_embeddings = params.original_max_position_embeddings ?? values.value('max_position_embeddings')
  }
  return params
}

/** A numeric rope parameter; `required` ones must be present. @throws MoeQuantError `E_CONFIG_INVALID` */
export function ropeNumber(params: Record<string, unknown>, key: string, required: boolean): number | undefined {
  const value = params[key]
  if (value === undefined || value === null) {
    if (required) throw new MoeQuantError('E_CONFIG_INVALID', `config.json: rope type "${params.rope_type}" needs "${key}"`)
    return undefined
  }
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    throw new MoeQuantError('E_CONFIG_INVALID', `config.json: rope parameter "${key}" must be a number, got ${JSON.stringify(value)}`)
  }
  return value
}

/** How many leading dimensions of a head are rotated, checked against the family's rule. */
function rotaryDimension(context: SpecContext, params: Record<string, unknown>, ropeHeadDim: number): number {
  const kind = params.rope_type as string
  const rotaryKey = context.forward.rotaryDimKey
  const legacy = rotaryKey !== undefined && typeof context.values.value(rotaryKey) === 'number' ? context.values.integer(rotaryKey) / ropeHeadDim : undefined
  const partial = legacy ?? ropeNumber(params, 'partial_rotary_factor', false) ?? 1
  let rotaryDim = ropeHeadDim
  if (context.forward.partialRotary) rotaryDim = Math.trunc(ropeHeadDim * partial)
  else if (partial !== 1 && kind !== 'default') {
    // The family rotates whole heads but the scaled-rope functions would shorten the frequencies.
    throw new MoeQuantError(
      'E_CONFIG_INVALID',
      `config.json: partial_rotary_factor ${partial} with rope type "${kind}" is inconsistent for ${context.entry.family}, which rotates whole heads`,
    )
  }
  if (rotaryDim <= 0 || rotaryDim % 2 !== 0) {
    throw new MoeQuantError('E_CONFIG_INVALID', `config.json: the rotary dimension ${rotaryDim} must be even and positive`)
  }
  return rotaryDim
}

/** The yarn parameters on top of `rope`, with transformers' defaults. */
function yarnRope(rope: RopeDescriptor, params: Record<string, unknown>, values: ConfigValues): RopeDescriptor {
  const original = ropeNumber(params, 'original_max_position_embeddings', true) as number
  const factor = ropeNumber(params, 'factor', false) ?? values.number('max_position_embeddings') / original
  const mscale = ropeNumber(params, 'mscale', false)
  const mscaleAllDim = ropeNumber(params, 'mscale_all_dim', false)
  let attentionFactor = ropeNumber(params, 'attention_factor', false)
  if (attentionFactor === undefined) {
    attentionFactor = truthy(mscale) && truthy(mscaleAllDim) ? yarnMscale(factor, mscale) / yarnMscale(factor, mscaleAllDim) : yarnMscale(factor)
  }
  const truncate = params.truncate
  if (truncate !== undefined && truncate !== null && typeof truncate !== 'boolean') {
    throw new MoeQuantError('E_CONFIG_INVALID', `config.json: rope parameter "truncate" must be true or false, got ${JSON.stringify(truncate)}`)
  }
  const yarn: RopeDescriptor = {
    ...rope,
    kind: 'yarn',
    factor,
    original_max_position_embeddings: original,
    // transformers: `beta_fast or 32`, `beta_slow or 1`.
    beta_fast: ropeNumber(params, 'beta_fast', false) || 32,
    beta_slow: ropeNumber(params, 'beta_slow', false) || 1,
    attention_factor: attentionFactor,
    truncate: truncate === undefined || truncate === null ? true : truncate,
  }
  if (mscale !== undefined) yarn.mscale = mscale
  if (mscaleAllDim !== undefined) yarn.mscale_all_dim = mscaleAllDim
  return yarn
}

/** LongRoPE as PhiMoE computes it: the short factors always, `short_mscale` / `long_mscale` on cos and sin. */
function longRope(rope: RopeDescriptor, params: Record<string, unknown>): RopeDescriptor {
  const factors = params.short_factor
  if (!Array.isArray(factors) || factors.length !== rope.rotary_dim / 2 || !factors.every((f) => typeof f === 'number' && f > 0)) {
    throw new MoeQuantError('E_CONFIG_INVALID', `config.json: rope parameter "short_factor" must be ${rope.rotary_dim / 2} positive numbers, got ${JSON.stringify(factors)}`)
  }
  return {
    ...rope,
    kind: 'longrope',
    short_factor: factors as number[],
    short_mscale: ropeNumber(params, 'short_mscale', true),
    long_mscale: ropeNumber(params, 'long_mscale', true),
    original_max_position_embeddings: ropeNumber(params, 'original_max_position_embeddings', true),
  }
}

/** The rope descriptor for heads whose rotated part is `ropeHeadDim` wide, every default resolved. */
export function buildRope(context: SpecContext, params: Record<string, unknown>, ropeHeadDim: number): RopeDescriptor {
  const { entry, forward, values } = context
  const kind = params.rope_type as string
  const theta = ropeNumber(params, 'rope_theta', true) as number
  // theta^(-2i/d) is infinite for 0 and NaN below: every rotated query and key would be NaN.
  if (!(theta > 0)) throw new MoeQuantError('E_CONFIG_INVALID', `config.json: "rope_theta" must be a positive number, got ${theta}`)
  const rotaryDim = rotaryDimension(context, params, ropeHeadDim)
  const interleaved = forward.ropeAdjacentPairs === true || (forward.ropeInterleaveKey ? values.value(forward.ropeInterleaveKey) === true : false)
  const rope: RopeDescriptor = { kind: 'default', theta, rotary_dim: rotaryDim, interleaved }
  switch (kind) {
    case 'default':
      return rope
    case 'linear':
      return { ...rope, kind: 'linear', factor: ropeNumber(params, 'factor', true) }
    case 'llama3':
      return {
        ...rope,
        kind: 'llama3',
        factor: ropeNumber(params, 'factor', true),
        low_freq_factor: ropeNumber(params, 'low_freq_factor', true),
        high_freq_factor: ropeNumber(params, 'high_freq_factor', true),
        original_max_position_embeddings: ropeNumber(params, 'original_max_position_embeddings', true),
      }
    case 'yarn':
      return yarnRope(rope, params, values)
    case 'dynamic': {
      const alpha = ropeNumber(params, 'alpha', false)
      if (!forward.ropeNtkAlpha || alpha === undefined) break
      // Hunyuan: a fixed alpha stretches the base; the result does not depend on the sequence length.
      return { ...rope, theta: theta * alpha ** (rotaryDim / (rotaryDim - 2)) }
    }
    case 'longrope':
      if (forward.ropeLongShortFactors) return longRope(rope, params)
      break
  }
  return unsupported(entry, entry.modelTypes[0] ?? '', `rope type "${kind}" (the forward knows default, linear, llama3 and yarn, and the family's own longrope or dynamic rope where it declares one)`)
}
