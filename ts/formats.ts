/**
 * The quantization formats moe-quant writes, and every fact about them the TypeScript side uses: their ModelOpt
 * names, bits per weight, block size, and how a ModelOpt checkpoint stores a weight of each. The one table of
 * format facts in TypeScript; the bytes themselves are the native core's.
 */
import type { FormatName } from './native/contract'

/** Quantization formats (ModelOpt `quant_algo`: FP8, NVFP4): the native core's `FormatName`. */
export type QuantFormatName = FormatName

/** What moe-quant knows of one format. */
export interface FormatFacts {
  /** ModelOpt's `quant_algo`, as hf_quant_config.json and config.json name the format. */
  quantAlgo: string
  /** Bits of one quantized element (`num_bits` of config.json's `quantization_config`). */
  bits: number
  /** Weights along the input dimension that share one scale (`group_size`); null for one scale per tensor. An
   * input dimension that is not a multiple of it cannot be quantized. */
  groupSize: number | null
  /** The safetensors dtype of a stored quantized weight. */
  weightDtype: string
  /** Quantized elements per stored byte: a weight `[N, K]` is stored `[N, K / weightsPerByte]`. */
  weightsPerByte: number
  /** The dtype of the per-group `weight_scale` beside a weight; null for a per-tensor scale of any dtype. A
   * group-scaled weight also has a per-tensor `weight_scale_2`. */
  groupScaleDtype: string | null
}

/** Per-tensor E4M3, and NVFP4's E2M1 with E4M3 scales for blocks of 16 weights and an f32 global scale. */
export const FORMATS: Readonly<Record<QuantFormatName, FormatFacts>> = {
  fp8: { quantAlgo: 'FP8', bits: 8, groupSize: null, weightDtype: 'F8_E4M3', weightsPerByte: 1, groupScaleDtype: null },
  nvfp4: { quantAlgo: 'NVFP4', bits: 4, groupSize: 16, weightDtype: 'U8', weightsPerByte: 2, groupScaleDtype: 'F8_E4M3' },
}

/** The format names, in the order messages list them. */
export const FORMAT_NAMES = Object.keys(FORMATS) as QuantFormatName[]

/** The scale tensors ModelOpt writes beside a quantized weight `M.weight`, as `M.<name>`. */
export const SCALE_TENSORS = ['weight_scale', 'weight_scale_2', 'input_scale', 'k_scale', 'v_scale'] as const
