/**
 * `moe-quant eval ORIGINAL QUANTIZED [--data FILE] [--samples N] [--seq-len L] [--json]`: how far a quantized
 * checkpoint's next-token distributions are from the original's (evaluateModel), as a small table or JSON.
 */
import { MoeQuantError } from '../errors'
import { evaluateModel, type EvaluateOptions, type EvaluationResult } from '../evaluate'
import { table } from './format'

const VALUE_FLAGS = ['--data', '--samples', '--seq-len'] as const
const BOOLEAN_FLAGS = ['--json', '-h', '--help'] as const

interface EvalArgs {
  original: string
  quantized: string
  options: EvaluateOptions
  json: boolean
  help: boolean
}

/** Parses the arguments after `eval`; `usage` is appended to every usage error. */
export function parseEvalArgs(argv: readonly string[], usage: string): EvalArgs {
  const fail = (message: string): never => {
    throw new MoeQuantError('E_OPTION_INVALID', `${message}\n\n${usage}`)
  }
  const positional: string[] = []
  const values = new Map<string, string>()
  const flags = new Set<string>()
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string
    const [name, inline] = arg.startsWith('--') && arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined]
    if ((VALUE_FLAGS as readonly string[]).includes(name)) {
      const value = inline ?? argv[++i]
      if (value === undefined || value === '') fail(`${name} needs a value`)
      values.set(name, value as string)
    } else if ((BOOLEAN_FLAGS as readonly string[]).includes(arg)) flags.add(arg)
    else if (arg.startsWith('-')) fail(`unknown option ${arg}`)
    else positional.push(arg)
  }
  const help = flags.has('-h') || flags.has('--help')
  const [original, quantized, ...extra] = positional
  if (!help && (!original || !quantized || extra.length > 0)) fail('eval takes exactly two directories: ORIGINAL QUANTIZED')
  const integer = (flag: string): number | undefined => {
    const value = values.get(flag)
    if (value === undefined) return undefined
    if (!/^\d+$/.test(value) || Number(value) < 1 || !Number.isSafeInteger(Number(value))) fail(`${flag}: expected an integer ≥ 1, got ${JSON.stringify(value)}`)
    return Number(value)
  }
  const options: EvaluateOptions = {}
  const data = values.get('--data')
  if (data !== undefined) options.data = data
  const samples = integer('--samples')
  if (samples !== undefined) options.samples = samples
  const seqLen = integer('--seq-len')
  if (seqLen !== undefined) options.seqLen = seqLen
  return { original: original ?? '', quantized: quantized ?? '', options, json: flags.has('--json'), help }
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

/** Runs `eval`; returns the exit status. */
export async function evalCommand(argv: readonly string[], usage: string): Promise<number> {
  const args = parseEvalArgs(argv, usage)
  if (args.help) {
    process.stdout.write(`${usage}\n`)
    return 0
  }
  const result = await evaluateModel(args.original, args.quantized, args.options)
  process.stdout.write(args.json ? `${JSON.stringify(result, null, 2)}\n` : `${renderEvaluation(args.original, args.quantized, result)}\n`)
  return 0
}
