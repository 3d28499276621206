#!/usr/bin/env node
/** The `moe-quant` command line: `inspect`, `quantize` and `eval` (`moe-quant --help`, `moe-quant COMMAND --help`). */
import { closest } from '../api/options'
import { MoeQuantError } from '../errors'
import { packageVersion } from '../version'
import { cliWording, USAGE_EXIT, UsageError } from './args'
import { EVAL_USAGE, evalCommand } from './eval'
import { INSPECT_USAGE, inspectCommand } from './inspect'
import { QUANTIZE_USAGE, quantizeCommand } from './quantize'

const USAGE = `Usage:
  moe-quant inspect DIR [--json]   show a checkpoint's architecture, expert layout and quantization plan
  moe-quant quantize DIR --format fp8|nvfp4 --out OUT [options]
                                   calibrate, quantize and write a ModelOpt-format checkpoint
  moe-quant eval ORIGINAL QUANTIZED [options]
                                   compare a quantized checkpoint's next-token distributions with the original's

moe-quant COMMAND --help shows a command's options.

Options:
  -h, --help     show this help
  -V, --version  print the version`

const COMMANDS: Record<string, { usage: string; run: (argv: readonly string[]) => Promise<number> }> = {
  inspect: { usage: INSPECT_USAGE, run: inspectCommand },
  quantize: { usage: QUANTIZE_USAGE, run: (argv) => quantizeCommand(argv) },
  eval: { usage: EVAL_USAGE, run: evalCommand },
}

async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv
  if (command === '-V' || command === '--version') {
    process.stdout.write(`${packageVersion()}\n`)
    return 0
  }
  if (command === undefined || command === '-h' || command === '--help') {
    process.stdout.write(`${USAGE}\n`)
    return command === undefined ? USAGE_EXIT : 0
  }
  if (command === 'help') {
    const topic = rest[0]
    process.stdout.write(`${topic !== undefined && topic in COMMANDS ? COMMANDS[topic]?.usage : USAGE}\n`)
    return 0
  }
  const entry = COMMANDS[command]
  if (!entry) {
    const guess = closest(command, Object.keys(COMMANDS))
    throw new UsageError(`unknown command "${command}"${guess ? ` (did you mean ${guess}?)` : ''}; commands: ${Object.keys(COMMANDS).join(', ')}`, '')
  }
  return entry.run(rest)
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (error: unknown) => {
    if (error instanceof UsageError) {
      const help = error.command ? `moe-quant ${error.command} --help` : 'moe-quant --help'
      process.stderr.write(`moe-quant: ${error.message}\n(${help} lists the options) [${error.code}]\n`)
      process.exitCode = USAGE_EXIT
      return
    }
    if (error instanceof MoeQuantError) process.stderr.write(`moe-quant: ${cliWording(error.message)} [${error.code}]\n`)
    else process.stderr.write(`moe-quant: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`)
    process.exitCode = 1
  },
)
