/**
 * The KV cache's quantization, as ModelOpt 0.47's `hf_ptq.py` offers it (`--kv_cache_qformat`) and its unified HF
 * export writes it:
 * - `fp8_cast` (hf_ptq's default): an FP8 E4M3 KV cache with a constant amax of 448 and no calibration
 *   (`use_constant_amax`). Its quantizers register no amax, so the export writes no scale tensor, only
 *   `kv_cache_quant_algo: "FP8"`; engines then scale keys and values by 1.
 * - `fp8`: the same cache with per-tensor scales calibrated by max: for every attention whose keys and values the
 *   calibration saw, `<attention>.k_proj.k_scale` and `<attention>.v_proj.v_scale`, 0-d f32, max |k| (or |v|) over
 *   every calibration token divided by 448 in f32 (`postprocess_state_dict`, whatever the weights' format), and
 *   `kv_cache_quant_algo: "FP8"`.
 * - `none`: `kv_cache_quant_algo: null`, no scales.
 * ModelOpt's quantizers read the keys and values its attention passes to the attention function: after the key norm
 * and the rope, each key head once (MLA: the decompressed keys with the shared rotary part); MLA is quantized too and
 * exported under the same names. Linear attentions (lightning, Kimi Delta Attention) and vision towers get
 * quantizers that never see a key, so no scale; config.json's `quantization_config` gains
 * `kv_cache_scheme: {"dynamic": false, "num_bits": 8, "type": "float"}` after `quant_algo`
 * (`convert_hf_quant_config_format`).
 */
import { MoeQuantError } from '../errors'
import { FORMAT_NAMES, FORMATS, type QuantFormatName } from '../formats'
import { lookupArchitecture } from '../model/registry'
import type { KvScalePlan, ModelDescriptor } from '../native/contract'

/** How the KV cache is quantized: hf_ptq's `--kv_cache_qformat` names. */
export type KvCacheMode = 'fp8' | 'fp8_cast' | 'none'

export const KV_CACHE_MODES: readonly KvCacheMode[] = ['fp8', 'fp8_cast', 'none']

/** hf_ptq's default, and so moe-quant's. */
export const DEFAULT_KV_CACHE: KvCacheMode = 'fp8_cast'

/** `kv_cache_quant_algo` of hf_quant_config.json. */
export function kvCacheQuantAlgo(mode: KvCacheMode): 'FP8' | null {
  return mode === 'none' ? null : 'FP8'
}

/** config.json's `kv_cache_scheme` for `kv_cache_quant_algo` (absent when null). */
export function kvCacheScheme(mode: KvCacheMode): Record<string, unknown> | undefined {
  return kvCacheQuantAlgo(mode) === 'FP8' ? { dynamic: false, num_bits: 8, type: 'float' } : undefined
}

/**
 * The KV cache mode of a run: the one asked for, or hf_ptq's default, which a family whose KV cache ModelOpt does
 * not quantize turns into `none` (as hf_ptq leaves it: `note` says so).
 * @throws MoeQuantError `E_OPTION_INVALID` for `fp8` with a weight-only format (which runs no calibration);
 *   `E_MODEL_UNSUPPORTED` for `fp8` or `fp8_cast` asked of such a family.
 */
export function resolveKvCache(requested: KvCacheMode | undefined, format: QuantFormatName, modelType: string): { mode: KvCacheMode; note?: string } {
  const mode = requested ?? DEFAULT_KV_CACHE
  if (mode === 'fp8' && !FORMATS[format].calibrated) {
    const calibrated = FORMAT_NAMES.filter((f) => FORMATS[f].calibrated).map((f) => `'${f}'`).join(' or ')
    throw new MoeQuantError(
      'E_OPTION_INVALID',
      `kvCache: 'fp8' calibrates the key and value scales, but format '${format}' is weight-only and runs no calibration; ` +
        `use 'fp8_cast' (an FP8 KV cache with a constant scale, hf_ptq's default) or a calibrated format (${calibrated})`,
    )
  }
  const entry = lookupArchitecture(modelType)
  const unquantized = entry?.kvCacheUnquantized
  if (unquantized === undefined || mode === 'none') return { mode }
  const family = entry?.family ?? modelType
  if (requested === undefined) return { mode: 'none', note: `${family}: KV cache left unquantized, as ModelOpt leaves it: ${unquantized}` }
  throw new MoeQuantError('E_MODEL_UNSUPPORTED', `kvCache: '${mode}' is not available for ${family}: ${unquantized}; pass kvCache: 'none'`)
}

/**
 * The calibrated KV cache's scales: one entry per attention of the forward that attends over keys and values
 * (grouped-query attention, MLA), recorded under its module (the parent of its output projection) and written under
 * that module's output name, which `outputName` gives for a module name.
 */
export function kvScalePlans(descriptor: ModelDescriptor, outputName: (module: string) => string): KvScalePlan[] {
  const parent = (module: string): string => module.slice(0, Math.max(0, module.lastIndexOf('.')))
  const plans: KvScalePlan[] = []
  for (const layer of descriptor.layers) {
    const { attention } = layer
    const o = attention?.kind === 'gqa' ? attention.o : attention?.kind === 'mla' ? attention.o_proj : undefined
    if (o === undefined) continue
    if (layer.double) throw new MoeQuantError('E_INTERNAL', `layer ${layer.index}: KV cache scales of double sublayers are not planned`)
    plans.push({ layer: layer.index, attention: parent(o), output: parent(outputName(o)) })
  }
  return plans
}

