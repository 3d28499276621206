/**
 * The checkpoint's header listing (names, dtypes, shapes; no data) as the rest of moe-quant sees it: the native
 * core lists the safetensors headers, and a checkpoint already quantized in NVIDIA ModelOpt's format (SPEC §5)
 * is rewritten into its logical tensors, with what it declares about its quantization.
 *
 * Weights stored pre-quantized in a form transformers dequantizes when it loads them (GPT-OSS' MXFP4 experts,
 * FP8 with block scales `weight_scale_inv` as DeepSeek-V3/R1, Kimi-K2 and the "-FP8" releases ship) are already
 * listed dequantized by the native core, in the model's dtype (bf16), and read so: such a checkpoint looks like
 * a plain bf16 one here, with `dequantized` saying what was stored.
 *
 * A checkpoint is quantized when it has `hf_quant_config.json`, or when config.json's `quantization_config`
 * has `quant_method: "modelopt"` or `"compressed-tensors"` (in the forms moe-quant and llm-compressor write). Its
 * listing is rewritten so that detection and the descriptor see the model the weights stand for (the native
 * WeightLoader dequantizes the same tensors when they are read):
 * - `M.weight` U8 `[N, K/2]` beside an F8_E4M3 `M.weight_scale` and an `M.weight_scale_2` (NVFP4) keeps its
 *   dtype but gets the logical shape `[N, K]` and `quantized: 'nvfp4'`;
 * - `M.weight` F8_E4M3 beside `M.weight_scale` (FP8) gets `quantized: 'fp8'`;
 * - `M.weight` U8 `[N/2, K]` beside an F32 `M.weight_scale` `[N, K/128]` (INT4 AWQ, with an `M.weight_scale_2` for
 *   W4A8) gets the logical shape `[N, K]` and `quantized: 'int4_awq'` or `'w4a8_awq'`; its `M.pre_quant_scale` is a
 *   scale tensor;
 * - compressed-tensors' NVFP4 `M.weight_packed` U8 `[N, K/2]` beside an F8_E4M3 `M.weight_scale` and an
 *   `M.weight_global_scale` is listed as `M.weight` `[N, K]` with `quantized: 'nvfp4'`;
 * - scale tensors (`weight_scale`, `weight_scale_2`, `input_scale`, `k_scale`, `v_scale`; compressed-tensors'
 *   `weight_global_scale`, `input_global_scale`) leave the tensor list and are recorded in `scales`.
 */
import { readFile, stat } from 'node:fs/promises'
import * as path from 'node:path'

import { MoeQuantError } from '../errors'
import { FORMAT_NAMES, FORMATS, type QuantFormatName, SCALE_TENSORS } from '../formats'
import type { HeaderListing as NativeListing, TensorHeader as NativeTensor } from '../native/contract'
import { callNative } from '../native/task'

/** One tensor as its safetensors header describes it. */
export interface TensorHeader extends NativeTensor {
  /** Set on a weight stored quantized; `shape` is then the logical `[N, K]`, `dtype` and `bytes` as stored. */
  quantized?: QuantFormatName
}

/** The native listing with logical tensors, and what a quantized checkpoint declares. */
export interface HeaderListing extends Omit<NativeListing, 'tensors'> {
  tensors: TensorHeader[]
  /** What a quantized checkpoint declares (null when unquantized; absent on raw native listings). */
  quantization?: QuantizationInfo | null
  /** Scale tensors of quantized weights, set aside from `tensors`. */
  scales?: TensorHeader[]
}

/** The file ModelOpt's unified HF export writes beside config.json. */
export const HF_QUANT_CONFIG = 'hf_quant_config.json'

/** What a quantized checkpoint declares about itself. */
export interface QuantizationInfo {
  /** `quant_algo`: `"NVFP4"`, `"FP8"` … (`"UNKNOWN"` when the file does not say). */
  algo: string
  /** The file it was read from: `hf_quant_config.json` (preferred) or `config.json`. */
  declaredIn: string
  /** `producer` as written (`{ name: "modelopt", version }`), when present. */
  producer: { name?: string; version?: string } | null
}

/** Reads config.json and every tensor header of the checkpoint in `dir`, quantized weights as logical tensors. */
export async function readListing(dir: string): Promise<HeaderListing> {
  const text = await callNative((binding) => binding.inspectHeaders(dir))
  const listing = JSON.parse(text) as NativeListing
  const hfQuantConfig = listing.other_files.includes(HF_QUANT_CONFIG) ? await readOptional(dir, HF_QUANT_CONFIG) : null
  return logicalListing(listing, quantizationFromFiles(listing.config, hfQuantConfig, listing.dir))
}

const SCALE_SUFFIX = new RegExp(`\\.(${SCALE_TENSORS.join('|')})$`)

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function parseJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text)
  } catch (error) {
    throw new MoeQuantError('E_CONFIG_INVALID', `${file}: not valid JSON (${(error as Error).message})`, { file })
  }
}

function info(section: Record<string, unknown>, producer: unknown, declaredIn: string): QuantizationInfo {
  const algo = typeof section.quant_algo === 'string' && section.quant_algo.length > 0 ? section.quant_algo : 'UNKNOWN'
  const p = isObject(producer) ? producer : null
  return {
    algo,
    declaredIn,
    producer: p ? { name: typeof p.name === 'string' ? p.name : undefined, version: typeof p.version === 'string' ? p.version : undefined } : null,
  }
}

/**
 * What `config.json` (text) and `hf_quant_config.json` (text, when the directory has one) declare; null for an
 * unquantized checkpoint. A config.json that is not JSON counts as unquantized here (parseConfig reports it).
 */
export function quantizationFromFiles(configText: string, hfQuantConfigText: string | null, dir: string): QuantizationInfo | null {
  if (hfQuantConfigText !== null) {
    const file = path.join(dir, HF_QUANT_CONFIG)
    const parsed = parseJson(hfQuantConfigText, file)
    if (!isObject(parsed)) throw new MoeQuantError('E_CONFIG_INVALID', `${file}: expected a JSON object`, { file })
    return info(isObject(parsed.quantization) ? parsed.quantization : {}, parsed.producer, HF_QUANT_CONFIG)
  }
  let config: unknown
  try {
    config = JSON.parse(configText)
  } catch {
    return null
  }
  const section = isObject(config) ? config.quantization_config : undefined
  if (isObject(section) && section.quant_method === 'modelopt') return info(section, section.producer, 'config.json')
  // compressed-tensors in the forms moe-quant writes (other forms are refused by unreadableQuantization).
  if (isObject(section) && section.quant_method === 'compressed-tensors' && READABLE_COMPRESSED_TENSORS.has(section.format as string)) {
    return { algo: `compressed-tensors ${section.format as string}`, declaredIn: 'config.json', producer: null }
  }
  return null
}

/**
 * Rewrites a listing into logical tensors (see the module header). Weights are recognised by their scales
 * whatever the config says, as the native loader does; scale tensors are set aside when the checkpoint is
 * quantized or when their weight was recognised.
 */
export function logicalListing(listing: NativeListing, quantization: QuantizationInfo | null): HeaderListing {
  const byName = new Map(listing.tensors.map((t) => [t.name, t]))
  const recognised = new Set<string>()
  const tensors: TensorHeader[] = []
  for (const stored of listing.tensors) {
    // compressed-tensors' packed NVFP4 weight stands for `M.weight`.
    const packed = packedNvfp4(stored, byName)
    const tensor = packed ? { ...stored, name: `${packed}.weight` } : stored
    const format = packed ? 'nvfp4' : weightFormat(tensor, byName)
    if (!format) {
      tensors.push(tensor)
      continue
    }
    recognised.add(tensor.name.slice(0, -'.weight'.length))
    const [rows, cols] = tensor.shape as [number, number]
    const { weightsPerByte, packsRows } = FORMATS[format]
    const shape = packsRows ? [rows * weightsPerByte, cols] : [rows, cols * weightsPerByte]
    tensors.push({ ...tensor, shape, quantized: format })
  }
  const scales: TensorHeader[] = []
  const kept = tensors.filter((tensor) => {
    const match = SCALE_SUFFIX.exec(tensor.name)
    if (!match || !(quantization || recognised.has(tensor.name.slice(0, match.index)))) return true
    scales.push(tensor)
    return false
  })
  return { ...listing, tensors: kept, scales, quantization }
}

/** `M` of compressed-tensors' NVFP4 `M.weight_packed` (U8 beside F8_E4M3 `M.weight_scale` and `M.weight_global_scale`). */
function packedNvfp4(tensor: NativeTensor, byName: Map<string, NativeTensor>): string | undefined {
  if (!tensor.name.endsWith('.weight_packed') || tensor.dtype !== 'U8' || tensor.shape.length !== 2) return undefined
  const module = tensor.name.slice(0, -'.weight_packed'.length)
  const ok = byName.get(`${module}.weight_scale`)?.dtype === 'F8_E4M3' && byName.has(`${module}.weight_global_scale`) && !byName.has(`${module}.weight`)
  return ok ? module : undefined
}

/** The format of a stored `M.weight` recognised from the tensors beside it, as the native loader does. */
function weightFormat(tensor: NativeTensor, byName: Map<string, NativeTensor>): QuantFormatName | undefined {
  if (!tensor.name.endsWith('.weight') || tensor.shape.length !== 2) return undefined
  const module = tensor.name.slice(0, -'.weight'.length)
  const scale = byName.get(`${module}.weight_scale`)
  if (!scale) return undefined
  // Formats whose group scales have one dtype first: the others take a scale of any dtype.
  const candidates = [...FORMAT_NAMES].sort((a, b) => Number(FORMATS[a].groupScaleDtype === null) - Number(FORMATS[b].groupScaleDtype === null))
  return candidates.find((name) => {
    const { weightDtype, groupScaleDtype, secondScale } = FORMATS[name]
    if (tensor.dtype !== weightDtype) return false
    return groupScaleDtype === null || (scale.dtype === groupScaleDtype && byName.has(`${module}.weight_scale_2`) === secondScale)
  })
}

/** compressed-tensors formats the native core reads dequantized. */
const READABLE_COMPRESSED_TENSORS = new Set(['nvfp4-pack-quantized', 'float-quantized'])

/** `quant_method`s of config.json whose tensors the native core reads dequantized (MXFP4, FP8 with block scales). */
const READ_DEQUANTIZED = new Set(['mxfp4', 'fp8'])

/**
 * How a checkpoint is stored quantized in a form that cannot be read, and the first tensor that shows it; null
 * when its weights can be read (unquantized, in ModelOpt's format, or MXFP4 / FP8 with block scales, which the
 * native core dequantizes). From config.json's `quantization_config` first (AWQ, GPTQ, bitsandbytes,
 * compressed-tensors … are refused by name whatever their tensors look like), then from what the native core
 * left quantized: block scales or MXFP4 blocks it did not recognise, FP8 weights without scales under
 * `quant_method: "fp8"`.
 */
export function unreadableQuantization(listing: HeaderListing): { format: string; tensor?: string } | null {
  let config: unknown
  try {
    config = JSON.parse(listing.config)
  } catch {
    config = null
  }
  const section = isObject(config) ? config.quantization_config : undefined
  const method = isObject(section) ? section.quant_method : undefined
  if (typeof method === 'string' && method !== 'modelopt' && !READ_DEQUANTIZED.has(method)) return { format: `quant_method "${method}" in config.json` }
  const names = new Set(listing.tensors.map((t) => t.name))
  const blockScaled = listing.tensors.find((t) => t.name.endsWith('_scale_inv'))
  if (blockScaled) return { format: 'scales (weight_scale_inv) beside weights that are not FP8 E4M3', tensor: blockScaled.name }
  const mxfp4 = listing.tensors.find((t) => t.name.endsWith('_blocks') && names.has(`${t.name.slice(0, -'_blocks'.length)}_scales`))
  if (mxfp4) return { format: 'MXFP4 blocks that are not U8 (_blocks with _scales)', tensor: mxfp4.name }
  const unscaled = method === 'fp8' ? listing.tensors.find((t) => t.dtype === 'F8_E4M3' && !t.quantized) : undefined
  if (unscaled) return { format: 'FP8 weights without block scales (weight_scale_inv)', tensor: unscaled.name }
  return null
}

/**
 * Refuses a checkpoint that quantizing or calibrating cannot start from: one already quantized in ModelOpt's
 * format (when `modelOpt` is set: reading one dequantized is fine for evaluation and inspection), or one stored
 * in a quantized form that cannot be read. Called right after the listing, before any detection, so that such a
 * checkpoint is refused by its format's name rather than by whatever its packed tensors make detection say.
 * @throws MoeQuantError `E_CHECKPOINT_ALREADY_QUANTIZED` naming the format and the tensor that shows it.
 */
export function refuseQuantizedSource(listing: HeaderListing, { modelOpt }: { modelOpt: boolean }): void {
  if (modelOpt && listing.quantization) {
    throw new MoeQuantError(
      'E_CHECKPOINT_ALREADY_QUANTIZED',
      `${listing.dir} is already a quantized checkpoint (${listing.quantization.algo}, declared in ${listing.quantization.declaredIn}); quantize the original model instead`,
      { file: listing.dir },
    )
  }
  const unreadable = listing.quantization ? null : unreadableQuantization(listing)
  if (unreadable) {
    throw new MoeQuantError(
      'E_CHECKPOINT_ALREADY_QUANTIZED',
      `${listing.dir} is stored quantized (${unreadable.format}${unreadable.tensor ? `, e.g. ${unreadable.tensor}` : ''}); ` +
        'moe-quant reads MXFP4 and block-scaled FP8 checkpoints dequantized, but not this form: start from the BF16 (unquantized) release of the model',
      { file: listing.dir, ...(unreadable.tensor ? { tensor: unreadable.tensor } : {}) },
    )
  }
}

/** The most a small JSON file of the model directory may hold (as the native core's limit for config.json). */
const MAX_CONFIG_BYTES = 16 * 1024 * 1024

/**
 * Reads the small JSON file `dir/name` as text, or null when it does not exist. Anything but a regular file
 * (reading a FIFO would never finish) and files over 16 MiB are refused before reading.
 */
export async function readOptional(dir: string, name: string): Promise<string | null> {
  const file = path.join(dir, name)
  try {
    const info = await stat(file)
    if (!info.isFile()) throw new MoeQuantError('E_IO', `${file}: not a regular file`, { file })
    if (info.size > MAX_CONFIG_BYTES) {
      throw new MoeQuantError('E_CONFIG_INVALID', `${file}: the file is ${info.size} bytes, more than the ${MAX_CONFIG_BYTES} accepted for it`, { file })
    }
    return await readFile(file, 'utf8')
  } catch (error) {
    if (error instanceof MoeQuantError) throw error
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw new MoeQuantError('E_IO', `${file}: ${(error as Error).message}`, { file })
  }
}

/** The quantization a model directory declares (reads config.json and hf_quant_config.json only). */
export async function readQuantization(dir: string): Promise<QuantizationInfo | null> {
  const [config, hfQuantConfig] = await Promise.all([readOptional(dir, 'config.json'), readOptional(dir, HF_QUANT_CONFIG)])
  return quantizationFromFiles(config ?? '', hfQuantConfig, dir)
}
