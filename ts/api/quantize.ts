/**
 * quantizeModel(): calibrate a Mixture-of-Experts checkpoint, quantize it to FP8 or NVFP4 and write a
 * checkpoint that vLLM, SGLang and TensorRT-LLM load as `quant_method: "modelopt"`; or, for the weight-only
 * formats (W4A16_NVFP4, FP8_PER_CHANNEL_PER_TOKEN), quantize its weights without calibration, which needs no
 * forward of the model's family.
 */
import { readFileSync } from 'node:fs'
import * as path from 'node:path'

import { MoeQuantError } from '../errors'
import { KV_CACHE_MODES, type KvCacheMode, resolveKvCache } from '../export/kv-cache'
import { type PlannedExport, planExport, type QuantizeScope } from '../export/plan'
import { checkCompressedTensorsOptions, EXPORT_FORMATS, type ExportFormat } from '../export/compressed-tensors'
import { parseRecipe, type Recipe, recipeFormats } from '../export/recipe'
import { FORMAT_NAMES, FORMATS, type QuantFormatName } from '../formats'
import type { InspectReport } from '../model/inspection'
import { reportFromListing } from '../model/inspection'
import { type HeaderListing, readListing, refuseQuantizedSource } from '../model/listing'
import { describeListing } from '../model/spec'
import type { CalibrationRequest, CalibrationSummary, ModelDescriptor, QuantizeProgress as NativeQuantizeProgress, QuantizeReport } from '../native/contract'
import { runTask } from '../native/task'
import {
  checkReportPath,
  type CoverageLayer,
  coverageInput,
  coverageLayers,
  renderCoverageReport,
  uncalibratedExperts,
  uncalibratedSummary,
  writeCoverageReport,
} from '../report/coverage'
import { packageVersion } from '../version'
import { type CalibrationOptions, calibrationDevices, calibrationRequest, calibrationWarnings } from './calibrate'
import { checkOptions, is, parseSize, rules, type Rules } from './options'

export type { KvCacheMode, QuantFormatName, Recipe }

export interface QuantizeOptions {
  /** The input model directory (Hugging Face checkpoint). */
  model: string
  /** The output directory; written beside it first and renamed into place when complete. */
  output: string
  /**
   * `'fp8'` and `'nvfp4'` calibrate static activation scales (they need `calibration` and a forward of the
   * model's family); `'w4a16_nvfp4'` (NVFP4 weights, 16-bit activations), `'fp8_pc_pt'` (FP8 weights with
   * one scale per output channel, activations scaled per token by the engine), `'fp8_pb_wo'` (FP8 weights
   * with one scale per 128×128 block, 16-bit activations), `'mxfp8'` and `'mxfp4'` (FP8 or FP4 weights with a
   * power-of-two scale per 32, activations MX-scaled by the engine) are weight-only: no calibration, any detected
   * MoE model.
   */
  format: QuantFormatName
  /** The calibration data of a calibrated format; not given for a weight-only one. */
  calibration?: CalibrationOptions
  /** `'cpu'` (default) or `'cuda'`/`'cuda:N'` with the CUDA build; it runs the calibration forward. */
  device?: string
  /**
   * Several GPUs that split the calibration forward (data parallel), instead of `device`: `['cuda:0', 'cuda:1', …]`.
   * The calibration batches are dealt out in order, each GPU runs its share through its own copy of each layer (read
   * from disk once), and what they record is merged; the output is the same, byte for byte, as with one device.
   * The first GPU also quantizes the experts. A list of `'cpu'` entries runs the same split on the CPU.
   */
  devices?: string[]
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
   * Which linears are quantized, as ModelOpt's presets choose them: `'all'` (default; every linear but
   * routers, norms, embeddings and lm_head), `'mlp'` (the feed-forward part: routed and shared experts and
   * dense MLPs; attention stays in 16 bits) or `'experts'` (routed experts only).
   */
  scope?: QuantizeScope
  /**
   * Mixed precision (ModelOpt's `MIXED_PRECISION`): modules in other formats than `format`, given as an object or as
   * the path of a JSON file, `{ "rules": [{ "modules": pattern, "format": format or null }, …] }`. A module takes the
   * format of the last rule whose pattern (`*` wildcards, whole names) matches its name, else `format` (within
   * `scope`); `null` keeps it in 16 bits, as `exclude` does whatever the rules say. Linears are named as in the output (`model.layers.0.self_attn.q_proj`),
   * a layer's routed experts by their module (`model.layers.0.mlp.experts`). Modules that read one input (q/k/v,
   * gate/up) take one format; a rule that matches nothing is refused.
   */
  recipe?: Recipe | string
  /**
   * How the KV cache is quantized, as ModelOpt's hf_ptq (`--kv_cache_qformat`) names it: `'fp8_cast'` (default, as
   * hf_ptq's) declares an FP8 KV cache with a constant scale (`kv_cache_quant_algo: "FP8"`, no scale tensors: engines
   * scale keys and values by 1); `'fp8'` also writes each attention's `k_proj.k_scale` and `v_proj.v_scale`, the
   * calibrated key and value maxima over 448 (calibrated formats only); `'none'` leaves the KV cache in 16 bits
   * (`kv_cache_quant_algo: null`). A family whose KV cache ModelOpt does not quantize (LongCat-Flash) gets `'none'`
   * by default and refuses the others.
   */
  kvCache?: KvCacheMode
  /**
   * How the checkpoint is written: `'modelopt'` (default; ModelOpt's unified HF checkpoint with hf_quant_config.json,
   * byte for byte as ModelOpt exports it) or `'compressed-tensors'` (vLLM's native format, as llm-compressor writes
   * it: formats `nvfp4`, `w4a16_nvfp4`, `fp8`, `fp8_pc_pt`, `fp8_pb_wo` as its NVFP4, NVFP4A16, FP8, FP8_DYNAMIC and
   * FP8_BLOCK presets, FP8 with bf16 scales; no recipe; the KV cache in 16 bits unless `kvCache: 'fp8'`).
   */
  exportFormat?: ExportFormat
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
  /** Σ(dequantized − original)² / Σ original² over the layer's quantized weights; `Infinity` where a quantized value
   * reads back beyond the f32 range (weights near the bf16 maximum, whose block scale rounds them up). */
  relativeMse: number
}

export interface QuantizeResult {
  output: string
  format: QuantFormatName
  /** The KV cache's quantization as written (`kvCache`, or its default for the model). */
  kvCache: KvCacheMode
  /** The form the checkpoint was written in. */
  exportFormat: ExportFormat
  /** Weight bytes (safetensors files) before and after. */
  sizeBytes: { before: number; after: number }
  /** Per decoder layer, the weight quantization error. */
  layers: LayerError[]
  /** Per MoE layer, experts that saw no calibration token (scaled from their own weights); empty when weight-only. */
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
  /**
   * Of `quantizedTensors`, the weights quantized on the GPU while the calibration forward held them (routed
   * experts written one by one, stored in the dtype the GPU computes in); the others were quantized on the CPU.
   * The bytes are the same either way. 0 on the CPU.
   */
  quantizedOnDevice: number
  warnings: string[]
  coverageReportPath: string | null
  /** `moe-quant-run.json` in the output: format, options, tool version and the calibration summary. */
  runRecordPath: string
  peakRssBytes: number | null
  /**
   * Wall time per stage, in seconds. `load` (reading each layer and copying it to the device), `forward` and
   * `quantizeOnDevice` (quantizing a layer's experts on the GPU while they are resident) are the parts of
   * `calibrate`; `quantize` (the rest, and the input scales) runs on CPU threads while the next layer calibrates.
   */
  seconds: { calibrate: number; load: number; forward: number; quantizeOnDevice: number; quantize: number; write: number; total: number }
  /** Calibration tokens per decoder layer (0 when weight-only). */
  tokens: number
}

const QUANTIZE_OPTIONS: Rules<QuantizeOptions> = {
  model: rules.directory,
  output: rules.directory,
  format: { test: is.oneOf(FORMAT_NAMES), expected: `one of ${FORMAT_NAMES.map((f) => `'${f}'`).join(', ')}`, required: true },
  calibration: null,
  device: rules.device,
  devices: rules.devices,
  maxShardSize: { test: is.size, expected: "a positive byte count or a size such as '5GB'" },
  exclude: { test: is.arrayOf(is.nonEmptyString), expected: 'an array of module-name patterns' },
  overwrite: null,
  indivisible: { test: is.oneOf(['error', 'keep']), expected: "'error' or 'keep'" },
  scope: { test: is.oneOf(['all', 'mlp', 'experts']), expected: "'all', 'mlp' or 'experts'" },
  recipe: { test: (value) => is.nonEmptyString(value) || (typeof value === 'object' && value !== null), expected: 'a recipe object or the path of a recipe file' },
  exportFormat: { test: is.oneOf(EXPORT_FORMATS), expected: EXPORT_FORMATS.map((f) => `'${f}'`).join(' or ') },
  kvCache: { test: is.oneOf(KV_CACHE_MODES), expected: KV_CACHE_MODES.map((m) => `'${m}'`).join(', ').replace(/, ([^,]*)$/, ' or $1') },
  coverageReport: { test: (value) => value === false || is.nonEmptyString(value), expected: 'a file path or false' },
  onProgress: rules.callback,
  signal: null,
}

/** The expert-coverage report written into the output directory by default. */
export const COVERAGE_FILE = 'moe-quant-coverage.html'
/** The run record written into the output directory: format, options, tool version, calibration summary. */
export const RUN_RECORD_FILE = 'moe-quant-run.json'

/** What a run leaves besides the weights, known once calibration is done. */
interface Outcome {
  coverage: CoverageLayer[]
  uncalibratedExperts: QuantizeResult['uncalibratedExperts']
  warnings: string[]
}

/** The run's warnings: where engines do not load the format, experts without tokens, too little data, linears and
 * files left as they were. */
function warningsOf(
  format: QuantFormatName,
  summary: CalibrationSummary | null,
  uncalibratedExperts: QuantizeResult['uncalibratedExperts'],
  { keptIndivisible, skippedFiles, kvCacheNote, quantizedLayers, plan, request }: Pick<Prepared, 'keptIndivisible' | 'skippedFiles' | 'kvCacheNote' | 'quantizedLayers' | 'plan' | 'request'>,
): string[] {
  const warnings: string[] = []
  if (kvCacheNote) warnings.push(kvCacheNote)
  const used = new Set(quantizedLayers.values())
  // The serving notes are about the engines' ModelOpt loaders.
  for (const written of plan.encoding === 'compressed-tensors' ? [] : used.size > 0 ? used : [format]) {
    const { servingNote } = FORMATS[written]
    if (servingNote) warnings.push(servingNote)
  }
  if (used.size > 1 && !used.has('nvfp4') && !used.has('w4a16_nvfp4')) {
    warnings.push('serving: SGLang 0.5.23 reads a MIXED_PRECISION checkpoint without NVFP4 or W4A16_NVFP4 layers as its w4afp8 format and loads it wrongly; vLLM 0.34 loads it')
  }
  const uncalibrated = uncalibratedSummary(uncalibratedExperts)
  if (uncalibrated) {
    warnings.push(
      `${uncalibrated}; their weight scales come from their own weights and their input scale is the layer's shared one. More calibration data would cover them.`,
    )
  }
  if (summary && request) warnings.push(...calibrationWarnings(summary, request))
  if (keptIndivisible.length > 0) {
    warnings.push(`${keptIndivisible.length} linears kept unquantized: an input dimension is not a multiple of ${FORMATS[format].groupSize} (${keptIndivisible.slice(0, 3).join(', ')}${keptIndivisible.length > 3 ? ', …' : ''})`)
  }
  const skippedWeights = skippedFiles.filter((f) => /\.(safetensors|bin|pt|pth|ckpt|gguf|npz|h5|msgpack)$/i.test(f))
  if (skippedWeights.length > 0) {
    warnings.push(`${skippedWeights.length} weight file(s) of the input are not part of its checkpoint and were not copied: ${skippedWeights.join(', ')}`)
  }
  return warnings
}

/** The run record: what was asked (format, options as resolved, tool version) and what calibration saw. */
function runRecord(
  options: QuantizeOptions,
  resolved: { tool: { name: string; version: string }; request: CalibrationRequest | null; maxShardBytes: number; kvCache: KvCacheMode; recipe?: Recipe },
  summary: CalibrationSummary | null,
  outcome: Pick<QuantizeResult, 'uncalibratedExperts' | 'keptIndivisible' | 'skippedFiles' | 'warnings'>,
): Record<string, unknown> {
  const { request } = resolved
  return {
    tool: resolved.tool,
    created: new Date().toISOString(),
    input: path.resolve(options.model),
    format: options.format,
    options: {
      device: request ? (request.device ?? null) : null,
      ...(request?.devices ? { devices: request.devices } : {}),
      exclude: options.exclude ?? [],
      indivisible: options.indivisible ?? 'error',
      scope: options.scope ?? 'all',
      recipe: resolved.recipe ?? null,
      kvCache: resolved.kvCache,
      exportFormat: options.exportFormat ?? 'modelopt',
      maxShardBytes: resolved.maxShardBytes,
      calibration: request && {
        source: 'path' in request.source ? request.source.path : request.source.kind,
        samples: request.samples,
        seqLen: request.seq_len,
        batchSize: request.batch_size,
        allExperts: request.all_experts,
      },
    },
    calibration: summary && {
      samples: summary.samples,
      requestedSamples: summary.requested_samples,
      seqLen: summary.seq_len,
      tokensPerLayer: summary.tokens,
      uncalibratedExperts: outcome.uncalibratedExperts,
    },
    keptIndivisible: outcome.keptIndivisible,
    skippedFiles: outcome.skippedFiles,
    warnings: outcome.warnings,
  }
}

/** Everything decided before the run: the model's descriptor, the calibration request (both null for a
 * weight-only format) and the export plan. */
interface Prepared extends PlannedExport {
  listing: HeaderListing
  report: InspectReport
  descriptor: ModelDescriptor | null
  request: CalibrationRequest | null
  tool: { name: string; version: string }
  /** The KV cache's quantization, and why it differs from the default when the model decided it. */
  kvCache: KvCacheMode
  kvCacheNote: string | undefined
  /** The coverage report's path when the caller gave one (written once the checkpoint is complete). */
  customReport: string | undefined
  recipe: Recipe | undefined
}

/** The recipe option as data: the object given, or the JSON file it names, checked.
 * @throws MoeQuantError `E_OPTION_INVALID` */
export function resolveRecipe(recipe: Recipe | string | undefined): Recipe | undefined {
  if (typeof recipe !== 'string') return recipe === undefined ? undefined : parseRecipe(recipe)
  let text: string
  try {
    text = readFileSync(recipe, 'utf8')
  } catch (error) {
    throw new MoeQuantError('E_OPTION_INVALID', `recipe: cannot read ${recipe}: ${(error as Error).message}`, { file: recipe })
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    throw new MoeQuantError('E_OPTION_INVALID', `recipe: ${recipe} is not JSON: ${(error as Error).message}`, { file: recipe })
  }
  return parseRecipe(value, `recipe ${recipe}`)
}

/** Whether any format of the run (`format` and the recipe's) calibrates, and the one that decides it. */
function calibratingFormat(format: QuantFormatName, recipe: Recipe | undefined): QuantFormatName {
  return recipeFormats(format, recipe).find((f) => FORMATS[f].calibrated) ?? format
}

/** Reads the model's headers and decides the run, refusing what cannot run before any work. */
async function prepare(options: QuantizeOptions): Promise<Prepared> {
  const listing = await readListing(options.model)
  refuseQuantizedSource(listing, { modelOpt: true })
  const recipe = resolveRecipe(options.recipe)
  const compressedTensors = options.exportFormat === 'compressed-tensors'
  if (compressedTensors) checkCompressedTensorsOptions(options)
  const deciding = calibratingFormat(options.format, recipe)
  checkCalibrationOption(options, deciding)
  const calibrated = FORMATS[deciding].calibrated
  const { report, descriptor } = calibrated ? describeListing(listing) : { report: reportFromListing(listing), descriptor: null }
  const devices = calibrationDevices(options)
  const request = descriptor && calibrationRequest(options.calibration as CalibrationOptions, descriptor, devices)
  const overwrite = options.overwrite === true
  const tool = { name: 'moe-quant', version: packageVersion() }
  // compressed-tensors' default is an unquantized KV cache (llm-compressor's), ModelOpt's hf_ptq's fp8_cast.
  const kvRequested = compressedTensors ? (options.kvCache ?? 'none') : options.kvCache
  const { mode: kvCache, note: kvCacheNote } = resolveKvCache(kvRequested, deciding, report.modelType)
  const planned = planExport(report, descriptor, listing, {
    format: options.format,
    exclude: options.exclude ?? [],
    indivisible: options.indivisible ?? 'error',
    scope: options.scope ?? 'all',
    kvCache,
    maxShardBytes: parseSize(options.maxShardSize ?? '5GB') as number,
    overwrite,
    tool,
    ...(recipe ? { recipe } : {}),
    ...(compressedTensors ? { exportFormat: 'compressed-tensors' as const } : {}),
  })
  const customReport = typeof options.coverageReport === 'string' ? options.coverageReport : undefined
  if (customReport !== undefined) await checkReportPath(customReport, { model: options.model, overwrite, option: 'coverageReport' })
  return { ...planned, listing, report, descriptor, request, tool, kvCache, kvCacheNote, customReport, recipe }
}

/**
 * `calibration` is given exactly when the format calibrates.
 * @throws MoeQuantError `E_OPTION_INVALID`
 */
function checkCalibrationOption(options: QuantizeOptions, deciding: QuantFormatName): void {
  const calibrated = FORMATS[deciding].calibrated
  const weightOnly = FORMAT_NAMES.filter((f) => !FORMATS[f].calibrated).map((f) => `'${f}'`).join(', ')
  if (calibrated && options.calibration === undefined) {
    throw new MoeQuantError('E_OPTION_INVALID', `calibration: format '${deciding}' measures activation scales and needs calibration data (the weight-only formats ${weightOnly} need none)`)
  }
  if (!calibrated && options.calibration !== undefined) {
    throw new MoeQuantError('E_OPTION_INVALID', `calibration: format '${deciding}'${options.recipe ? ' (and every format of the recipe)' : ''} is weight-only and runs no calibration; leave the option out`)
  }
  if (!calibrated && typeof options.coverageReport === 'string') {
    throw new MoeQuantError('E_OPTION_INVALID', `coverageReport: format '${deciding}' is weight-only; without calibration there is no expert coverage to report`)
  }
}

/** Coverage, uncalibrated experts and warnings, from what calibration recorded (nothing when weight-only). */
function outcomeOf(options: QuantizeOptions, prepared: Prepared, summary: CalibrationSummary | null): Outcome {
  if (!summary) return { coverage: [], uncalibratedExperts: [], warnings: warningsOf(options.format, null, [], prepared) }
  const coverage = coverageLayers(summary, prepared.report.moeLayers)
  const uncalibrated = uncalibratedExperts(coverage)
  return { coverage, uncalibratedExperts: uncalibrated, warnings: warningsOf(options.format, summary, uncalibrated, prepared) }
}

/** The files added to the output before the core publishes it: the run record, and the default coverage report. */
function outputFiles(options: QuantizeOptions, prepared: Prepared, summary: CalibrationSummary | null): Record<string, string> {
  const { uncalibratedExperts: uncalibrated, coverage, warnings } = outcomeOf(options, prepared, summary)
  const { tool, request, plan, keptIndivisible, skippedFiles } = prepared
  const record = runRecord(options, { tool, request, maxShardBytes: plan.max_shard_bytes, kvCache: prepared.kvCache, ...(prepared.recipe ? { recipe: prepared.recipe } : {}) }, summary, { uncalibratedExperts: uncalibrated, keptIndivisible, skippedFiles, warnings })
  const files: Record<string, string> = { [RUN_RECORD_FILE]: `${JSON.stringify(record, null, 2)}\n` }
  if (summary && options.coverageReport === undefined) files[COVERAGE_FILE] = renderCoverageReport(options.model, coverageInput(summary, coverage, warnings))
  return files
}

/** Bytes of weight files: the input's are the listing's; the output's are the shards the writer names. */
function weightBytes(files: Array<[string, number]> | Record<string, number>): number {
  const isShard = (file: string): boolean => /^model(-\d+-of-\d+)?\.safetensors$/.test(file)
  return (Array.isArray(files) ? files : Object.entries(files).filter(([f]) => isShard(f))).reduce((n, [, b]) => n + b, 0)
}

/** The public result of a run the core has published; writes a coverage report the caller gave a path for. */
async function finish(options: QuantizeOptions, prepared: Prepared, report: QuantizeReport, started: number): Promise<QuantizeResult> {
  const output = path.resolve(options.output)
  const summary = report.calibration
  const { coverage, uncalibratedExperts: uncalibrated, warnings } = outcomeOf(options, prepared, summary)
  let coverageReportPath: string | null = summary && options.coverageReport === undefined ? path.join(output, COVERAGE_FILE) : null
  if (summary && prepared.customReport !== undefined) {
    const note = ` (the quantized checkpoint in ${output} is complete)`
    coverageReportPath = await writeCoverageReport(prepared.customReport, options.model, coverageInput(summary, coverage, warnings), note)
  }
  return {
    output,
    format: options.format,
    kvCache: prepared.kvCache,
    exportFormat: options.exportFormat ?? 'modelopt',
    sizeBytes: { before: weightBytes(prepared.listing.files), after: weightBytes(report.files) },
    // JSON carries an infinite error (a weight near the bf16 maximum whose quantized value overflows f32 when read
    // back) as null.
    layers: report.layers.map((l) => ({ layer: l.layer, tensors: l.tensors, relativeMse: l.relative_mse ?? Number.POSITIVE_INFINITY })),
    uncalibratedExperts: uncalibrated,
    keptIndivisible: prepared.keptIndivisible,
    skippedFiles: prepared.skippedFiles,
    quantizedTensors: report.quantized_tensors,
    quantizedOnDevice: report.quantized_on_device,
    warnings,
    coverageReportPath,
    runRecordPath: path.join(output, RUN_RECORD_FILE),
    peakRssBytes: report.peak_rss_bytes,
    seconds: {
      calibrate: report.seconds.calibrate,
      load: report.seconds.load,
      forward: report.seconds.forward,
      quantizeOnDevice: report.seconds.quantize_on_device,
      quantize: report.seconds.quantize,
      write: report.seconds.write,
      total: (Date.now() - started) / 1000,
    },
    tokens: summary ? summary.tokens : 0,
  }
}

/**
 * Calibrates, quantizes and writes a checkpoint in ModelOpt's unified HF format.
 *
 * @example
 *   const result = await quantizeModel({
 *     model: './Qwen3-30B-A3B', output: './Qwen3-30B-A3B-NVFP4', format: 'nvfp4',
 *     calibration: { data: './calib.jsonl', samples: 512, seqLen: 512 },
 *     onProgress: (e) => console.log(e.stage, e.layer, '/', e.layers),
 *   })
 * @throws MoeQuantError `E_OPTION_INVALID` (a bad or unknown option, an `exclude` pattern matching nothing,
 *   `kvCache: 'fp8'` with a weight-only format), `E_MODEL_UNSUPPORTED` (no forward for a calibrated format, or a
 *   quantized KV cache asked of a family whose KV cache ModelOpt leaves unquantized),
 *   `E_CHECKPOINT_ALREADY_QUANTIZED` (a ModelOpt export, or a source stored quantized in a form that cannot be read),
 *   `E_OUTPUT_INVALID` (output is the input, inside it, not empty without `overwrite`, or another output
 *   appeared there during the run), `E_TENSOR_SHAPE` (NVFP4 and a dimension not a multiple of 16),
 *   `E_TENSOR_NON_FINITE`, `E_ACTIVATION_NON_FINITE`, `E_OUT_OF_MEMORY`, `E_OUTPUT_WRITE`, `E_CANCELLED`,
 *   calibration, checkpoint and layout codes; or the error a throwing `onProgress` threw.
 */
export async function quantizeModel(options: QuantizeOptions): Promise<QuantizeResult> {
  checkOptions(options, QUANTIZE_OPTIONS, 'quantizeModel(options)')
  const started = Date.now()
  const prepared = await prepare(options)
  const { descriptor, plan, request } = prepared
  // Once the core has published the output, the run has succeeded, even if the signal was aborted after its
  // last cancellation check; before that, cancelling leaves a previous output as it was.
  const text = await runTask(
    options,
    (event): QuantizeProgress => {
      const e = JSON.parse(event) as NativeQuantizeProgress
      return { stage: e.stage, layer: e.layer, layers: e.layers, tokens: e.tokens, batch: e.batch, batches: e.batches, bytesWritten: e.bytes_written }
    },
    (binding, token, onEvent, guard) => {
      // Called once calibration is done, before the core publishes the output.
      const onFiles = guard((summary: string) => JSON.stringify(outputFiles(options, prepared, JSON.parse(summary) as CalibrationSummary | null)), '{}')
      const json = (value: unknown): string | null => (value === null ? null : JSON.stringify(value))
      return binding.quantize(options.model, options.output, json(descriptor), JSON.stringify(plan), json(request), token, onEvent, onFiles)
    },
  )
  return finish(options, prepared, JSON.parse(text) as QuantizeReport, started)
}
