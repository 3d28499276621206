/**
 * Which formats a checkpoint can take, and why not where it cannot: found by building what a quantization
 * would build (the calibration forward's descriptor, the export plan), so the answer is the one
 * quantizeModel() would give, without reading any weight.
 */
import { MoeQuantError } from '../errors'
import { resolveKvCache } from '../export/kv-cache'
import { planExport } from '../export/plan'
import { inDefinitionOrder, layerQuantConfig, type Recipe, recipeFormats, singleFormat } from '../export/recipe'
import { FORMAT_NAMES, FORMATS, type QuantFormatName } from '../formats'
import type { InspectReport } from '../model/inspection'
import type { HeaderListing } from '../model/listing'
import { describeListing } from '../model/spec'

/** What one format can do for a checkpoint. */
export interface FormatSupport {
  format: QuantFormatName
  /** ModelOpt's `quant_algo`. */
  quantAlgo: string
  /**
   * `calibrated`: quantized with activation scales measured by the family's forward; `weight_only`: quantized
   * from the weights alone (the format needs no calibration); `refused`: `reason` says why.
   */
  support: 'calibrated' | 'weight_only' | 'refused'
  /** Why a refused format cannot be used (the error quantizeModel() would give), or a note. */
  reason?: string
}

/** The formats `listing` (whose report is `report`) can take, in FORMAT_NAMES order. */
export function formatSupport(listing: HeaderListing, report: InspectReport): FormatSupport[] {
  let forwardRefusal: string | undefined
  let descriptor = null
  try {
    descriptor = describeListing(listing).descriptor
  } catch (error) {
    if (!(error instanceof MoeQuantError)) throw error
    forwardRefusal = `${error.code}: ${error.message}`
  }
  return FORMAT_NAMES.map((format): FormatSupport => {
    const facts = FORMATS[format]
    const base = { format, quantAlgo: facts.quantAlgo }
    if (facts.calibrated && !descriptor) return { ...base, support: 'refused', reason: forwardRefusal }
    try {
      const kvCache = resolveKvCache(undefined, format, report.modelType).mode
      const options = { format, scope: 'all' as const, exclude: [], indivisible: 'keep' as const, kvCache, maxShardBytes: 1, overwrite: false, tool: { name: '', version: '' } }
      const planned = planExport(report, facts.calibrated ? descriptor : null, listing, options)
      const kept = planned.keptIndivisible.length
      const note = kept > 0 ? { reason: `${kept} linears stay unquantized: an input dimension is not a multiple of ${facts.groupSize}` } : {}
      return { ...base, support: facts.calibrated ? 'calibrated' : 'weight_only', ...note }
    } catch (error) {
      if (!(error instanceof MoeQuantError)) throw error
      return { ...base, support: 'refused', reason: `${error.code}: ${error.message}` }
    }
  })
}

/** What a run with a format (and a recipe) would quantize: each quantized module, in `quantized_layers` order. */
export interface PlanPreview {
  format: QuantFormatName
  /** The checkpoint's `quant_algo`: the format's, or `MIXED_PRECISION`. */
  quantAlgo: string
  layers: Array<{ module: string; format: QuantFormatName; quantAlgo: string }>
}

/**
 * The per-module plan quantizeModel() would follow with `format` and `recipe` (the same planning, no weight read).
 * @throws MoeQuantError as quantizeModel() would refuse the run (`E_OPTION_INVALID` for the recipe, `E_MODEL_UNSUPPORTED`
 *   for a calibrated format without a forward of the family …).
 */
export function previewPlan(listing: HeaderListing, report: InspectReport, format: QuantFormatName, recipe: Recipe | undefined): PlanPreview {
  const deciding = recipeFormats(format, recipe).find((f) => FORMATS[f].calibrated)
  const descriptor = deciding ? describeListing(listing).descriptor : null
  const kvCache = resolveKvCache(undefined, deciding ?? format, report.modelType).mode
  const options = { format, scope: 'all' as const, exclude: [], indivisible: 'error' as const, kvCache, maxShardBytes: 1, overwrite: false, tool: { name: '', version: '' }, ...(recipe ? { recipe } : {}) }
  const { quantizedLayers } = planExport(report, descriptor, listing, options)
  const single = singleFormat(quantizedLayers, format)
  return {
    format,
    quantAlgo: single ? FORMATS[single].quantAlgo : 'MIXED_PRECISION',
    layers: inDefinitionOrder(quantizedLayers.keys()).map((module) => {
      const moduleFormat = quantizedLayers.get(module) as QuantFormatName
      return { module, format: moduleFormat, quantAlgo: String(layerQuantConfig(moduleFormat).quant_algo) }
    }),
  }
}
