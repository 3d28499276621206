#!/usr/bin/env node
/** The `moe-quant` command line: `inspect`, `quantize` and `eval` (`moe-quant --help`). */
import { MoeQuantError } from '../errors'
import { evalCommand } from './eval'
import { inspectCommand } from './inspect'
import { quantizeCommand } from './quantize'

const USAGE = `Usage:
  moe-quant inspect DIR [--json]   show a checkpoint's architecture, expert layout and quantization plan
  moe-quant quantize DIR --format fp8|nvfp4 --out OUT [options]
                                   calibrate, quantize and write a ModelOpt-format checkpoint
                                   (moe-quant quantize --help lists the options)
  moe-quant eval ORIGINAL QUANTIZED [--data FILE] [--samples N] [--seq-len L] [--json]
                                   compare a quantized checkpoint's next-token distributions with the original's

Options:
  --json      print the report as JSON (same data as the table)
  -h, --help  show this help`

interface Parsed {
  positional: string[]
  flags: Set<string>
}

function parseArgs(argv: readonly string[], known: readonly string[]): Parsed {
  const parsed: Parsed = { positional: [], flags: new Set() }
  for (const arg of argv) {
    if (arg.startsWith('-')) {
      if (!known.includes(arg)) throw new MoeQuantError('E_OPTION_INVALID', `unknown option ${arg}\n\n${USAGE}`)
      parsed.flags.add(arg)
    } else parsed.positional.push(arg)
  }
  return parsed
}

async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv
  if (!command || command === '-h' || command === '--help') {
    process.stdout.write(`${USAGE}\n`)
    return command ? 0 : 2
  }
  switch (command) {
    case 'inspect': {
      const args = parseArgs(rest, ['--json', '-h', '--help'])
      if (args.flags.has('-h') || args.flags.has('--help')) {
        process.stdout.write(`${USAGE}\n`)
        return 0
      }
      const [dir, ...extra] = args.positional
      if (!dir || extra.length > 0) throw new MoeQuantError('E_OPTION_INVALID', `inspect takes exactly one directory\n\n${USAGE}`)
      await inspectCommand(dir, args.flags.has('--json'))
      return 0
    }
    case 'quantize':
      return quantizeCommand(rest)
    case 'eval':
      return evalCommand(rest, USAGE)
    default:
      throw new MoeQuantError('E_OPTION_INVALID', `unknown command "${command}"\n\n${USAGE}`)
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (error: unknown) => {
    if (error instanceof MoeQuantError) process.stderr.write(`moe-quant: ${error.message} [${error.code}]\n`)
    else process.stderr.write(`moe-quant: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
    process.exitCode = 1
  },
)
