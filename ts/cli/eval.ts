/**
 * `moe-quant eval ORIGINAL QUANTIZED [--data FILE] [--samples N] [--seq-len L] [--device D] [--json]`: how far
 * a quantized checkpoint's next-token distributions are from the original's (evaluateModel), as a small table
 * or JSON, with progress on stderr.
 */
import { evaluateModel, type EvaluateOptions, type EvaluationResult } from '../api/evaluate'
import { MoeQuantError } from '../errors'
import { device, type FlagSpec, localModel, parseArgs, positiveInteger, UsageError, value } from './args'
import { table } from './format'
import { EXIT_CODES, interruptible } from './interrupt'
import { createProgress, evaluateStage } from './progress'

export const EVAL_USAGE = `Usage:
  moe-quant eval ORIGINAL QUANTIZED [options]

Runs the original and the quantized model over the same held-out tokens and compares their next-token
distributions: mean and max KL divergence, top-1 agreement and each model's perplexity.

Options:
  --data FILE      held-out documents (.jsonl, .json or plain text, as --calib of quantize), tokenized with
                   the original's tokenizer (default: seeded random token ids)
  --samples N      sequences (default 8)
  --seq-len L      tokens per sequence (default 128)
  --device DEVICE  cpu (default, f32), cuda or cuda:N (bf16, with the CUDA build)
  --json           print the result as JSON
  -h, --help       show this help`

const FLAGS: FlagSpec = { values: ['--data', '--samples', '--seq-len', '--device'], switches: ['--json'] }

interface EvalArgs {
  original: string
  quantized: string
  options: EvaluateOptions
  json: boolean
  help: boolean
}

/** Parses the arguments after `eval`. @throws UsageError naming the flag or argument. */
export function parseEvalArgs(argv: readonly string[]): EvalArgs {
  const args = parseArgs(argv, FLAGS, 'eval')
  const [original, quantized, ...extra] = args.positional
  if (!args.help && (!original || !quantized || extra.length > 0)) throw new UsageError('eval takes exactly two directories: ORIGINAL QUANTIZED', 'eval')
  const options: EvaluateOptions = {}
  const data = value(args, '--data')
  if (data !== undefined) options.data = data
  const samples = value(args, '--samples')
  if (samples !== undefined) options.samples = positiveInteger('--samples', samples, 'eval')
  const seqLen = value(args, '--seq-len')
  if (seqLen !== undefined) options.seqLen = positiveInteger('--seq-len', seqLen, 'eval')
  const deviceText = value(args, '--device')
  if (deviceText !== undefined) options.device = device('--device', deviceText, 'eval')
  return { original: original ?? '', quantized: quantized ?? '', options, json: args.switches.has('--json'), help: args.help }
}

function describeData(result: EvaluationResult): string {
  switch (result.data.source) {
    case 'file':
      return result.data.path
    case 'ids':
      return 'given ids'
    case 'random':
      return `random ids (seed ${result.data.seed})`
  }
}

export function renderEvaluation(original: string, quantized: string, result: EvaluationResult): string {
  const out = [`${original} → ${quantized}${result.quantization ? ` (${result.quantization})` : ''}`]
  out.push(
    table(
      ['KL mean', 'KL max', 'top-1 agreement', 'positions', 'data'],
      [
        [
          result.klMean.toExponential(3),
          result.klMax.toExponential(3),
          `${(result.top1Agreement * 100).toFixed(2)}%`,
          `${result.samples}×${result.seqLen} = ${result.positions}`,
          describeData(result),
        ],
      ],
    ),
  )
  out.push('KL(P_original ‖ P_quantized) in nats over every next-token position; weights dequantized, activations in f32')
  if (result.data.source !== 'random') {
    out.push(`perplexity: original ${result.perplexity.original.toFixed(3)}, quantized ${result.perplexity.quantized.toFixed(3)}`)
  }
  if (result.samples < result.requestedSamples) {
    out.push(`note: the data gave ${result.samples} sequences of ${result.seqLen} tokens, fewer than the ${result.requestedSamples} asked for`)
  }
  return out.join('\n')
}

/** Runs `eval` with progress on stderr and Ctrl-C / SIGTERM cancelling it; returns the exit status. */
export async function evalCommand(argv: readonly string[]): Promise<number> {
  const args = parseEvalArgs(argv)
  if (args.help) {
    process.stdout.write(`${EVAL_USAGE}\n`)
    return 0
  }
  const [original, quantized] = [localModel(args.original, 'eval'), localModel(args.quantized, 'eval')]
  const progress = createProgress(process.stderr)
  const outcome = await interruptible(
    (signal) => evaluateModel(original, quantized, { ...args.options, signal, onProgress: (event) => progress.update(evaluateStage(event)) }),
    () => {
      progress.stop()
      process.stderr.write('moe-quant: stopping… ')
    },
    () => process.stderr.write('quitting\n'),
    (error) => error instanceof MoeQuantError && error.code === 'E_CANCELLED',
  ).finally(() => progress.stop())
  if ('stoppedBy' in outcome) {
    process.stderr.write('cancelled\n')
    return EXIT_CODES[outcome.stoppedBy]
  }
  const result = outcome.value
  process.stdout.write(args.json ? `${JSON.stringify(result, null, 2)}\n` : `${renderEvaluation(original, quantized, result)}\n`)
  return 0
}
