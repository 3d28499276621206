/**
 * The quantization formats moe-quant writes.
 */

/** Quantization formats (ModelOpt `quant_algo`: FP8, NVFP4). */
export type QuantFormatName = 'fp8' | 'nvfp4'
