/**
 * The architecture registry: one declarative entry per supported family, looked up by `model_type`.
 * An entry always wins over the generic structural match; an unknown `model_type` whose tensors follow a
 * known pattern is handled generically.
 */
import { ariaText } from './aria'
import { deepseekOcr2, deepseekV2, deepseekV3, sarvamMla, unlimitedOcr } from './deepseek'
import { llama, mistral, qwen3 } from './dense'
import { dots1 } from './dots'
import { ernie45Moe } from './ernie'
import { exaoneMoe } from './exaone'
import { flint } from './flint'
import { gemma4 } from './gemma'
import { glm4Moe, glm4MoeLite, glm4vMoe, param2Moe, sarvamMoe, solarOpen } from './glm'
import { gptOss } from './gpt-oss'
import { graniteMoe, graniteMoeShared, graniteMoeSwa } from './granite'
import { graniteMoeHybrid } from './granite-hybrid'
import { hunyuanV1Moe } from './hunyuan'
import { hyV3 } from './hy'
import { jamba } from './jamba'
import { kimiLinear } from './kimi-linear'
import { lfm2Moe } from './lfm2'
import { llama4 } from './llama4'
import { longcatFlash } from './longcat'
import { miniMaxText, minimaxM2 } from './minimax'
import { mixtral } from './mixtral'
import { nemotronH } from './nemotron-h'
import { flexOlmo, olmoe } from './olmoe'
import { phimoe } from './phimoe'
import { qwen2Moe, qwen3Moe, qwen3OmniMoe, qwen3VlMoe } from './qwen-moe'
import { qwen35Moe, qwen3Next } from './qwen-next'
import { afmoe, axk1, axk2, cohere2Moe, laguna, mellum, mimoV2Flash, miniCpm5Moe, mistral4 } from './refused'
import { deepseekV32, glmMoeDsa } from './sparse-attention'
import type { ArchitectureEntry } from './types'

export type { ArchitectureEntry, ExpertLayoutKind, LayoutDecl, PlacementRule, RouterKind, SharedExpertsDecl } from './types'

export const REGISTRY: readonly ArchitectureEntry[] = [
  qwen3Moe,
  qwen2Moe,
  mixtral,
  olmoe,
  deepseekV3,
  glm4Moe,
  graniteMoe,
  gptOss,
  llama4,
  qwen3VlMoe,
  glm4vMoe,
  dots1,
  minimaxM2,
  deepseekV2,
  ernie45Moe,
  hunyuanV1Moe,
  flexOlmo,
  graniteMoeShared,
  phimoe,
  llama,
  qwen3,
  mistral,
  qwen3Next,
  qwen35Moe,
  graniteMoeHybrid,
  nemotronH,
  deepseekV32,
  glmMoeDsa,
  jamba,
  lfm2Moe,
  sarvamMla,
  solarOpen,
  glm4MoeLite,
  hyV3,
  qwen3OmniMoe,
  exaoneMoe,
  flint,
  graniteMoeSwa,
  deepseekOcr2,
  unlimitedOcr,
  ariaText,
  param2Moe,
  sarvamMoe,
  gemma4,
  axk1,
  axk2,
  mistral4,
  miniMaxText,
  kimiLinear,
  miniCpm5Moe,
  mimoV2Flash,
  afmoe,
  cohere2Moe,
  longcatFlash,
  mellum,
  laguna,
]

/** The registry entry for a `model_type`, if one exists. */
export function lookupArchitecture(modelType: string): ArchitectureEntry | undefined {
  return REGISTRY.find((entry) => entry.modelTypes.includes(modelType))
}

/**
 * Whether transformers ties the output projection to the token embedding of a text model nested in a wrapper its
 * entry declares: the wrapper's `tie_word_embeddings` (transformers 5 reads the config of the model that owns the
 * lm_head), else the wrapper class's default. Undefined for any other model.
 */
export function wrapperTiesEmbeddings(
  textModelType: string,
  outerModelType: string,
  outer: unknown,
): boolean | undefined {
  if (textModelType === outerModelType) return undefined
  const wrapper = lookupArchitecture(textModelType)?.wrappers?.[outerModelType]
  if (!wrapper) return undefined
  const record = typeof outer === 'object' && outer !== null ? (outer as Record<string, unknown>) : {}
  const given = record.tie_word_embeddings
  return typeof given === 'boolean' ? given : wrapper.tieWordEmbeddings
}
