/**
 * Types of quantizeModel(): its options, progress events and result.
 */
import type { CalibrationOptions } from './calibrate'

/** Quantization formats (ModelOpt `quant_algo`: FP8, NVFP4). */
export type QuantFormatName = 'fp8' | 'nvfp4'

export interface QuantizeOptions {
  /** The input model directory (Hugging Face checkpoint). */
  model: string
  /** The output directory; written beside it first and renamed into place when complete. */
  output: string
  format: QuantFormatName
  calibration: CalibrationOptions
  /** `'cpu'` (default) or `'cuda'`/`'cuda:N'` with the CUDA build. */
  device?: string
  /** Largest output shard: bytes, or a string such as `'5GB'`, `'500MB'`. Default `'5GB'`. */
  maxShardSize?: number | string
  /** Extra module-name patterns (`*` wildcards) to keep unquantized, added to the defaults. */
  exclude?: string[]
  /** Replace a non-empty output directory (and an existing `coverageReport` file). Default false. */
  overwrite?: boolean
  /**
   * NVFP4 needs every input dimension to be a multiple of 16: `'error'` (default) stops with
   * `E_TENSOR_SHAPE` naming the tensor; `'keep'` keeps such linears unquantized and lists them.
   */
  indivisible?: 'error' | 'keep'
  /**
   * The expert-coverage heatmap (HTML). By default it is written into the output directory
   * (`moe-quant-coverage.html`, published with the checkpoint); a path writes it there instead once the
   * checkpoint is complete (not inside the input; an existing file only with `overwrite`); `false` for none.
   */
  coverageReport?: string | false
  onProgress?: (event: QuantizeProgress) => void
  /** Aborting stops at the next layer boundary, rejects with `E_CANCELLED` and leaves nothing behind. */
  signal?: AbortSignal
}

/**
 * Where a quantization is. `calibrate` comes when a decoder layer has run every calibration batch, and in
 * between (at most every 250 ms) with the batches of the next layer done so far; `quantize` when a layer's
 * tensors are quantized and queued for writing; `write` once, when the last files are written. The run
 * waits for the callback to return before it goes on.
 */
export interface QuantizeProgress {
  stage: 'calibrate' | 'quantize' | 'write'
  /** Decoder layers done, of `layers`. */
  layer: number
  layers: number
  /** Calibration tokens per layer. */
  tokens: number
  /** Calibration batches of the next layer done, of `batches` (`batches` once a layer is done). */
  batch: number
  batches: number
  /** Output bytes written so far. */
  bytesWritten: number
}

export interface LayerError {
  layer: number
  /** Quantized weight tensors of the layer. */
  tensors: number
  /** Σ(dequantized − original)² / Σ original² over the layer's quantized weights. */
  relativeMse: number
}

export interface QuantizeResult {
  output: string
  format: QuantFormatName
  /** Weight bytes (safetensors files) before and after. */
  sizeBytes: { before: number; after: number }
  /** Per decoder layer, the weight quantization error. */
  layers: LayerError[]
  /** Per MoE layer, experts that saw no calibration token (scaled from their own weights). */
  uncalibratedExperts: Array<{ layer: number; experts: number[] }>
  /** Linears kept unquantized because their input dimension is not a multiple of 16 (`indivisible: 'keep'`). */
  keptIndivisible: string[]
  /**
   * Files of the input directory not copied into the output. Copied are the configs, tokenizer and chat
   * template files, processor configs, remote-code modules, README and licence; anything else (a stray
   * `consolidated.safetensors`, notes, scripts) stays behind and is listed here.
   */
  skippedFiles: string[]
  quantizedTensors: number
  warnings: string[]
  coverageReportPath: string | null
  /** `moe-quant-run.json` in the output: format, options, tool version and the calibration summary. */
  runRecordPath: string
  peakRssBytes: number | null
  /**
   * Wall time per stage, in seconds. `load` (reading each layer and copying it to the device) and `forward`
   * are the parts of `calibrate`; `quantize` runs on CPU threads while the next layer calibrates.
   */
  seconds: { calibrate: number; load: number; forward: number; quantize: number; write: number; total: number }
  /** Calibration tokens per decoder layer. */
  tokens: number
}
