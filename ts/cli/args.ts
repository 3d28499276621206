/**
 * Command-line arguments shared by every `moe-quant` command: `--flag value` and `--flag=value`, switches,
 * `--` ending the flags, `-h`/`--help`; usage errors that suggest the closest flag or value and exit with
 * status 2; the wording of library errors in terms of flags; and a clear error for a Hugging Face model id
 * given where a local directory is expected.
 */
import { existsSync } from 'node:fs'

import { closest, is, rules } from '../api/options'
import { MoeQuantError } from '../errors'

/** Exit status of a usage error (a wrong flag, value or argument count), as most CLIs use. */
export const USAGE_EXIT = 2

/** An error in the command line itself: printed with a pointer to the command's help, exit status 2. */
export class UsageError extends MoeQuantError {
  constructor(message: string, readonly command: string) {
    super('E_OPTION_INVALID', message)
  }
}

/** The flags a command takes: those with a value (`--samples N`) and switches (`--json`). */
export interface FlagSpec {
  values: readonly string[]
  /** Value flags that may be given more than once (every value is kept). */
  repeatable?: readonly string[]
  switches: readonly string[]
}

export interface ParsedArgs {
  help: boolean
  positional: string[]
  values: Map<string, string[]>
  switches: Set<string>
}

/** Parses `argv` against `spec` for `command` (named in errors). */
export function parseArgs(argv: readonly string[], spec: FlagSpec, command: string): ParsedArgs {
  const fail = (message: string): never => {
    throw new UsageError(message, command)
  }
  const parsed: ParsedArgs = { help: false, positional: [], values: new Map(), switches: new Set() }
  const known = [...spec.values, ...spec.switches]
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string
    if (arg === '-h' || arg === '--help') {
      parsed.help = true
      continue
    }
    if (arg === '--') {
      parsed.positional.push(...argv.slice(i + 1))
      break
    }
    if (!arg.startsWith('-') || arg === '-') {
      parsed.positional.push(arg)
      continue
    }
    const eq = arg.indexOf('=')
    const flag = eq > 0 ? arg.slice(0, eq) : arg
    if (spec.switches.includes(flag)) {
      if (eq > 0) fail(`${flag} takes no value, got ${JSON.stringify(arg)}`)
      parsed.switches.add(flag)
      continue
    }
    if (!spec.values.includes(flag)) {
      const guess = closest(flag, known)
      fail(`unknown option ${flag}${guess ? ` (did you mean ${guess}?)` : ''}`)
    }
    let value: string
    if (eq > 0) value = arg.slice(eq + 1)
    else {
      const next = argv[i + 1]
      if (next === undefined || (next.startsWith('--') && next.length > 2)) fail(`${flag} needs a value`)
      value = next as string
      i++
    }
    if (value.length === 0) fail(`${flag}: expected a value, got an empty string`)
    const seen = parsed.values.get(flag)
    if (seen && !spec.repeatable?.includes(flag)) fail(`${flag} given more than once`)
    parsed.values.set(flag, [...(seen ?? []), value])
  }
  return parsed
}

/** The single value of a flag, if given. */
export const value = (args: ParsedArgs, flag: string): string | undefined => args.values.get(flag)?.[0]

/** `"512"` → 512; anything but a plain positive decimal integer is a usage error (no `1e3`, `0x10`, `3.0`). */
export function positiveInteger(flag: string, text: string, command: string): number {
  const parsed = /^[1-9][0-9]*$/.test(text) ? Number(text) : Number.NaN
  if (!is.positiveInteger(parsed)) throw new UsageError(`${flag}: expected a positive integer, got ${JSON.stringify(text)}`, command)
  return parsed
}

/** `text` if it is one of `choices` (case ignored), else a usage error suggesting the closest. */
export function choice<T extends string>(flag: string, text: string, choices: readonly T[], command: string): T {
  const found = choices.find((c) => c === text.toLowerCase())
  if (found) return found
  const guess = closest(text, choices)
  throw new UsageError(`${flag}: expected ${choices.join(' or ')}, got ${JSON.stringify(text)}${guess ? ` (did you mean ${guess}?)` : ''}`, command)
}

/** A comma-separated list of devices, as the API's `devices` option: distinct GPUs, or `cpu` entries. */
export function devices(flag: string, text: string, command: string): string[] {
  const list = text.split(',').map((d) => d.trim())
  if (!rules.devices.test(list)) throw new UsageError(`${flag}: expected distinct GPUs such as cuda:0,cuda:1 (or cpu entries), got ${JSON.stringify(text)}`, command)
  return list
}

/** `cpu`, `cuda` or `cuda:N`, as the API's `device` option. */
export function device(flag: string, text: string, command: string): string {
  if (!rules.device.test(text)) throw new UsageError(`${flag}: expected cpu, cuda or cuda:N, got ${JSON.stringify(text)}`, command)
  return text
}

/**
 * Refuses a model argument that is not a local path but looks like a Hugging Face model id (`org/name`):
 * moe-quant reads local folders only and downloads nothing.
 */
export function localModel(text: string, command: string): string {
  if (!existsSync(text) && /^[A-Za-z0-9][\w.-]*\/[\w.-]+$/.test(text)) {
    const local = `./${text.slice(text.indexOf('/') + 1)}`
    throw new UsageError(
      `${text} is not a folder here, and moe-quant downloads nothing: it looks like a Hugging Face model id. ` +
        `Download it first, then pass the folder, e.g.\n  huggingface-cli download ${text} --local-dir ${local}\n  moe-quant ${command} ${local} …`,
      command,
    )
  }
  return text
}

/**
 * A library error's message in the command line's words: option names become the flags that set them
 * (`pass overwrite` → `pass --overwrite`, `calibration.samples` → `--samples` …).
 */
export function cliWording(message: string): string {
  const replacements: Array<[RegExp, string]> = [
    [/\bpass overwrite\b/g, 'pass --overwrite'],
    [/\(pass indivisible: "keep" to keep such linears unquantized\)/g, '(pass --keep-indivisible to keep such linears unquantized)'],
    [/\bcalibration\.samples\b/g, '--samples'],
    [/\bcalibration\.seqLen\b/g, '--seq-len'],
    [/\bcalibration\.batchSize\b/g, '--batch-size'],
    [/\bcalibration\.data\b/g, '--calib'],
    [/^maxShardSize\b/, '--max-shard-size'],
    [/^exclude\b/, '--exclude'],
    [/^device\b/, '--device'],
    [/^coverageReport\b/, '--coverage'],
  ]
  return replacements.reduce((text, [pattern, flag]) => text.replace(pattern, flag), message)
}
