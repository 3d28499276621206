/**
 * calibrateModel(): runs the real model on calibration text (or ids), layer by layer, and returns the
 * activation maxima every quantized linear needs, per-expert token counts and the experts that saw no
 * token. Optionally writes the expert-coverage heatmap as a self-contained HTML file.
 */
import { MoeQuantError } from '../errors'
import type { CalibrationReport, CalibrationRequest, CalibrationSummary, ExpertStats, ForwardProgress, ModelDescriptor } from '../native/contract'
import { runTask } from '../native/task'
import {
  checkReportPath,
  type CoverageLayer,
  coverageInput,
  coverageLayers,
  uncalibratedExperts,
  uncalibratedSummary,
  writeCoverageReport,
} from '../report/coverage'
import { describeModel } from './describe'
import {
  checkConversations,
  checkIdRows,
  checkOptions,
  checkTexts,
  fileSource,
  type IdRow,
  idWindows,
  is,
  rules,
  type Rules,
} from './options'

/** One message of a chat conversation, as chat templates read it. */
export interface ChatMessage {
  role: string
  content: unknown
  [key: string]: unknown
}

/** Where the calibration tokens come from (exactly one of `data`, `texts`, `conversations`, `ids`) and how many. */
export interface CalibrationOptions {
  /**
   * A file of documents: `.jsonl` (one `{"text": …}` or `{"messages": […]}` object per line), `.json` (an array
   * of strings, such objects or conversations; read whole), or plain text (documents separated by blank lines).
   */
  data?: string
  /** Documents given in memory. */
  texts?: readonly string[]
  /** Chat conversations given in memory, each rendered to text with the model's chat template. */
  conversations?: ReadonlyArray<readonly ChatMessage[]>
  /**
   * Pre-tokenized rows instead of `data` (arrays or typed arrays of numbers or bigints, rows of any
   * lengths): each row is cut into consecutive windows of `seqLen` ids (its tail dropped), and the first
   * `samples` windows are used. A row shorter than `seqLen` is an error.
   */
  ids?: readonly IdRow[]
  /** Sequences to use (fewer when the data runs out). Default 512; with `ids`, every window they give. */
  samples?: number
  /** Tokens per sequence. Default 512; with `ids`, the length of the shortest row. */
  seqLen?: number
  /** Sequences per forward batch, or `'auto'` (about 8192 tokens per batch). Default `'auto'`. */
  batchSize?: number | 'auto'
  /** Also route every token through every expert, for statistics only (outputs unchanged). Default false. */
  allExperts?: boolean
}

/** Where a calibration is: after each layer, and in between (at most every 250 ms) with the batches done. */
export interface CalibrationProgress {
  stage: 'calibrate'
  /** Decoder layers done, of `layers`. */
  layer: number
  layers: number
  /** Calibration tokens per layer. */
  tokens: number
  /** Batches of the next layer done, of `batches` (`batches` once a layer is done). */
  batch: number
  batches: number
}

export interface CalibrateOptions {
  /** The model directory. */
  model: string
  /** `'cpu'` (default, f32) or `'cuda'`/`'cuda:N'` (bf16, with the CUDA build). */
  device?: string
  /** Several GPUs that split the calibration batches, instead of `device` (as `quantizeModel`'s `devices`). */
  devices?: string[]
  calibration: CalibrationOptions
  /** Write the expert-coverage heatmap (HTML) here (not inside the model directory). */
  coverageReport?: string
  /** Replace an existing file at `coverageReport`. Default false. */
  overwrite?: boolean
  onProgress?: (event: CalibrationProgress) => void
  /** Aborting rejects with `E_CANCELLED` at the next layer boundary. */
  signal?: AbortSignal
}

export interface ExpertCoverage {
  layer: number
  /** Module path of the MoE block. */
  block: string
  /** max |x| entering gate/up, shared by all experts of the layer. */
  gateUpInputAmax: number
  /** max |act(gate)·up| entering down, shared by all experts of the layer. */
  downInputAmax: number
  /** (token, expert) routings per expert. */
  tokens: number[]
  /** Experts that received no calibration token. */
  uncalibrated: number[]
  /** Per expert: max |W| of gate, up and down. */
  weightAmax: { gate: number[]; up: number[]; down: number[] }
}

export interface CalibrationResult {
  samples: number
  requestedSamples: number
  seqLen: number
  tokens: number
  /** max |input| of every linear outside the routed experts, by module name. */
  inputAmax: Record<string, number>
  /** max |key| and max |value| each attention attends with (keys after their norm and rope), by attention module
   * (the parent of its output projection): what `kvCache: 'fp8'` scales the KV cache by. */
  kvAmax: Record<string, { key: number; value: number }>
  experts: ExpertCoverage[]
  /** Experts (over all layers) that saw no calibration token. */
  uncalibratedExperts: number
  warnings: string[]
  peakRssBytes: number | null
  seconds: number
  coverageReportPath: string | null
}

const TOKENS_PER_AUTO_BATCH = 8192

/** The options of `calibration`, shared with quantizeModel; the sources in memory are checked item by item in calibrationRequest. */
const CALIBRATION_OPTIONS: Rules<CalibrationOptions> = {
  data: rules.filePath,
  texts: null,
  conversations: null,
  ids: null,
  samples: rules.positiveInteger,
  seqLen: rules.positiveInteger,
  batchSize: rules.batchSize,
  allExperts: null,
}

/** The options that name where the calibration tokens come from. */
const SOURCES = ['data', 'texts', 'conversations', 'ids'] as const

const CALIBRATE_OPTIONS: Rules<CalibrateOptions> = {
  model: rules.directory,
  device: rules.device,
  devices: rules.devices,
  calibration: null,
  coverageReport: { test: (value) => value === false || is.nonEmptyString(value), expected: 'a file path' },
  overwrite: null,
  onProgress: rules.callback,
  signal: null,
}

/** Where the tokens come from, as the native request names it. */
function calibrationSource(options: CalibrationOptions, rows: number[][] | undefined): CalibrationRequest['source'] {
  if (options.data !== undefined) return fileSource(options.data)
  if (options.texts !== undefined) return { kind: 'documents', documents: checkTexts(options.texts, 'calibration.texts') }
  if (options.conversations !== undefined) return { kind: 'documents', documents: checkConversations(options.conversations, 'calibration.conversations') }
  return { kind: 'ids', ids: rows as number[][] }
}

/**
 * Where a calibration runs: the caller's `devices` (several that split the batches) or `device` (default `'cpu'`),
 * each already checked.
 * @throws MoeQuantError `E_OPTION_INVALID` when both are given
 */
export function calibrationDevices(options: { device?: string; devices?: string[] }): string | string[] {
  if (options.device !== undefined && options.devices !== undefined) {
    throw new MoeQuantError('E_OPTION_INVALID', 'device and devices: give one device or a list of devices, not both')
  }
  return options.devices ?? options.device ?? 'cpu'
}

/**
 * Validates calibration options (`device`, from `calibrationDevices`, is the caller's) and resolves their defaults
 * into the native request. Token ids are checked against the model's vocabulary.
 */
export function calibrationRequest(options: CalibrationOptions, descriptor: ModelDescriptor, device: string | string[] = 'cpu'): CalibrationRequest {
  checkOptions(options, CALIBRATION_OPTIONS, 'calibration', 'calibration.')
  const given = SOURCES.filter((key) => options[key] !== undefined)
  if (given.length !== 1) {
    throw new MoeQuantError(
      'E_OPTION_INVALID',
      `calibration: give exactly one of data (a .jsonl, .json or text file), texts, conversations or ids${given.length > 1 ? `, not ${given.join(' and ')}` : ''}`,
    )
  }
  // Pre-tokenized rows set the defaults by their own shape: the shortest row's length, and every window.
  const rows = options.ids === undefined ? undefined : checkIdRows(options.ids, descriptor.vocab_size, 'calibration.ids')
  const windows = rows ? idWindows(rows, options.seqLen) : undefined
  const seqLen = windows?.seqLen ?? options.seqLen ?? 512
  const samples = options.samples ?? (windows?.windows || 512)
  const batchSize =
    options.batchSize === undefined || options.batchSize === 'auto' ? Math.max(1, Math.min(samples, Math.floor(TOKENS_PER_AUTO_BATCH / seqLen))) : options.batchSize
  const source = calibrationSource(options, rows)
  const where = typeof device === 'string' ? { device } : { devices: device }
  return { source, samples, seq_len: seqLen, batch_size: batchSize, all_experts: options.allExperts === true, ...where }
}

/** The warnings of a calibration: it ran out of data before `samples` sequences, or some of its devices got no batch. */
export function calibrationWarnings(summary: CalibrationSummary, request: CalibrationRequest): string[] {
  const warnings: string[] = []
  if (summary.samples < summary.requested_samples) {
    warnings.push(`the calibration data gave ${summary.samples} sequences of ${summary.seq_len} tokens, fewer than the ${summary.requested_samples} asked for`)
  }
  const batches = Math.ceil(summary.samples / request.batch_size)
  const devices = request.devices?.length ?? 1
  if (devices > batches) {
    warnings.push(`devices: ${batches} calibration batch(es) for ${devices} devices; ${devices - batches} of them had no share and ran nothing (more samples or a smaller batchSize would use them)`)
  }
  return warnings
}

/** The MoE blocks of the model, in layer order. */
const moeBlocks = (descriptor: ModelDescriptor): Array<{ layer: number; block: string }> =>
  descriptor.layers.flatMap((l) => (l.mlp?.kind === 'moe' ? [{ layer: l.index, block: l.mlp.block }] : []))

/** Turns the native report into the public result, and the coverage report's layers. */
function toResult(report: CalibrationReport, descriptor: ModelDescriptor, request: CalibrationRequest): { result: CalibrationResult; coverage: CoverageLayer[] } {
  const coverage = coverageLayers(report, moeBlocks(descriptor))
  const experts = coverage.map(({ layer, block, tokens }): ExpertCoverage => {
    const stats = report.observers.experts[block] as ExpertStats
    return {
      layer,
      block,
      gateUpInputAmax: stats.gate_up_input_amax,
      downInputAmax: stats.down_input_amax,
      tokens: stats.tokens,
      uncalibrated: tokens.flatMap((n, e) => (n === 0 ? [e] : [])),
      weightAmax: { gate: stats.gate_amax, up: stats.up_amax, down: stats.down_amax },
    }
  })
  const uncalibrated = uncalibratedSummary(uncalibratedExperts(coverage))
  const warnings = uncalibrated
    ? [`${uncalibrated}; they get weight scales from their own weights and their layer's shared input scale. More or more varied calibration data would cover them.`]
    : []
  warnings.push(...calibrationWarnings(report, request))
  const result: CalibrationResult = {
    samples: report.samples,
    requestedSamples: report.requested_samples,
    seqLen: report.seq_len,
    tokens: report.tokens,
    inputAmax: report.observers.input_amax,
    kvAmax: report.observers.kv_amax,
    experts,
    uncalibratedExperts: experts.reduce((n, l) => n + l.uncalibrated.length, 0),
    warnings,
    peakRssBytes: report.peak_rss_bytes,
    seconds: report.seconds,
    coverageReportPath: null,
  }
  return { result, coverage }
}

/**
 * Runs the calibration forward of the model in `options.model`.
 *
 * @example
 *   const result = await calibrateModel({ model: './tiny-moe', calibration: { data: './calib.jsonl', samples: 64, seqLen: 256 } })
 *   result.experts[0].uncalibrated   // experts of the first MoE layer that saw no token
 * @throws MoeQuantError `E_OPTION_INVALID`, `E_TOKENIZER_MISSING`, `E_CALIBRATION_EMPTY`,
 *   `E_CALIBRATION_ID_RANGE`, `E_CANCELLED`, checkpoint and layout codes.
 */
export async function calibrateModel(options: CalibrateOptions): Promise<CalibrationResult> {
  checkOptions(options, CALIBRATE_OPTIONS, 'calibrateModel(options)')
  const descriptor = await describeModel(options.model)
  const request = calibrationRequest(options.calibration, descriptor, calibrationDevices(options))
  if (options.coverageReport) {
    await checkReportPath(options.coverageReport, { model: options.model, overwrite: options.overwrite === true, option: 'coverageReport' })
  }
  const text = await runTask(
    options,
    (event): CalibrationProgress => ({ stage: 'calibrate', ...(JSON.parse(event) as ForwardProgress) }),
    (binding, token, onEvent) => binding.calibrate(options.model, JSON.stringify(descriptor), JSON.stringify(request), token, onEvent),
  )
  const report = JSON.parse(text) as CalibrationReport
  const { result, coverage } = toResult(report, descriptor, request)
  if (options.coverageReport) {
    result.coverageReportPath = await writeCoverageReport(options.coverageReport, options.model, coverageInput(report, coverage, result.warnings))
  }
  return result
}
