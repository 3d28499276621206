/**
 * inspectModel() and isQuantizedCheckpoint(): what a checkpoint is, read from its headers and config files only.
 */
import type { InspectReport as ModelReport } from '../model/inspection'
import { reportFromListing } from '../model/inspection'
import { readListing, readQuantization, refuseQuantizedSource } from '../model/listing'
import { MoeQuantError } from '../errors'
import type { Recipe } from '../export/recipe'
import { FORMAT_NAMES, type QuantFormatName } from '../formats'
import { type FormatSupport, formatSupport, type PlanPreview, previewPlan } from './capabilities'
import { checkDirectory } from './options'
import { resolveRecipe } from './quantize'

export type { FormatSupport, PlanPreview }

/** What inspectModel() reports: the checkpoint's structure, and the formats it can take. */
export interface InspectReport extends ModelReport {
  /** Every format, with whether this model takes it calibrated, weight-only, or not (and why not). */
  formats: FormatSupport[]
  /** With `format` (and `recipe`) given: the modules a quantization would quantize, each with its format. */
  plan?: PlanPreview
}

/** What inspectModel() may preview: the plan of a run with this format and recipe (quantizeModel's options). */
export interface InspectOptions {
  format?: QuantFormatName
  recipe?: Recipe | string
}

/**
 * Reads a checkpoint's headers and reports its architecture, expert layout per MoE layer, parameter counts
 * and which tensors a quantization would quantize or keep, and which formats it can take (calibrated,
 * weight-only, or refused with the reason). Reads no tensor data. Weights stored as MXFP4 (GPT-OSS) or as FP8
 * with block scales (DeepSeek-V3 and the "-FP8" releases) are described dequantized, as transformers loads
 * them, and `notes` says so.
 *
 * @param dir A Hugging Face model directory (config.json + model.safetensors or shards with an index).
 * @param options `format` (and `recipe`, as quantizeModel() takes them): also report `plan`, the modules a run with
 *   them would quantize and each one's format (`MIXED_PRECISION` when they differ); a run that would be refused
 *   throws as quantizeModel() would.
 * @throws MoeQuantError with codes such as `E_CONFIG_MISSING`, `E_CHECKPOINT_TRUNCATED`,
 *   `E_LAYOUT_ODD_SPLIT`, `E_LAYOUT_EXPERT_COUNT`, `E_LAYOUT_ORIENTATION`; `E_CHECKPOINT_ALREADY_QUANTIZED` for a
 *   checkpoint stored in a quantized form that cannot be read (AWQ, GPTQ, bitsandbytes …), named.
 * @example
 *   const report = await inspectModel('./Qwen3-30B-A3B')
 *   console.log(report.moeLayers[0].layout, report.parameters.activePerToken)
 */
export async function inspectModel(dir: string, options: InspectOptions = {}): Promise<InspectReport> {
  const { format, recipe } = options
  if (format !== undefined && !(FORMAT_NAMES as readonly string[]).includes(format)) {
    throw new MoeQuantError('E_OPTION_INVALID', `format: expected one of ${FORMAT_NAMES.map((f) => `'${f}'`).join(', ')}, got ${JSON.stringify(format)}`)
  }
  if (recipe !== undefined && format === undefined) throw new MoeQuantError('E_OPTION_INVALID', 'recipe: previewing a recipe needs the run\'s format too')
  const listing = await readListing(checkDirectory(dir, 'inspectModel(dir)'))
  // A ModelOpt export is described dequantized; a form that cannot be read is refused before detection.
  refuseQuantizedSource(listing, { modelOpt: false })
  const report = reportFromListing(listing)
  // A checkpoint already quantized takes no format; its report still describes it.
  const inspected: InspectReport = { ...report, formats: report.quantization ? [] : formatSupport(listing, report) }
  if (format !== undefined && !report.quantization) inspected.plan = previewPlan(listing, report, format, resolveRecipe(recipe))
  return inspected
}

/**
 * Whether the model in `dir` is already quantized in ModelOpt's format: its `quant_algo` (`"NVFP4"`, `"FP8"`,
 * …; `"UNKNOWN"` when the files do not name one), or null for an unquantized checkpoint. Reads config.json and
 * hf_quant_config.json only, no tensor header.
 *
 * @example
 *   if (await isQuantizedCheckpoint('./Qwen3-30B-A3B-NVFP4')) throw new Error('already quantized')
 * @throws MoeQuantError `E_OPTION_INVALID` for a `dir` that is not a string, `E_CONFIG_INVALID` for an
 *   hf_quant_config.json that is not a JSON object, `E_IO` when a file exists but cannot be read.
 */
export async function isQuantizedCheckpoint(dir: string): Promise<string | null> {
  return (await readQuantization(checkDirectory(dir, 'isQuantizedCheckpoint(dir)')))?.algo ?? null
}
