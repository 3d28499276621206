/**
 * The AWQ formats' part of the export plan (`int4_awq`, `w4a8_awq`, `nvfp4_awq`): which norms absorb a group's smoothing,
 * which linears absorb NVFP4_AWQ's, and what these formats are not written for yet.
 *
 * ModelOpt's export folds the mean `pre_quant_scale` of linears that read one norm's output straight into that
 * norm's weight: q/k/v after the input norm and a dense MLP's gate/up after the post-attention norm of a pre-norm
 * layer. Every other AWQ linear (o_proj, down_proj, routed experts; shared experts, which read a reshaped copy of
 * the norm's output) carries its `pre_quant_scale`, except NVFP4_AWQ's folds: in Llama's and Qwen3's attention and
 * MLP classes (`PQS_FUSE_MODULE_MAPPING`), o_proj's smoothing goes into v_proj's output rows (without grouped heads)
 * and down_proj's into up_proj's, routed experts' too.
 */
import { MoeQuantError } from '../errors'
import { FORMATS, type QuantFormatName } from '../formats'
import type { AwqFoldPlan, AwqNormPlan, ExportPlan, KeptTensor, ModelDescriptor } from '../native/contract'

/** What is refused with an AWQ format: `E_MODEL_UNSUPPORTED` naming the layer and the way out. */
function refuse(format: QuantFormatName, what: string): never {
  throw new MoeQuantError(
    'E_MODEL_UNSUPPORTED',
    `format '${format}': ${what}; AWQ is written for pre-norm layers of grouped-query attention (separate q/k/v) and dense or MoE MLPs. Use 'nvfp4', 'w4a16_nvfp4' or 'fp8' for this model`,
  )
}

/**
 * Refuses, before any planning, an AWQ run (a run whose `formats`, its own and its recipe's, include an AWQ one)
 * on a model or with options the AWQ export is not written for.
 * @throws MoeQuantError `E_MODEL_UNSUPPORTED` naming the layer; `E_OPTION_INVALID` for a recipe.
 */
export function refuseForAwq(formats: QuantFormatName[], descriptor: ModelDescriptor | null, recipe: boolean): void {
  const format = formats.find((f) => FORMATS[f].awq)
  if (format === undefined) return
  if (recipe) throw new MoeQuantError('E_OPTION_INVALID', `recipe: format '${format}' is not taken with a recipe (a MIXED_PRECISION checkpoint with AWQ is not written yet)`)
  if (!descriptor) throw new MoeQuantError('E_INTERNAL', `format '${format}' needs the calibration forward's descriptor`)
  for (const layer of descriptor.layers) {
    const at = `decoder layer ${layer.index}`
    if (layer.double) refuse(format, `${at} has double sublayers`)
    if (layer.norm_placement !== 'pre') refuse(format, `${at} places its norms '${layer.norm_placement}'`)
    const attention = layer.attention
    if (attention && attention.kind !== 'gqa') refuse(format, `${at} mixes tokens with '${attention.kind}'`)
    if (attention?.kind === 'gqa' && attention.qkv) refuse(format, `${at} projects q, k and v with one fused module (${attention.qkv})`)
  }
}

/**
 * The norms that absorb an AWQ group's smoothing, and `keep` without them (they are written by the layer that
 * smooths them), for a run whose `formats` include an AWQ one (checked by `refuseForAwq`); nothing otherwise.
 */
export function planAwqNorms(
  formats: QuantFormatName[],
  descriptor: ModelDescriptor | null,
  linears: ExportPlan['linears'],
  keep: KeptTensor[],
): { norms: AwqNormPlan[]; keep: KeptTensor[] } {
  if (!descriptor || !formats.some((f) => FORMATS[f].awq)) return { norms: [], keep }
  const planned = new Set(linears.map((l) => l.module))
  const norms: AwqNormPlan[] = []
  const fold = (layer: number, norm: string | undefined, modules: string[]): void => {
    if (norm === undefined || !modules.every((m) => planned.has(m))) return
    const kept = keep.find((k) => k.input === norm && !k.join)
    if (!kept) return
    norms.push({ layer, input: norm, output: kept.output, modules, offset: descriptor.rms_norm_offset !== 0 })
  }
  for (const layer of descriptor.layers) {
    const attention = layer.attention
    if (attention?.kind === 'gqa') {
      fold(layer.index, layer.input_norm, attention.values_from_keys ? [attention.q, attention.k] : [attention.q, attention.k, attention.v])
    }
    if (layer.mlp?.kind === 'dense' && layer.mlp.gate && layer.mlp.up) fold(layer.index, layer.post_attention_norm, [layer.mlp.gate, layer.mlp.up])
  }
  const folded = new Set(norms.map((n) => n.input))
  return { norms, keep: keep.filter((k) => !folded.has(k.input)) }
}

/** The model types whose attention and MLP classes ModelOpt 0.47 folds NVFP4_AWQ's smoothing through (Llama, Qwen3,
 * Qwen3-MoE, whose experts held one module each are Qwen3-MoE MLPs too). */
const FOLDING_MODEL_TYPES = new Set(['llama', 'qwen3', 'qwen3_moe'])

/**
 * NVFP4_AWQ's folds of a `o_proj` into its `v_proj` (same number of key/value and query heads) and of a `down_proj`
 * into its `up_proj`: for dense MLPs by module, for routed experts by their output patterns.
 */
export function planAwqFolds(format: QuantFormatName, modelType: string, descriptor: ModelDescriptor | null, linears: ExportPlan['linears'], experts: ExportPlan['experts']): AwqFoldPlan[] {
  if (format !== 'nvfp4_awq' || !descriptor || !FOLDING_MODEL_TYPES.has(modelType)) return []
  const planned = new Set(linears.map((l) => l.module))
  const folds: AwqFoldPlan[] = []
  const fold = (layer: number, from: string | undefined, into: string | undefined): void => {
    if (from !== undefined && into !== undefined && planned.has(from) && planned.has(into)) folds.push({ layer, from, into })
  }
  for (const layer of descriptor.layers) {
    const attention = layer.attention
    if (attention?.kind === 'gqa' && !attention.qkv && attention.num_kv_heads === attention.num_heads) fold(layer.index, attention.o, attention.v)
    if (layer.mlp?.kind === 'dense') fold(layer.index, layer.mlp.down, layer.mlp.up)
  }
  for (const x of experts) {
    if (x.output.kind === 'per_expert' && x.output.gate) folds.push({ layer: x.layer, from: x.output.down, into: x.output.up })
  }
  return folds
}
