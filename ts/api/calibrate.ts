/**
 * calibrateModel(): runs the real model on calibration text (or ids), layer by layer, and returns the
 * activation maxima every quantized linear needs, per-expert token counts and the experts that saw no
 * token. Optionally writes the expert-coverage heatmap as a self-contained HTML file.
 */
import * as path from 'node:path'

import { MoeQuantError } from '../errors'
import type { CalibrationReport, CalibrationRequest, ForwardProgress, ModelDescriptor } from '../native/contract'
import { runTask } from '../native/task'
import { checkReportPath, type CoverageInput, writeCoverageReport } from '../report/coverage'
import { describeModel } from './describe'
import { checkIdRows, type IdRow } from './ids'
import { checkDevice, rejectUnknownKeys } from './options'

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
  experts: ExpertCoverage[]
  /** Experts (over all layers) that saw no calibration token. */
  uncalibratedExperts: number
  warnings: string[]
  peakRssBytes: number | null
  seconds: number
  coverageReportPath: string | null
}

const TOKENS_PER_AUTO_BATCH = 8192

function positiveInteger(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw new MoeQuantError('E_OPTION_INVALID', `${name}: expected an integer ≥ 1, got ${JSON.stringify(value)}`)
  }
  return value
}

/** Every option of `calibration` (checked complete against the type). */
const CALIBRATION_KEYS = Object.keys({
  data: 1, texts: 1, conversations: 1, ids: 1, samples: 1, seqLen: 1, batchSize: 1, allExperts: 1,
} satisfies Record<keyof CalibrationOptions, 1>)

/** The options that name where the calibration tokens come from. */
const SOURCES = ['data', 'texts', 'conversations', 'ids'] as const

/** Every option of calibrateModel. */
const CALIBRATE_KEYS = Object.keys({
  model: 1, device: 1, calibration: 1, coverageReport: 1, overwrite: 1, onProgress: 1, signal: 1,
} satisfies Record<keyof CalibrateOptions, 1>)

/** A file of documents, read as its extension says: `.jsonl`, `.json`, anything else plain text. */
export function fileSource(file: string): { kind: 'jsonl' | 'json' | 'text'; path: string } {
  const resolved = path.resolve(file)
  const extension = path.extname(resolved).toLowerCase()
  return { kind: extension === '.jsonl' ? 'jsonl' : extension === '.json' ? 'json' : 'text', path: resolved }
}

/** `calibration.texts`: a non-empty array of strings (no holes). */
function checkTexts(texts: unknown): string[] {
  if (!Array.isArray(texts) || texts.length === 0) throw new MoeQuantError('E_OPTION_INVALID', 'calibration.texts: expected a non-empty array of strings')
  for (let i = 0; i < texts.length; i++) {
    if (typeof texts[i] !== 'string') {
      throw new MoeQuantError('E_OPTION_INVALID', `calibration.texts[${i}]: expected a string, got ${i in texts ? JSON.stringify(texts[i]) : 'a hole'}`)
    }
  }
  return texts as string[]
}

/** `calibration.conversations`: a non-empty array of non-empty arrays of messages with a string `role`. */
function checkConversations(conversations: unknown): ChatMessage[][] {
  const invalid = (where: string, message: string): MoeQuantError => new MoeQuantError('E_OPTION_INVALID', `calibration.conversations${where}: ${message}`)
  if (!Array.isArray(conversations) || conversations.length === 0) throw invalid('', 'expected a non-empty array of conversations')
  for (let c = 0; c < conversations.length; c++) {
    const conversation: unknown = conversations[c]
    if (!Array.isArray(conversation) || conversation.length === 0) throw invalid(`[${c}]`, 'expected a non-empty array of messages')
    for (let m = 0; m < conversation.length; m++) {
      const message: unknown = conversation[m]
      if (typeof message !== 'object' || message === null || typeof (message as ChatMessage).role !== 'string') {
        throw invalid(`[${c}][${m}]`, `expected a message such as { role: 'user', content: '…' }, got ${JSON.stringify(message)}`)
      }
    }
  }
  return conversations as ChatMessage[][]
}

/** Validates calibration options and resolves defaults into the native request. */
export function calibrationRequest(options: CalibrationOptions, descriptor: ModelDescriptor, deviceOption?: string): CalibrationRequest {
  const device = checkDevice(deviceOption)
  if (typeof options !== 'object' || options === null) {
    throw new MoeQuantError('E_OPTION_INVALID', 'calibration: expected an object with data or ids')
  }
  rejectUnknownKeys(options, CALIBRATION_KEYS, 'calibration.')
  const given = SOURCES.filter((key) => options[key] !== undefined)
  if (given.length !== 1) {
    throw new MoeQuantError(
      'E_OPTION_INVALID',
      `calibration: give exactly one of data (a .jsonl, .json or text file), texts, conversations or ids${given.length > 1 ? `, not ${given.join(' and ')}` : ''}`,
    )
  }
  // Pre-tokenized rows set the defaults by their own shape: the shortest row's length, and every window.
  const rows = options.ids === undefined ? undefined : checkIdRows(options.ids, descriptor.vocab_size, 'calibration.ids')
  const seqLen = positiveInteger(options.seqLen, 'calibration.seqLen', rows ? Math.min(...rows.map((r) => r.length)) : 512)
  const windows = rows?.reduce((n, row) => n + Math.floor(row.length / seqLen), 0)
  const samples = positiveInteger(options.samples, 'calibration.samples', windows || 512)
  const batchSize =
    options.batchSize === undefined || options.batchSize === 'auto'
      ? Math.max(1, Math.min(samples, Math.floor(TOKENS_PER_AUTO_BATCH / seqLen)))
      : positiveInteger(options.batchSize, 'calibration.batchSize', 1)
  let source: CalibrationRequest['source']
  if (options.data !== undefined) {
    if (typeof options.data !== 'string' || options.data.length === 0) {
      throw new MoeQuantError('E_OPTION_INVALID', `calibration.data: expected a file path, got ${JSON.stringify(options.data)}`)
    }
    source = fileSource(options.data)
  } else if (options.texts !== undefined) {
    source = { kind: 'documents', documents: checkTexts(options.texts) }
  } else if (options.conversations !== undefined) {
    source = { kind: 'documents', documents: checkConversations(options.conversations) }
  } else {
    source = { kind: 'ids', ids: rows as number[][] }
  }
  return { source, samples, seq_len: seqLen, batch_size: batchSize, all_experts: options.allExperts === true, device }
}

/** What the coverage report shows of a calibration result. */
function coverageOf(result: CalibrationResult): CoverageInput {
  const layers = result.experts.map((e) => ({ layer: e.layer, tokens: e.tokens }))
  return { samples: result.samples, seqLen: result.seqLen, tokens: result.tokens, layers, warnings: result.warnings }
}

/** Turns the native report into the public result. */
function toResult(report: CalibrationReport, descriptor: ModelDescriptor): CalibrationResult {
  const experts: ExpertCoverage[] = []
  for (const layer of descriptor.layers) {
    if (layer.mlp.kind !== 'moe') continue
    const stats = report.observers.experts[layer.mlp.block]
    if (!stats) continue
    experts.push({
      layer: layer.index,
      block: layer.mlp.block,
      gateUpInputAmax: stats.gate_up_input_amax,
      downInputAmax: stats.down_input_amax,
      tokens: stats.tokens,
      uncalibrated: stats.tokens.flatMap((n, e) => (n === 0 ? [e] : [])),
      weightAmax: { gate: stats.gate_amax, up: stats.up_amax, down: stats.down_amax },
    })
  }
  const uncalibratedExperts = experts.reduce((n, l) => n + l.uncalibrated.length, 0)
  const warnings: string[] = []
  if (uncalibratedExperts > 0) {
    const layers = experts.filter((l) => l.uncalibrated.length > 0).map((l) => `layer ${l.layer}: ${l.uncalibrated.length}`)
    warnings.push(
      `${uncalibratedExperts} experts saw no calibration token (${layers.join(', ')}); they get weight scales from ` +
        `their own weights and their layer's shared input scale. More or more varied calibration data would cover them.`,
    )
  }
  if (report.samples < report.requested_samples) {
    warnings.push(`the calibration data gave ${report.samples} sequences of ${report.seq_len} tokens, fewer than the ${report.requested_samples} asked for`)
  }
  return {
    samples: report.samples,
    requestedSamples: report.requested_samples,
    seqLen: report.seq_len,
    tokens: report.tokens,
    inputAmax: report.observers.input_amax,
    experts,
    uncalibratedExperts,
    warnings,
    peakRssBytes: report.peak_rss_bytes,
    seconds: report.seconds,
    coverageReportPath: null,
  }
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
  if (typeof options !== 'object' || options === null || typeof options.model !== 'string') {
    throw new MoeQuantError('E_OPTION_INVALID', 'calibrateModel(options): options.model must be a directory path')
  }
  rejectUnknownKeys(options, CALIBRATE_KEYS)
  const descriptor = await describeModel(options.model)
  const request = calibrationRequest(options.calibration, descriptor, options.device)
  if (options.coverageReport) {
    await checkReportPath(options.coverageReport, { model: options.model, overwrite: options.overwrite === true, option: 'coverageReport' })
  }
  const text = await runTask(
    options,
    (event): CalibrationProgress => ({ stage: 'calibrate', ...(JSON.parse(event) as ForwardProgress) }),
    (binding, token, onEvent) => binding.calibrate(options.model, JSON.stringify(descriptor), JSON.stringify(request), token, onEvent),
  )
  const result = toResult(JSON.parse(text) as CalibrationReport, descriptor)
  if (options.coverageReport) {
    result.coverageReportPath = await writeCoverageReport(options.coverageReport, options.model, coverageOf(result))
  }
  return result
}
