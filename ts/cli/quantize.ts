/**
 * `moe-quant quantize DIR --format fp8|nvfp4 --out OUT [...]`: flag parsing (exported for tests), progress on
 * stderr, a summary table (or `--json`) on stdout, and Ctrl-C (SIGINT) or SIGTERM that cancel cleanly with exit
 * code 130 or 143.
 */
import { existsSync, statSync } from 'node:fs'
import * as path from 'node:path'

import { MoeQuantError } from '../errors'
import type { QuantFormatName, QuantizeOptions, QuantizeResult } from '../quantize-types'
import { bytes, table } from './format'
import { EXIT_CODES, interruptible } from './interrupt'
import { createProgress } from './progress'

/** The calibration text shipped with the package (`examples/calibration.jsonl`), used when `--calib` is absent. */
export const BUNDLED_CALIBRATION = path.join(__dirname, '..', '..', 'examples', 'calibration.jsonl')

export const QUANTIZE_USAGE = `Usage:
  moe-quant quantize DIR --format fp8|nvfp4 --out OUT [options]

Calibrates the model in DIR, quantizes it and writes a ModelOpt-format checkpoint to OUT.

Options:
  --format fp8|nvfp4      quantization format (required)
  --out OUT               output directory (required); written beside it, renamed into place when complete
  --calib FILE            calibration text: .jsonl of {"text": …} lines, or plain text
                          (default: the calibration text bundled with moe-quant)
  --samples N             calibration sequences (default 512)
  --seq-len L             tokens per sequence (default 512)
  --batch-size N|auto     sequences per forward batch (default auto)
  --max-shard-size SIZE   largest output shard, e.g. 5GB, 500MB, or bytes (default 5GB)
  --exclude PATTERN       also keep modules matching PATTERN (* wildcards) unquantized; repeatable
  --device DEVICE         cpu (default), cuda or cuda:N
  --overwrite             replace OUT if it exists and is not empty
  --keep-indivisible      NVFP4: keep linears whose input dimension is not a multiple of 16 unquantized
                          instead of stopping with an error
  --all-experts           route every calibration token through every expert, for statistics only
  --no-coverage           do not write the expert-coverage report (OUT/moe-quant-coverage.html)
  --json                  print the result as JSON instead of the summary table
  -h, --help              show this help`

/** What the command line asks for: the options of quantizeModel() minus the callbacks. */
export interface QuantizeCommandArgs {
  options: Omit<QuantizeOptions, 'onProgress' | 'signal'>
  json: boolean
}

export type ParsedQuantizeArgs = ({ help: false } & QuantizeCommandArgs) | { help: true }

const VALUE_FLAGS = ['--format', '--out', '--calib', '--samples', '--seq-len', '--batch-size', '--max-shard-size', '--exclude', '--device'] as const
const BOOLEAN_FLAGS = ['--overwrite', '--keep-indivisible', '--all-experts', '--no-coverage', '--json'] as const
type ValueFlag = (typeof VALUE_FLAGS)[number]
type BooleanFlag = (typeof BOOLEAN_FLAGS)[number]

const FORMATS: readonly QuantFormatName[] = ['fp8', 'nvfp4']

function invalid(message: string): never {
  throw new MoeQuantError('E_OPTION_INVALID', `${message}\n(moe-quant quantize --help lists the options)`)
}

/** `"512"` → 512; anything but a plain positive decimal integer is an error (no `1e3`, `0x10`, `12abc`, `3.0`). */
function positiveInteger(flag: string, text: string): number {
  const value = /^[1-9][0-9]*$/.test(text) ? Number(text) : Number.NaN
  if (!Number.isSafeInteger(value)) invalid(`${flag}: expected a positive integer, got ${JSON.stringify(text)}`)
  return value
}

/** `5GB`, `500 MB`, `1.5GiB` or a byte count; the library converts it (decimal units, as Hugging Face uses). */
function shardSize(text: string): number | string {
  if (/^[1-9][0-9]*$/.test(text) && Number.isSafeInteger(Number(text))) return Number(text)
  const match = /^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)$/i.exec(text)
  if (!match || !(Number(match[1]) > 0)) invalid(`--max-shard-size: expected a size such as 5GB or 500MB, or a byte count, got ${JSON.stringify(text)}`)
  return text
}

/**
 * Parses the arguments after `quantize`. Accepts `--flag value` and `--flag=value`; a flag other than
 * `--exclude` may appear once. Validates everything it can without touching the disk.
 * @throws MoeQuantError `E_OPTION_INVALID` with a message naming the flag, what it expects and what it got.
 */
export function parseQuantizeArgs(argv: readonly string[], defaults: { calibration?: string } = {}): ParsedQuantizeArgs {
  const values = new Map<ValueFlag, string>()
  const excludes: string[] = []
  const switches = new Set<BooleanFlag>()
  const positional: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string
    if (arg === '-h' || arg === '--help') return { help: true }
    if (arg === '--') {
      positional.push(...argv.slice(i + 1))
      break
    }
    if (!arg.startsWith('-') || arg === '-') {
      positional.push(arg)
      continue
    }
    const eq = arg.indexOf('=')
    const flag = eq > 0 ? arg.slice(0, eq) : arg
    if ((BOOLEAN_FLAGS as readonly string[]).includes(flag)) {
      if (eq > 0) invalid(`${flag} takes no value, got ${JSON.stringify(arg)}`)
      switches.add(flag as BooleanFlag)
      continue
    }
    if (!(VALUE_FLAGS as readonly string[]).includes(flag)) invalid(`unknown option ${flag}`)
    let value: string
    if (eq > 0) value = arg.slice(eq + 1)
    else {
      const next = argv[i + 1]
      if (next === undefined || (next.startsWith('--') && next.length > 2)) invalid(`${flag} needs a value`)
      value = next
      i++
    }
    if (value.length === 0) invalid(`${flag}: expected a value, got an empty string`)
    if (flag === '--exclude') excludes.push(value)
    else if (values.has(flag as ValueFlag)) invalid(`${flag} given more than once`)
    else values.set(flag as ValueFlag, value)
  }

  if (positional.length !== 1) {
    invalid(positional.length === 0 ? 'quantize needs the model directory' : `quantize takes one model directory, got ${positional.length}: ${positional.join(' ')}`)
  }
  const formatText = values.get('--format')
  if (formatText === undefined) invalid(`--format is required (${FORMATS.join(' or ')})`)
  const format = formatText.toLowerCase() as QuantFormatName
  if (!FORMATS.includes(format)) invalid(`--format: expected ${FORMATS.join(' or ')}, got ${JSON.stringify(formatText)}`)
  const output = values.get('--out')
  if (output === undefined) invalid('--out is required (the output directory)')

  const calibration: QuantizeOptions['calibration'] = { data: values.get('--calib') ?? defaults.calibration ?? BUNDLED_CALIBRATION }
  const samples = values.get('--samples')
  if (samples !== undefined) calibration.samples = positiveInteger('--samples', samples)
  const seqLen = values.get('--seq-len')
  if (seqLen !== undefined) calibration.seqLen = positiveInteger('--seq-len', seqLen)
  const batchSize = values.get('--batch-size')
  if (batchSize !== undefined) calibration.batchSize = batchSize === 'auto' ? 'auto' : positiveInteger('--batch-size', batchSize)
  if (switches.has('--all-experts')) calibration.allExperts = true

  const options: QuantizeCommandArgs['options'] = { model: positional[0] as string, output, format, calibration }
  const device = values.get('--device')
  if (device !== undefined) {
    if (!/^(cpu|cuda(:\d+)?)$/.test(device)) invalid(`--device: expected cpu, cuda or cuda:N, got ${JSON.stringify(device)}`)
    options.device = device
  }
  const maxShard = values.get('--max-shard-size')
  if (maxShard !== undefined) options.maxShardSize = shardSize(maxShard)
  if (excludes.length > 0) options.exclude = excludes
  if (switches.has('--overwrite')) options.overwrite = true
  if (switches.has('--keep-indivisible')) {
    if (format !== 'nvfp4') invalid('--keep-indivisible applies to --format nvfp4 only')
    options.indivisible = 'keep'
  }
  if (switches.has('--no-coverage')) options.coverageReport = false
  return { help: false, options, json: switches.has('--json') }
}

const seconds = (s: number): string => `${s < 1 ? s.toFixed(2) : s.toFixed(1)} s`
const mse = (x: number): string => x.toExponential(2)

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}

/** The human-readable summary of a finished run. */
export function renderSummary(result: QuantizeResult): string {
  const { before, after } = result.sizeBytes
  const ratio = after > 0 ? `${(before / after).toFixed(2)}× smaller` : 'n/a'
  const errors = result.layers.map((l) => l.relativeMse)
  const layerError =
    errors.length === 0
      ? 'none'
      : `min ${mse(Math.min(...errors))}, median ${mse(median(errors))}, max ${mse(Math.max(...errors))} over ${errors.length} layers`
  const uncalibrated =
    result.uncalibratedExperts.length === 0
      ? 'none'
      : result.uncalibratedExperts.map((l) => `layer ${l.layer}: ${l.experts.length} (${l.experts.join(', ')})`).join('; ')
  const rows: Array<[string, string]> = [
    ['format', result.format.toUpperCase()],
    ['size', `${bytes(before)} → ${bytes(after)} (${ratio})`],
    ['quantized tensors', result.quantizedTensors.toLocaleString('en-US')],
    ['calibration', `${result.tokens.toLocaleString('en-US')} tokens per layer`],
  ]
  if (result.layers.length > 8 || result.layers.length === 0) rows.push(['relative MSE', layerError])
  rows.push(['uncalibrated experts', uncalibrated])
  if (result.keptIndivisible.length > 0) rows.push(['kept (not ÷16)', result.keptIndivisible.join(', ')])
  if (result.skippedFiles.length > 0) rows.push(['files not copied', result.skippedFiles.join(', ')])
  rows.push(
    ['coverage report', result.coverageReportPath ?? 'none'],
    ['peak RSS', result.peakRssBytes === null ? 'unknown' : bytes(result.peakRssBytes)],
    [
      'time',
      `calibrate ${seconds(result.seconds.calibrate)} (load ${seconds(result.seconds.load)}, ` +
        `forward ${seconds(result.seconds.forward)}), quantize ${seconds(result.seconds.quantize)}, ` +
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
  const data = options.calibration.data
  if (data !== undefined && !existsSync(data)) throw new MoeQuantError('E_OPTION_INVALID', `--calib: no such file ${data}`, { file: data })
  if (data !== undefined && !statSync(data).isFile()) {
    throw new MoeQuantError('E_OPTION_INVALID', `--calib: ${data} is not a regular file (a directory, FIFO or device)`, { file: data })
  }
  // Loaded on use, so that `inspect`, `--help` and the flag parser work without the quantizer (and its tests
  // can import this file alone).
  const { quantizeModel } = require('../quantize') as typeof import('../quantize')
  const progress = createProgress(io.stderr)
  // The interruption notice and its outcome share one line: "interrupted, stopping … cancelled; …".
  const outcome = await interruptible(
    (signal) => quantizeModel({ ...options, onProgress: (event) => progress.update(event), signal }),
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
