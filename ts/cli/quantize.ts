/**
 * `moe-quant quantize DIR --format fp8|nvfp4 --out OUT [...]`: flag parsing (exported for tests), progress on
 * stderr, a summary table (or `--json`) on stdout, and Ctrl-C (SIGINT) or SIGTERM that cancel cleanly with exit
 * code 130 or 143.
 */
import { existsSync, statSync } from 'node:fs'
import * as path from 'node:path'

import { is } from '../api/options'
import type { CalibrationOptions } from '../api/calibrate'
import { type QuantizeOptions, type QuantizeResult, resolveRecipe } from '../api/quantize'
import { MoeQuantError } from '../errors'
import { KV_CACHE_MODES } from '../export/kv-cache'
import { EXPORT_FORMATS } from '../export/compressed-tensors'
import { recipeFormats } from '../export/recipe'
import { FORMAT_NAMES, FORMATS } from '../formats'
import { choice, device, devices, type FlagSpec, localModel, parseArgs, positiveInteger, UsageError, value } from './args'
import { bytes, table } from './format'
import { EXIT_CODES, interruptible } from './interrupt'
import { createProgress, quantizeStage } from './progress'

/** The calibration text shipped with the package (`examples/calibration.jsonl`), used when `--calib` is absent. */
export const BUNDLED_CALIBRATION = path.join(__dirname, '..', '..', 'examples', 'calibration.jsonl')

export const QUANTIZE_USAGE = `Usage:
  moe-quant quantize DIR --format FORMAT --out OUT [options]

Calibrates the model in DIR, quantizes it and writes a ModelOpt-format checkpoint to OUT. The weight-only
formats need no calibration (and no calibration flags): any detected MoE model takes them.

Options:
  --format FORMAT         quantization format (required): fp8, nvfp4 (calibrated activation scales),
                          int4_awq, w4a8_awq, nvfp4_awq (INT4 or NVFP4 weights smoothed by an AWQ search
                          during calibration; TensorRT-LLM's W4A16_AWQ / W4A8_AWQ / NVFP4_AWQ); w4a16_nvfp4
                          (NVFP4 weights, 16-bit activations), fp8_pc_pt (FP8 weights with a scale per
                          output channel, activations scaled per token by the engine), fp8_pb_wo
                          (FP8 weights with a scale per 128x128 block, 16-bit activations), mxfp8 and mxfp4
                          (FP8 or FP4 weights with a power-of-two scale per 32, activations MX-scaled by the
                          engine)
  --out OUT               output directory (required); written beside it, renamed into place when complete
  --calib FILE            calibration documents: .jsonl ({"text": …} or {"messages": […]} per line),
                          .json (an array of documents) or plain text (documents separated by blank lines)
                          (default: the calibration text bundled with moe-quant)
  --samples N             calibration sequences (default 512)
  --seq-len L             tokens per sequence (default 512)
  --batch-size N|auto     sequences per forward batch (default auto)
  --max-shard-size SIZE   largest output shard, e.g. 5GB, 500MB, or bytes (default 5GB)
  --exclude PATTERN       also keep modules matching PATTERN (* wildcards) unquantized; repeatable
  --device DEVICE         cpu (default), cuda or cuda:N
  --devices LIST          several GPUs splitting the calibration, e.g. cuda:0,cuda:1 (same output as one)
  --overwrite             replace OUT if it exists and is not empty
  --keep-indivisible      block formats: keep linears whose input dimension is not a multiple of their block
                          (NVFP4 ${FORMATS.nvfp4.groupSize}, MXFP8/MXFP4 ${FORMATS.mxfp8.groupSize}, INT4 AWQ ${FORMATS.int4_awq.groupSize}) unquantized instead of stopping with an error
  --scope all|mlp|experts which linears to quantize (default all): mlp leaves attention in 16 bits, experts
                          quantizes the routed experts only (ModelOpt's *_mlp_only / *_experts_only presets)
  --recipe FILE           mixed precision (MIXED_PRECISION): a JSON recipe {"rules": [{"modules": PATTERN,
                          "format": FORMAT or null}, …]}; a module takes the format of the last rule matching its
                          name (* wildcards), else --format; null keeps it in 16 bits
  --kv-cache MODE         the KV cache, as hf_ptq's --kv_cache_qformat: fp8_cast (default: FP8 with a constant
                          scale), fp8 (FP8 with calibrated key and value scales; calibrated formats only), none
  --export-format FORM    modelopt (default: ModelOpt's checkpoint, hf_quant_config.json) or compressed-tensors
                          (vLLM's native format, as llm-compressor writes it: nvfp4, w4a16_nvfp4, fp8,
                          fp8_pc_pt and fp8_pb_wo; no --recipe; KV cache in 16 bits unless --kv-cache fp8)
  --all-experts           route every calibration token through every expert, for statistics only
  --coverage FILE         write the expert-coverage report to FILE (default: OUT/moe-quant-coverage.html)
  --no-coverage           do not write the expert-coverage report
  --json                  print the result as JSON instead of the summary table
  -h, --help              show this help`

/** What the command line asks for: the options of quantizeModel() minus the callbacks. */
export interface QuantizeCommandArgs {
  options: Omit<QuantizeOptions, 'onProgress' | 'signal'>
  json: boolean
}

export type ParsedQuantizeArgs = ({ help: false } & QuantizeCommandArgs) | { help: true }

const FLAGS: FlagSpec = {
  values: ['--format', '--out', '--calib', '--samples', '--seq-len', '--batch-size', '--max-shard-size', '--exclude', '--device', '--devices', '--coverage', '--scope', '--kv-cache', '--recipe', '--export-format'],
  repeatable: ['--exclude'],
  switches: ['--overwrite', '--keep-indivisible', '--all-experts', '--no-coverage', '--json'],
}

function invalid(message: string): never {
  throw new UsageError(message, 'quantize')
}

/**
 * `5GB`, `500 MB`, `1.5GiB` or a byte count, stricter in its spelling than the API (no spaces around it, a unit
 * after a fraction); the library converts it (decimal units, as Hugging Face uses).
 */
function shardSize(text: string): number | string {
  if (/^[1-9][0-9]*$/.test(text) && Number.isSafeInteger(Number(text))) return Number(text)
  const spelled = /^\d+(?:\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$/i.test(text)
  if (!spelled || !is.size(text)) invalid(`--max-shard-size: expected a size such as 5GB or 500MB, or a byte count, got ${JSON.stringify(text)}`)
  return text
}

/**
 * Parses the arguments after `quantize`. Accepts `--flag value` and `--flag=value`; a flag other than
 * `--exclude` may appear once. Validates everything it can without touching the disk.
 * @throws UsageError (`E_OPTION_INVALID`, exit status 2) naming the flag, what it expects and what it got.
 */
export function parseQuantizeArgs(argv: readonly string[], defaults: { calibration?: string } = {}): ParsedQuantizeArgs {
  const args = parseArgs(argv, FLAGS, 'quantize')
  if (args.help) return { help: true }
  const { positional } = args
  if (positional.length !== 1) {
    invalid(positional.length === 0 ? 'quantize needs the model directory' : `quantize takes one model directory, got ${positional.length}: ${positional.join(' ')}`)
  }
  const formatText = value(args, '--format')
  if (formatText === undefined) invalid(`--format is required (${FORMAT_NAMES.join(' or ')})`)
  const format = choice('--format', formatText, FORMAT_NAMES, 'quantize')
  const output = value(args, '--out')
  if (output === undefined) invalid('--out is required (the output directory)')
  const integer = (flag: string, text: string): number => positiveInteger(flag, text, 'quantize')

  const options: QuantizeCommandArgs['options'] = { model: positional[0] as string, output, format }
  const recipeFile = value(args, '--recipe')
  const recipe = recipeFile === undefined ? undefined : resolveRecipe(recipeFile)
  if (recipe) options.recipe = recipe
  // A recipe that gives a module a calibrated format makes the run calibrate.
  const calibrated = recipeFormats(format, recipe).some((f) => FORMATS[f].calibrated)
  if (calibrated) {
    const calibration: CalibrationOptions = { data: value(args, '--calib') ?? defaults.calibration ?? BUNDLED_CALIBRATION }
    const samples = value(args, '--samples')
    if (samples !== undefined) calibration.samples = integer('--samples', samples)
    const seqLen = value(args, '--seq-len')
    if (seqLen !== undefined) calibration.seqLen = integer('--seq-len', seqLen)
    const batchSize = value(args, '--batch-size')
    if (batchSize !== undefined) calibration.batchSize = batchSize === 'auto' ? 'auto' : integer('--batch-size', batchSize)
    if (args.switches.has('--all-experts')) calibration.allExperts = true
    options.calibration = calibration
  } else {
    const given = ['--calib', '--samples', '--seq-len', '--batch-size', '--coverage'].filter((flag) => args.values.has(flag))
    if (args.switches.has('--all-experts')) given.push('--all-experts')
    if (given.length > 0) invalid(`${given.join(', ')}: --format ${format}${recipe ? ' with this recipe' : ''} is weight-only and runs no calibration`)
  }
  const deviceText = value(args, '--device')
  if (deviceText !== undefined) options.device = device('--device', deviceText, 'quantize')
  const devicesText = value(args, '--devices')
  if (devicesText !== undefined) options.devices = devices('--devices', devicesText, 'quantize')
  if (deviceText !== undefined && devicesText !== undefined) throw new UsageError('give --device or --devices, not both', 'quantize')
  const maxShard = value(args, '--max-shard-size')
  if (maxShard !== undefined) options.maxShardSize = shardSize(maxShard)
  const excludes = args.values.get('--exclude')
  if (excludes) options.exclude = excludes
  if (args.switches.has('--overwrite')) options.overwrite = true
  const scope = value(args, '--scope')
  if (scope !== undefined) options.scope = choice('--scope', scope, ['all', 'mlp', 'experts'] as const, 'quantize')
  const kvCache = value(args, '--kv-cache')
  if (kvCache !== undefined) {
    options.kvCache = choice('--kv-cache', kvCache, KV_CACHE_MODES, 'quantize')
    if (options.kvCache === 'fp8' && !calibrated) invalid(`--kv-cache fp8 calibrates the key and value scales: --format ${format} is weight-only and runs no calibration (use --kv-cache fp8_cast)`)
  }
  const exportFormat = value(args, '--export-format')
  if (exportFormat !== undefined) options.exportFormat = choice('--export-format', exportFormat, EXPORT_FORMATS, 'quantize')
  if (args.switches.has('--keep-indivisible')) {
    if (FORMATS[format].groupSize === null) invalid(`--keep-indivisible applies to the block formats only (${FORMAT_NAMES.filter((f) => FORMATS[f].groupSize !== null).join(', ')})`)
    options.indivisible = 'keep'
  }
  const coverage = value(args, '--coverage')
  if (coverage !== undefined && args.switches.has('--no-coverage')) invalid('--coverage and --no-coverage: give at most one of them')
  if (coverage !== undefined) options.coverageReport = coverage
  if (args.switches.has('--no-coverage')) options.coverageReport = false
  return { help: false, options, json: args.switches.has('--json') }
}

const seconds = (s: number): string => `${s < 1 ? s.toFixed(2) : s.toFixed(1)} s`
const mse = (x: number): string => x.toExponential(2)

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}

const KV_CACHE_LABELS = { fp8: 'FP8, calibrated scales', fp8_cast: 'FP8, constant scale', none: 'not quantized' } as const

/** The human-readable summary of a finished run. */
/** The count of quantized tensors, and how many of them the GPU quantized where it did. */
function quantizedTensors(result: QuantizeResult): string {
  const count = result.quantizedTensors.toLocaleString('en-US')
  return result.quantizedOnDevice > 0 ? `${count} (${result.quantizedOnDevice.toLocaleString('en-US')} on the GPU)` : count
}

export function renderSummary(result: QuantizeResult): string {
  const { before, after } = result.sizeBytes
  const ratio = after > 0 ? `${(before / after).toFixed(2)}× smaller` : 'n/a'
  const errors = result.layers.map((l) => l.relativeMse)
  const layerError =
    errors.length === 0
      ? 'none'
      : `min ${mse(Math.min(...errors))}, median ${mse(median(errors))}, max ${mse(Math.max(...errors))} over ${errors.length} layers`
  const onDevice = result.quantizedOnDevice > 0 ? `, experts quantized on the GPU ${seconds(result.seconds.quantizeOnDevice)}` : ''
  const uncalibrated =
    result.uncalibratedExperts.length === 0
      ? 'none'
      : result.uncalibratedExperts.map((l) => `layer ${l.layer}: ${l.experts.length} (${l.experts.join(', ')})`).join('; ')
  const rows: Array<[string, string]> = [
    ['format', `${result.format.toUpperCase()}${result.exportFormat === 'compressed-tensors' ? ' (compressed-tensors)' : ''}`],
    ['KV cache', KV_CACHE_LABELS[result.kvCache]],
    ['size', `${bytes(before)} → ${bytes(after)} (${ratio})`],
    ['quantized tensors', quantizedTensors(result)],
    ['calibration', `${result.tokens.toLocaleString('en-US')} tokens per layer`],
  ]
  if (result.layers.length > 8 || result.layers.length === 0) rows.push(['relative MSE', layerError])
  rows.push(['uncalibrated experts', uncalibrated])
  if (result.keptIndivisible.length > 0) rows.push([`kept (not ÷${FORMATS[result.format].groupSize})`, result.keptIndivisible.join(', ')])
  if (result.skippedFiles.length > 0) rows.push(['files not copied', result.skippedFiles.join(', ')])
  rows.push(
    ['coverage report', result.coverageReportPath ?? 'none'],
    ['peak RSS', result.peakRssBytes === null ? 'unknown' : bytes(result.peakRssBytes)],
    [
      'time',
      `calibrate ${seconds(result.seconds.calibrate)} (load ${seconds(result.seconds.load)}, ` +
        `forward ${seconds(result.seconds.forward)}${onDevice}), quantize ${seconds(result.seconds.quantize)}, ` +
        `write ${seconds(result.seconds.write)}, total ${seconds(result.seconds.total)}`,
    ],
    ['output', result.output],
  )
  const width = Math.max(...rows.map(([k]) => k.length))
  const out = rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`)
  if (result.layers.length > 0 && result.layers.length <= 8) {
    out.push('', table(['layer', 'tensors', 'relative MSE'], result.layers.map((l) => [String(l.layer), String(l.tensors), mse(l.relativeMse)])))
  }
  return out.join('\n')
}

/** Where the command's text goes; process streams by default, replaceable in tests. */
export interface CommandIo {
  stdout: { write(text: string): unknown }
  stderr: { write(text: string): unknown; isTTY?: boolean; columns?: number }
}

/**
 * Runs quantizeModel() with progress on stderr and Ctrl-C / SIGTERM wired to its `signal`. Resolves to the
 * result, or to the exit status when the run was stopped by a signal (the message is already printed).
 */
export async function runQuantize(
  options: QuantizeCommandArgs['options'],
  io: CommandIo = { stdout: process.stdout, stderr: process.stderr },
): Promise<QuantizeResult | number> {
  const data = options.calibration?.data
  if (data !== undefined && !existsSync(data)) throw new UsageError(`--calib: no such file ${data}`, 'quantize')
  if (data !== undefined && !statSync(data).isFile()) throw new UsageError(`--calib: ${data} is not a regular file (a directory, FIFO or device)`, 'quantize')
  // Loaded on use, so that `inspect`, `--help` and the flag parser work without the quantizer (and its tests
  // can import this file alone).
  const { quantizeModel } = require('../api/quantize') as typeof import('../api/quantize')
  const progress = createProgress(io.stderr)
  // The interruption notice and its outcome share one line: "interrupted, stopping … cancelled; …".
  const outcome = await interruptible(
    (signal) => quantizeModel({ ...options, onProgress: (event) => progress.update(quantizeStage(event)), signal }),
    (signal) => {
      progress.stop()
      const what = signal === 'SIGINT' ? 'interrupted' : 'terminated (SIGTERM)'
      io.stderr.write(`${io.stderr.isTTY ? '\r\x1b[2K' : ''}moe-quant: ${what}, stopping at the next layer boundary (Ctrl-C again to quit now)… `)
    },
    () => io.stderr.write('quitting; a partial output may remain beside OUT (the next run for OUT removes it)\n'),
    (error) => error instanceof MoeQuantError && error.code === 'E_CANCELLED',
  ).finally(() => progress.stop())
  if ('stoppedBy' in outcome) {
    io.stderr.write(`cancelled; nothing was written to ${options.output}\n`)
    return EXIT_CODES[outcome.stoppedBy]
  }
  if (outcome.lateSignal) io.stderr.write('too late, the run had already finished\n')
  return outcome.value
}

/** `moe-quant quantize …`: returns the process exit code (0, or 130/143 when stopped by SIGINT/SIGTERM). */
export async function quantizeCommand(argv: readonly string[], io: CommandIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const args = parseQuantizeArgs(argv)
  if (args.help) {
    io.stdout.write(`${QUANTIZE_USAGE}\n`)
    return 0
  }
  localModel(args.options.model, 'quantize')
  const result = await runQuantize(args.options, io)
  if (typeof result === 'number') return result
  if (args.json) {
    io.stdout.write(`${JSON.stringify(result, null, 2)}\n`)
    return 0
  }
  io.stdout.write(`${renderSummary(result)}\n`)
  for (const warning of result.warnings) io.stderr.write(`warning: ${warning}\n`)
  return 0
}
