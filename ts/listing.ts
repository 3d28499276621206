/**
 * The header listing the native core returns for a checkpoint (names, dtypes, shapes; no data).
 */
import { callNative } from './native'

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
}

/** Reads config.json and every tensor header of the checkpoint in `dir`. */
export async function readListing(dir: string): Promise<HeaderListing> {
  const text = await callNative((binding) => binding.inspectHeaders(dir))
  return JSON.parse(text) as HeaderListing
}
