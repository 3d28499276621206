/**
 * Reads the fields of config.json that moe-quant needs, through the family's config table
 * (registry/config-fields.ts: the default spellings, such as the expert count as `num_experts`,
 * `num_local_experts` or `n_routed_experts`, and each family's own, such as DBRX's `d_model` and
 * `ffn_config.moe_num_experts`); RoPE as `rope_theta` + `rope_scaling` or `rope_parameters`; multimodal
 * configs nesting the text model (`text_config`, or where the family's table says).
 */
import { MoeQuantError } from '../errors'
import { type ConfigFields, configTable } from './registry/config-fields'

/** The text model's configuration, normalised. Raw fields stay available in `raw`. */
export interface TextConfig {
  /** `model_type` of the text model (the nested one for multimodal configs). */
  modelType: string
  /** `model_type` of the outer config (equal to modelType unless nested). */
  outerModelType: string
  /** Whether the text model is nested under `text_config`. */
  nested: boolean
  hiddenSize: number
  numLayers: number
  vocabSize: number | undefined
  /** Routed experts per MoE layer, or undefined for a dense model. */
  numExperts: number | undefined
  /** Experts per token. */
  topK: number | undefined
  /** Candidate per-expert intermediate sizes, most specific first (`moe_intermediate_size`, then `intermediate_size`). */
  expertIntermediateCandidates: number[]
  /** Dense MLP intermediate size, when the config gives one. */
  intermediateSize: number | undefined
  numAttentionHeads: number | undefined
  numKeyValueHeads: number | undefined
  headDim: number | undefined
  ropeTheta: number | undefined
  ropeScaling: Record<string, unknown> | undefined
  tieWordEmbeddings: boolean
  dtype: string | undefined
  /** The text config object itself (nested one when nested). */
  raw: Record<string, unknown>
}

const MAX_EXPERTS = 1 << 16
/**
 * The largest value accepted for each size and count of config.json. Far above every released model (hidden
 * sizes reach 16 384, layer counts a few hundred, expert counts 384, vocabularies 262 144), yet low enough
 * that a corrupt or hostile config fails here, naming the field, instead of later driving a loop over a
 * billion layers or an allocation sized by a trillion experts.
 */
export const CONFIG_MAXIMA: Readonly<Record<keyof ConfigFields, number>> = {
  hiddenSize: 1 << 20,
  numLayers: 1 << 14,
  vocabSize: 1 << 24,
  numExperts: MAX_EXPERTS,
  topK: MAX_EXPERTS,
  expertIntermediate: 1 << 22,
  intermediateSize: 1 << 22,
  numAttentionHeads: 1 << 16,
  numKeyValueHeads: 1 << 16,
  headDim: 1 << 16,
}

/** A short description of a JSON value for messages (never the whole of a large or deeply nested one). */
function describeValue(value: unknown): string {
  if (typeof value === 'number') return String(value)
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)
  if (typeof value === 'boolean' || value === null) return String(value)
  return Array.isArray(value) ? 'an array' : 'an object'
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** RoPE's theta and scaling, from transformers 5's `rope_parameters` or the older `rope_theta` + `rope_scaling`. */
function ropeFields(field: (key: string) => unknown): Pick<TextConfig, 'ropeTheta' | 'ropeScaling'> {
  let ropeTheta: number | undefined
  let ropeScaling: Record<string, unknown> | undefined
  const ropeParameters = field('rope_parameters')
  if (isObject(ropeParameters)) {
    // transformers 5: one object holding theta and the scaling type (possibly per attention type).
    const params = isObject(ropeParameters.full_attention) ? ropeParameters.full_attention : ropeParameters
    if (typeof params.rope_theta === 'number') ropeTheta = params.rope_theta
    ropeScaling = params as Record<string, unknown>
  }
  if (ropeTheta === undefined && typeof field('rope_theta') === 'number') ropeTheta = field('rope_theta') as number
  if (ropeScaling === undefined && isObject(field('rope_scaling'))) ropeScaling = field('rope_scaling') as Record<string, unknown>
  return { ropeTheta, ropeScaling }
}

/** The value at `path` of `object` (`a.b` nested, `a[0]` an element, `a[]` an array's length), or undefined. */
function valueAt(object: Record<string, unknown>, path: string): unknown {
  let value: unknown = object
  for (const part of path.split('.')) {
    const match = /^([^[]+)(?:\[(\d*)\])?$/.exec(part)
    if (!match || !isObject(value)) return undefined
    value = value[match[1] as string]
    if (match[2] === undefined) continue
    if (!Array.isArray(value)) return undefined
    value = match[2] === '' ? value.length : value[Number(match[2])]
  }
  return value
}

/** The text model's config object: the first of the family's nested paths that holds an object, or the whole config. */
function textConfigOf(outer: Record<string, unknown>): { raw: Record<string, unknown>; nested: boolean } {
  const outerType = typeof outer.model_type === 'string' ? outer.model_type : undefined
  for (const path of configTable(outerType, undefined).textConfig) {
    const value = valueAt(outer, path)
    if (isObject(value)) return { raw: value, nested: true }
  }
  return { raw: outer, nested: false }
}

/** Parses config.json text into a TextConfig, with errors naming the file and the field. */
export function parseConfig(text: string, file: string): TextConfig {
  let outer: unknown
  try {
    outer = JSON.parse(text)
  } catch (error) {
    throw new MoeQuantError('E_CONFIG_INVALID', `${file}: not valid JSON (${(error as Error).message})`, { file })
  }
  if (!isObject(outer)) throw new MoeQuantError('E_CONFIG_INVALID', `${file}: expected a JSON object`, { file })
  if (outer.is_encoder_decoder === true) {
    const type = typeof outer.model_type === 'string' ? ` (${outer.model_type})` : ''
    throw new MoeQuantError('E_MODEL_UNSUPPORTED', `${file}: an encoder-decoder model${type}: moe-quant quantizes decoder-only language models`, { file })
  }
  const { raw, nested } = textConfigOf(outer)
  const field = (key: string): unknown => valueAt(raw, key) ?? valueAt(outer as Record<string, unknown>, key)

  const modelType = typeof raw.model_type === 'string' ? raw.model_type : undefined
  const outerModelType = typeof outer.model_type === 'string' ? outer.model_type : undefined
  if (!modelType && !outerModelType) {
    throw new MoeQuantError('E_CONFIG_INVALID', `${file}: missing "model_type"`, { file })
  }
  const { fields, unsupported } = configTable(outerModelType, modelType ?? outerModelType)
  if (unsupported) {
    throw new MoeQuantError('E_MODEL_UNSUPPORTED', `${file}: model_type "${modelType ?? outerModelType}" is not handled: ${unsupported}`, { file })
  }
  /** The first of a field's paths that is set, checked to be an integer in range; undefined when none is. */
  const integer = (name: keyof ConfigFields, options: { required?: boolean } = {}): number | undefined => {
    const paths = fields[name]
    const key = paths.find((path) => field(path) !== undefined && field(path) !== null)
    if (key === undefined) {
      if (options.required) {
        const spelled = paths.map((p) => `"${p}"`).join(' or ')
        throw new MoeQuantError('E_CONFIG_INVALID', `${file}: missing required field ${spelled || `for ${name}`}`, { file })
      }
      return undefined
    }
    const value = field(key)
    const max = CONFIG_MAXIMA[name]
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1 || value > max) {
      throw new MoeQuantError('E_CONFIG_INVALID', `${file}: "${key}" must be an integer from 1 to ${max}, got ${describeValue(value)}`, { file })
    }
    return value
  }

  const hiddenSize = integer('hiddenSize', { required: true }) as number
  const numLayers = integer('numLayers', { required: true }) as number
  // Every spelling present is a candidate (a list, such as ERNIE-VL's per-modality sizes, only through `[i]`).
  const candidates = fields.expertIntermediate.flatMap((path) => {
    const value = field(path)
    if (value === undefined || value === null || Array.isArray(value)) return []
    const max = CONFIG_MAXIMA.expertIntermediate
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1 || value > max) {
      throw new MoeQuantError('E_CONFIG_INVALID', `${file}: "${path}" must be an integer from 1 to ${max}, got ${describeValue(value)}`, { file })
    }
    return [value]
  })
  const dtype = field('dtype') ?? field('torch_dtype')
  return {
    modelType: (modelType ?? outerModelType) as string,
    outerModelType: (outerModelType ?? modelType) as string,
    nested,
    hiddenSize,
    numLayers,
    vocabSize: integer('vocabSize'),
    numExperts: integer('numExperts'),
    topK: integer('topK'),
    expertIntermediateCandidates: [...new Set(candidates)],
    intermediateSize: integer('intermediateSize'),
    numAttentionHeads: integer('numAttentionHeads'),
    numKeyValueHeads: integer('numKeyValueHeads'),
    headDim: integer('headDim'),
    ...ropeFields(field),
    tieWordEmbeddings: field('tie_word_embeddings') === true,
    dtype: typeof dtype === 'string' ? dtype : undefined,
    raw,
  }
}
