/**
 * Reads the fields of config.json that moe-quant needs, accepting every spelling transformers and the hub
 * use: the expert count as `num_experts`, `num_local_experts` or `n_routed_experts`; RoPE as `rope_theta` +
 * `rope_scaling` or `rope_parameters`; multimodal configs nesting the text model under `text_config`.
 */
import { MoeQuantError } from '../errors'

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

const EXPERT_COUNT_KEYS = ['num_experts', 'num_local_experts', 'n_routed_experts'] as const
const TOP_K_KEYS = ['num_experts_per_tok', 'num_experts_per_token', 'moe_topk', 'top_k'] as const

const MAX_EXPERTS = 1 << 16
/**
 * The largest value accepted for each size and count of config.json. Far above every released model (hidden
 * sizes reach 16 384, layer counts a few hundred, expert counts 384, vocabularies 262 144), yet low enough
 * that a corrupt or hostile config fails here, naming the field, instead of later driving a loop over a
 * billion layers or an allocation sized by a trillion experts.
 */
export const CONFIG_MAXIMA: Readonly<Record<string, number>> = {
  hidden_size: 1 << 20,
  num_hidden_layers: 1 << 14,
  vocab_size: 1 << 24,
  moe_intermediate_size: 1 << 22,
  intermediate_size: 1 << 22,
  num_attention_heads: 1 << 16,
  num_key_value_heads: 1 << 16,
  head_dim: 1 << 16,
  ...Object.fromEntries([...EXPERT_COUNT_KEYS, ...TOP_K_KEYS].map((key) => [key, MAX_EXPERTS])),
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

/** Parses config.json text into a TextConfig, with errors naming the file and the field. */
export function parseConfig(text: string, file: string): TextConfig {
  let outer: unknown
  try {
    outer = JSON.parse(text)
  } catch (error) {
    throw new MoeQuantError('E_CONFIG_INVALID', `${file}: not valid JSON (${(error as Error).message})`, { file })
  }
  if (!isObject(outer)) throw new MoeQuantError('E_CONFIG_INVALID', `${file}: expected a JSON object`, { file })
  const nested = isObject(outer.text_config)
  const raw = nested ? (outer.text_config as Record<string, unknown>) : outer
  const field = (key: string): unknown => raw[key] ?? outer[key]

  const integer = (key: string, options: { required?: boolean; min?: number } = {}): number | undefined => {
    const value = field(key)
    if (value === undefined || value === null) {
      if (options.required) {
        throw new MoeQuantError('E_CONFIG_INVALID', `${file}: missing required field "${key}"`, { file })
      }
      return undefined
    }
    const min = options.min ?? 1
    const max = CONFIG_MAXIMA[key] ?? Number.MAX_SAFE_INTEGER
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
      throw new MoeQuantError(
        'E_CONFIG_INVALID',
        `${file}: "${key}" must be an integer from ${min} to ${max}, got ${describeValue(value)}`,
        { file },
      )
    }
    return value
  }
  const firstInteger = (keys: readonly string[]): number | undefined => {
    for (const key of keys) {
      const value = integer(key)
      if (value !== undefined) return value
    }
    return undefined
  }

  const modelType = typeof raw.model_type === 'string' ? raw.model_type : undefined
  const outerModelType = typeof outer.model_type === 'string' ? outer.model_type : undefined
  if (!modelType && !outerModelType) {
    throw new MoeQuantError('E_CONFIG_INVALID', `${file}: missing "model_type"`, { file })
  }
  const hiddenSize = integer('hidden_size', { required: true }) as number
  const numLayers = integer('num_hidden_layers', { required: true }) as number

  const candidates = ['moe_intermediate_size', 'intermediate_size']
    .map((key) => integer(key))
    .filter((v): v is number => v !== undefined)
  const dtype = field('dtype') ?? field('torch_dtype')
  return {
    modelType: (modelType ?? outerModelType) as string,
    outerModelType: (outerModelType ?? modelType) as string,
    nested,
    hiddenSize,
    numLayers,
    vocabSize: integer('vocab_size'),
    numExperts: firstInteger(EXPERT_COUNT_KEYS),
    topK: firstInteger(TOP_K_KEYS),
    expertIntermediateCandidates: [...new Set(candidates)],
    intermediateSize: integer('intermediate_size'),
    numAttentionHeads: integer('num_attention_heads'),
    numKeyValueHeads: integer('num_key_value_heads'),
    headDim: integer('head_dim'),
    ...ropeFields(field),
    tieWordEmbeddings: field('tie_word_embeddings') === true,
    dtype: typeof dtype === 'string' ? dtype : undefined,
    raw,
  }
}
