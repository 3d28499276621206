/**
 * The header listing the native core returns for a checkpoint (names, dtypes, shapes; no data). A checkpoint
 * already quantized in ModelOpt's format is listed by its logical tensors (see quantized.ts).
 */
import { callNative } from './native'
import { HF_QUANT_CONFIG, logicalListing, type QuantizationInfo, type QuantizedWeightFormat, quantizationFromFiles, readOptional } from './quantized'

/** One tensor as its safetensors header describes it. */
export interface TensorHeader {
  name: string
  /** safetensors dtype name: `BF16`, `F32`, `F8_E4M3`, `U8` … */
  dtype: string
  shape: number[]
  /** File holding it, relative to the checkpoint directory. */
  file: string
  /** Size of its data in bytes. */
  bytes: number
  /** Set on a weight stored quantized; `shape` is then the logical `[N, K]`, `dtype` and `bytes` as stored. */
  quantized?: QuantizedWeightFormat
}

export interface HeaderListing {
  dir: string
  /** config.json, verbatim. */
  config: string
  /** safetensors files and their sizes in bytes. */
  files: Array<[string, number]>
  tensors: TensorHeader[]
  /** Other files in the directory (tokenizer, generation config …). */
  other_files: string[]
  /** What a quantized checkpoint declares (null when unquantized; absent on raw native listings). */
  quantization?: QuantizationInfo | null
  /** Scale tensors of quantized weights, set aside from `tensors`. */
  scales?: TensorHeader[]
}

/** Reads config.json and every tensor header of the checkpoint in `dir`. */
export async function readListing(dir: string): Promise<HeaderListing> {
  const text = await callNative((binding) => binding.inspectHeaders(dir))
  const listing = JSON.parse(text) as HeaderListing
  const hfQuantConfig = listing.other_files.includes(HF_QUANT_CONFIG) ? await readOptional(dir, HF_QUANT_CONFIG) : null
  return logicalListing(listing, quantizationFromFiles(listing.config, hfQuantConfig, listing.dir))
}
