/**
 * evaluateModel(): how far a quantized checkpoint's next-token distributions are from its original's. Both
 * models run the native f32 forward (a ModelOpt-format checkpoint is read dequantized) over the same held-out
 * ids, batch by batch, and only summary statistics come back: mean and max KL(P_original ‖ P_quantized) in
 * nats and top-1 agreement over every position, plus each model's perplexity of the actual next tokens.
 *
 * Activations are not quantized: the numbers measure the weight quantization alone.
 */
import * as path from 'node:path'

import { MoeQuantError } from '../errors'
import { readQuantization } from '../model/listing'
import type { ComparisonProgress, ComparisonReport, ComparisonRequest, ModelDescriptor } from '../native/contract'
import { runTask } from '../native/task'
import { describeModel } from './describe'
import { checkDirectory, checkIdRows, checkOptions, fileSource, type IdRow, idWindows, rules, type Rules } from './options'

/** Which held-out tokens to run; give at most one of `data` and `ids`. */
export interface EvaluateOptions {
  /** A file of documents (`.jsonl`, `.json` or plain text, as calibration's `data`), tokenized with the
   * original model's tokenizer exactly as calibration data is. */
  data?: string
  /**
   * Pre-tokenized sequences of equal length instead (no tokenizer needed): arrays or typed arrays of numbers or
   * bigints. Like calibration's `ids`, each row is cut into windows of `seqLen` ids (its tail dropped).
   */
  ids?: readonly IdRow[]
  /** Sequences to use. Default 8 (with `ids`: all of them, i.e. every window, one per row at their own length). */
  samples?: number
  /** Tokens per sequence. Default 128 (with `ids`: their length). */
  seqLen?: number
  /** Seed of the pseudo-random ids used when neither `data` nor `ids` is given, 0 to 2³²−1. Default 0. */
  seed?: number
  /** Sequences per forward, or `'auto'` (each model's logits of one batch within about 256 MiB). */
  batchSize?: number | 'auto'
  /** `'cpu'` (default, f32) or `'cuda'`/`'cuda:N'` (both models in bf16 on the GPU, with the CUDA build). */
  device?: string
  onProgress?: (event: EvaluationProgress) => void
  /** Aborting rejects with `E_CANCELLED` at the next layer boundary. */
  signal?: AbortSignal
}

export interface EvaluationProgress {
  stage: 'evaluate'
  /** The model whose forward advanced. */
  model: 'original' | 'quantized'
  /** Batch (1-based) of `batches`. */
  batch: number
  batches: number
  /** Decoder layers done, of `layers`. */
  layer: number
  layers: number
}

/** Where the evaluated ids came from. */
export type EvaluationData =
  | { source: 'file'; path: string }
  | { source: 'ids' }
  | {
      /** `ids[r][t] = floor(x / 2³² · vocabSize)` for successive `x ← (1664525·x + 1013904223) mod 2³²`,
       * starting from `x = seed`, row by row: uniform over the vocabulary, reproducible everywhere. */
      source: 'random'
      seed: number
    }

export interface EvaluationResult {
  /** Mean KL(P_original ‖ P_quantized) over all positions, nats. */
  klMean: number
  klMax: number
  /** Where the largest KL occurred. */
  klMaxAt: { sample: number; position: number }
  /** Fraction of positions where both models' most likely next token is the same. */
  top1Agreement: number
  /** Positions compared: every token of every sequence (`samples × seqLen`). */
  positions: number
  /** exp(mean negative log-likelihood) of the actual next token (the last position of each sequence has
   * none), per model. Meaningful on real text; on random ids it is about the vocabulary size. */
  perplexity: { original: number; quantized: number }
  samples: number
  requestedSamples: number
  seqLen: number
  data: EvaluationData
  /** `quant_algo` the quantized checkpoint declares, or null when it declares none. */
  quantization: string | null
  peakRssBytes: number | null
  seconds: number
}

const DEFAULT_SAMPLES = 8
const DEFAULT_SEQ_LEN = 128
const LOGITS_BUDGET_BYTES = 256 * 2 ** 20

const EVALUATE_OPTIONS: Rules<EvaluateOptions> = {
  data: rules.filePath,
  ids: null,
  samples: rules.positiveInteger,
  seqLen: rules.positiveInteger,
  seed: { test: (value) => typeof value === 'number' && Number.isInteger(value) && value >= 0 && value < 2 ** 32, expected: 'an integer from 0 to 2^32 − 1' },
  batchSize: rules.batchSize,
  device: rules.device,
  onProgress: rules.callback,
  signal: null,
}

const invalid = (message: string): MoeQuantError => new MoeQuantError('E_OPTION_INVALID', message)

/** Deterministic pseudo-random ids `[rows, seqLen]` below `vocab` (see EvaluationData). */
export function randomIds(rows: number, seqLen: number, vocab: number, seed: number): number[][] {
  let state = seed >>> 0
  const next = (): number => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0
    return Math.floor((state / 2 ** 32) * vocab)
  }
  return Array.from({ length: rows }, () => Array.from({ length: seqLen }, next))
}

/** The options after validation, before the models' vocabulary is known. */
interface ResolvedOptions {
  device: string
  samples: number
  seqLen: number
  batchSize: number | 'auto'
  data: EvaluationData
  ids?: number[][]
}

/** Validates the options eagerly (before any model is read); token ids are range-checked later. */
export function resolveOptions(options: EvaluateOptions): ResolvedOptions {
  checkOptions(options, EVALUATE_OPTIONS, 'evaluateModel(original, quantized, options)')
  if (options.data !== undefined && options.ids !== undefined) throw invalid('data, ids: give at most one of them')
  const given = options.ids !== undefined ? 'ids' : options.data !== undefined ? 'data' : undefined
  if (given && options.seed !== undefined) throw invalid(`seed: only used for random ids, not with ${given}`)
  const common = { device: options.device ?? 'cpu', batchSize: options.batchSize ?? 'auto' }
  if (options.ids !== undefined) {
    // Held-out sequences are of one length, as documented; by default every one of them is run whole.
    const ids = checkIdRows(options.ids, Number.POSITIVE_INFINITY, 'ids', { sameLength: true })
    const { seqLen, windows } = idWindows(ids, options.seqLen)
    return { ...common, samples: options.samples ?? windows, seqLen, data: { source: 'ids' }, ids }
  }
  const sizes = { samples: options.samples ?? DEFAULT_SAMPLES, seqLen: options.seqLen ?? DEFAULT_SEQ_LEN }
  if (options.data !== undefined) return { ...common, ...sizes, data: { source: 'file', path: path.resolve(options.data) } }
  return { ...common, ...sizes, data: { source: 'random', seed: options.seed ?? 0 } }
}

/** The native request for resolved options and the models' vocabulary size. */
export function evaluationRequest(resolved: ResolvedOptions, vocabSize: number): ComparisonRequest {
  const { samples, seqLen, data } = resolved
  let source: ComparisonRequest['source']
  if (data.source === 'file') source = fileSource(data.path)
  else if (data.source === 'random') source = { kind: 'ids', ids: randomIds(samples, seqLen, vocabSize, data.seed) }
  else source = { kind: 'ids', ids: checkIdRows(resolved.ids, vocabSize, 'ids') }
  const batchSize =
    resolved.batchSize === 'auto' ? Math.max(1, Math.min(samples, Math.floor(LOGITS_BUDGET_BYTES / (seqLen * vocabSize * 4)))) : resolved.batchSize
  return { source, samples, seq_len: seqLen, batch_size: batchSize, device: resolved.device }
}

function checkComparable(original: ModelDescriptor, quantized: ModelDescriptor, quantizedDir: string): void {
  if (original.vocab_size !== quantized.vocab_size) {
    throw invalid(
      `quantized: ${quantizedDir} has a vocabulary of ${quantized.vocab_size} tokens and the original ${original.vocab_size}; ` +
        'their next-token distributions cannot be compared',
    )
  }
}

/**
 * Runs `original` and `quantized` over the same held-out tokens and compares their next-token distributions.
 * Without `data` or `ids`, `samples × seqLen` pseudo-random ids (seeded, see EvaluationData) are used; the
 * result's `data` says which source was used.
 *
 * @param original The unquantized model directory.
 * @param quantized A checkpoint of the same model, typically a ModelOpt-format FP8/NVFP4 export (read
 *   dequantized to f32); any checkpoint with the same vocabulary works.
 * @example
 *   const r = await evaluateModel('./Qwen3-30B-A3B', './Qwen3-30B-A3B-NVFP4', { data: './held-out.jsonl' })
 *   console.log(r.klMean, r.top1Agreement)
 * @throws MoeQuantError `E_OPTION_INVALID` for bad options or models with different vocabularies,
 *   `E_TOKENIZER_MISSING` (text data for an original without tokenizer.json), `E_CALIBRATION_EMPTY`,
 *   `E_CALIBRATION_ID_RANGE`, `E_TENSOR_NON_FINITE` (NaN/∞ logits), `E_CANCELLED`, checkpoint and layout codes.
 */
export async function evaluateModel(original: string, quantized: string, options: EvaluateOptions = {}): Promise<EvaluationResult> {
  for (const [name, dir] of [['original', original], ['quantized', quantized]] as const) checkDirectory(dir, name, 'a model directory path')
  const resolved = resolveOptions(options)
  const [originalDescriptor, quantizedDescriptor] = await Promise.all([describeModel(original), describeModel(quantized)])
  checkComparable(originalDescriptor, quantizedDescriptor, quantized)
  const request = evaluationRequest(resolved, originalDescriptor.vocab_size)
  const quantization = (await readQuantization(quantized))?.algo ?? null
  const text = await runTask(
    options,
    (event): EvaluationProgress => ({ stage: 'evaluate', ...(JSON.parse(event) as ComparisonProgress) }),
    (binding, token, onEvent) =>
      binding.compareModels(original, JSON.stringify(originalDescriptor), quantized, JSON.stringify(quantizedDescriptor), JSON.stringify(request), token, onEvent),
  )
  const report = JSON.parse(text) as ComparisonReport
  return {
    klMean: report.kl_mean,
    klMax: report.kl_max,
    klMaxAt: { sample: report.kl_max_at[0], position: report.kl_max_at[1] },
    top1Agreement: report.top1_agreement,
    positions: report.positions,
    perplexity: { original: Math.exp(report.nll_original), quantized: Math.exp(report.nll_quantized) },
    samples: report.samples,
    requestedSamples: report.requested_samples,
    seqLen: report.seq_len,
    data: resolved.data,
    quantization,
    peakRssBytes: report.peak_rss_bytes,
    seconds: report.seconds,
  }
}
