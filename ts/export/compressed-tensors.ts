/**
 * The compressed-tensors form of the output (`exportFormat: 'compressed-tensors'`): vLLM's native checkpoint format,
 * which llm-compressor writes. The weights are those of the ModelOpt export re-encoded by the native core
 * (crates/core/src/export/compressed.rs: NVFP4's `weight_packed`, `weight_global_scale`, `input_global_scale`; FP8
 * with bf16 scales); this file writes config.json's `quantization_config` as llm-compressor 0.14 (compressed-tensors
 * 0.19) writes it, and refuses what has no compressed-tensors form here.
 *
 * Each format is written as the llm-compressor preset of the same arithmetic:
 * | format | preset | weights | activations |
 * |---|---|---|---|
 * | `nvfp4` | NVFP4 | E2M1, E4M3 scale per 16, f32 global scale | per 16, dynamic, static global scale |
 * | `w4a16_nvfp4` | NVFP4A16 | as NVFP4 | 16 bits |
 * | `fp8` | FP8 | E4M3, one bf16 scale | per tensor, static (`input_scale`) |
 * | `fp8_pc_pt` | FP8_DYNAMIC | E4M3, one bf16 scale per row | per token, dynamic |
 * | `fp8_pb_wo` | FP8_BLOCK | E4M3, one bf16 scale per 128×128 block | per group of 128, dynamic |
 *
 * `fp8_pb_wo` is weight-only in ModelOpt's form; compressed-tensors has no weight-only FP8 block scheme, so its
 * checkpoint is FP8_BLOCK, whose activations the engine quantizes at run time (as DeepSeek-style FP8 checkpoints).
 *
 * The KV cache (`kvCache: 'fp8'`): `kv_cache_scheme` as llm-compressor writes it and `<attention>.k_scale` /
 * `<attention>.v_scale` BF16 `[1]`, max |k| (|v|) over the calibration tokens / 448 (crates/core/src/export/kv_cache.rs).
 * llm-compressor's own minmax observer keeps a running average (weight 0.01) of each calibration sample's min and max
 * instead, so that its scales follow the first samples and clip keys the later ones exceed; the maximum is what
 * ModelOpt takes, and what moe-quant writes.
 */
import { MoeQuantError } from '../errors'
import type { QuantFormatName } from '../formats'
import type { KvCacheMode } from './kv-cache'
import { inDefinitionOrder } from './recipe'
import { dumpPyJson, parsePyJson, sortKeysDeep, toPyJson, type PyObject } from './python-json'

/** How the output stores its quantized weights and metadata. */
export type ExportFormat = 'modelopt' | 'compressed-tensors'

export const EXPORT_FORMATS: readonly ExportFormat[] = ['modelopt', 'compressed-tensors']

/** The compressed-tensors version whose format (and `quantization_config` fields) the output follows. */
export const COMPRESSED_TENSORS_VERSION = '0.19.0'

type Args = Record<string, unknown>

/** A `QuantizationArgs` with every field compressed-tensors 0.19 serializes, defaults filled in. */
function quantizationArgs(fields: Args): Args {
  return {
    actorder: null,
    block_structure: null,
    dynamic: false,
    group_size: null,
    num_bits: 8,
    observer: 'memoryless_minmax',
    observer_kwargs: {},
    scale_dtype: null,
    strategy: 'tensor',
    symmetric: true,
    type: 'float',
    zp_dtype: null,
    ...fields,
  }
}

interface Scheme {
  /** The llm-compressor preset, for messages and docs. */
  preset: string
  format: 'float-quantized' | 'nvfp4-pack-quantized'
  weights: Args
  input_activations: Args | null
}

const NVFP4_WEIGHTS = quantizationArgs({ num_bits: 4, group_size: 16, strategy: 'tensor_group', scale_dtype: 'torch.float8_e4m3fn' })

const SCHEMES: Partial<Record<QuantFormatName, Scheme>> = {
  nvfp4: {
    preset: 'NVFP4',
    format: 'nvfp4-pack-quantized',
    weights: NVFP4_WEIGHTS,
    input_activations: quantizationArgs({ num_bits: 4, group_size: 16, strategy: 'tensor_group', dynamic: 'local', observer: 'static_minmax', scale_dtype: 'torch.float8_e4m3fn' }),
  },
  w4a16_nvfp4: { preset: 'NVFP4A16', format: 'nvfp4-pack-quantized', weights: NVFP4_WEIGHTS, input_activations: null },
  fp8: {
    preset: 'FP8',
    format: 'float-quantized',
    weights: quantizationArgs({}),
    input_activations: quantizationArgs({ observer: 'static_minmax' }),
  },
  fp8_pc_pt: {
    preset: 'FP8_DYNAMIC',
    format: 'float-quantized',
    weights: quantizationArgs({ strategy: 'channel' }),
    input_activations: quantizationArgs({ dynamic: true, strategy: 'token', observer: null }),
  },
  fp8_pb_wo: {
    preset: 'FP8_BLOCK',
    format: 'float-quantized',
    weights: quantizationArgs({ strategy: 'block', block_structure: [128, 128] }),
    input_activations: quantizationArgs({ dynamic: true, strategy: 'group', group_size: 128, observer: null }),
  },
}

/** The formats written in compressed-tensors' form. */
export const COMPRESSED_TENSORS_FORMATS = Object.keys(SCHEMES) as QuantFormatName[]

/**
 * What a compressed-tensors export cannot take, refused before any work.
 * @throws MoeQuantError `E_OPTION_INVALID` for a format without a compressed-tensors scheme here, a recipe (mixed
 *   precision), or a constant-scale KV cache.
 */
export function checkCompressedTensorsOptions(options: { format: QuantFormatName; recipe?: unknown; kvCache?: KvCacheMode }): void {
  const refuse = (message: string): never => {
    throw new MoeQuantError('E_OPTION_INVALID', `exportFormat 'compressed-tensors': ${message}`)
  }
  if (!SCHEMES[options.format]) {
    refuse(`format '${options.format}' has no compressed-tensors scheme here; use ${COMPRESSED_TENSORS_FORMATS.map((f) => `'${f}'`).join(', ')} or exportFormat 'modelopt'`)
  }
  if (options.recipe !== undefined) refuse('a recipe (mixed precision) is written in ModelOpt\'s form only; leave recipe out or use exportFormat \'modelopt\'')
  if (options.kvCache === 'fp8_cast') {
    refuse("kvCache 'fp8_cast' (a constant scale) has no compressed-tensors form: use 'fp8' (calibrated key and value scales) or 'none' (the default here)")
  }
}

/** The llm-compressor preset a format is written as. */
export function compressedTensorsPreset(format: QuantFormatName): string {
  return scheme(format).preset
}

function scheme(format: QuantFormatName): Scheme {
  const found = SCHEMES[format]
  if (!found) throw new MoeQuantError('E_INTERNAL', `format '${format}' has no compressed-tensors scheme`)
  return found
}

/**
 * `ignore` as llm-compressor writes it: the unquantized linears (routers included) by name, in the order of the model's
 * modules, the decoder layers' before the others (lm_head).
 */
export function compressedTensorsIgnore(modules: Iterable<string>): string[] {
  const unique = [...new Set(modules)]
  const inLayer = (m: string): boolean => /(^|\.)(layers|blocks)\.\d+\./.test(m)
  return [...inDefinitionOrder(unique.filter(inLayer)), ...unique.filter((m) => !inLayer(m)).sort()]
}

/**
 * config.json's `quantization_config` as llm-compressor writes it for one scheme applied to every `Linear` but those
 * in `ignore` (real module names).
 */
export function compressedTensorsConfig(format: QuantFormatName, ignore: readonly string[], kvCache: KvCacheMode = 'none'): Record<string, unknown> {
  const { format: ctFormat, weights, input_activations } = scheme(format)
  return {
    config_groups: { group_0: { format: ctFormat, input_activations, output_activations: null, targets: ['Linear'], weights } },
    format: ctFormat,
    global_compression_ratio: null,
    ignore: [...ignore],
    // An FP8 KV cache with per-tensor static scales, as llm-compressor's kv_cache_scheme (its observer not recorded).
    kv_cache_scheme: kvCache === 'fp8' ? quantizationArgs({ observer: null }) : null,
    quant_method: 'compressed-tensors',
    quantization_status: 'compressed',
    sparsity_config: {},
    transform_config: {},
    version: COMPRESSED_TENSORS_VERSION,
  }
}

/**
 * The output config.json in compressed-tensors' form: the input's with `quantization_config` set, every object's keys
 * sorted and a 2-space indent, as compressed-tensors' `update_config` writes it after transformers' save.
 * @throws MoeQuantError `E_CONFIG_INVALID` when the input is not a JSON object.
 */
export function compressedTensorsConfigJson(inputConfigText: string, quantizationConfig: Record<string, unknown>, source = 'config.json'): string {
  const parsed = parsePyJson(inputConfigText, source)
  if (!(parsed instanceof Map)) throw new MoeQuantError('E_CONFIG_INVALID', `${source}: expected a JSON object`, { file: source })
  const config = parsed as PyObject
  config.set('quantization_config', toPyJson(quantizationConfig))
  return dumpPyJson(sortKeysDeep(config), 2)
}
