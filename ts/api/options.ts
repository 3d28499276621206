/**
 * The one validator of what callers pass to the public functions. JavaScript callers are not protected by the
 * types, so every option is checked before any work: each verb declares a table of its options (a rule per
 * key, or null for one checked elsewhere or taking any value), and checkOptions refuses unknown (often
 * misspelled) keys with the closest match, then every value that breaks its rule, with a message that says the
 * option, what was expected and what was given. Sizes, devices, documents and token ids have their rules here
 * too; token ids follow the native core's rule (rows of any length, each cut into windows of `seqLen` ids).
 */
import * as path from 'node:path'

import { MoeQuantError } from '../errors'
import type { CalibrationRequest } from '../native/contract'

/** Stands for the missing element of a sparse array in messages ("got a hole"). */
const HOLE: unique symbol = Symbol('a hole')

/** A value as messages show it: JSON, with bigints as `5n` (JSON has none) and anything else by its kind. */
function describeValue(value: unknown): string {
  if (value === HOLE) return 'a hole'
  if (typeof value === 'bigint') return `${value}n`
  if (typeof value === 'function') return 'a function'
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return Array.isArray(value) ? 'an array' : 'an object'
  }
}

/** The error for option `name`: "name: expected …, got …". */
export function invalidOption(name: string, expected: string, actual: unknown): MoeQuantError {
  return new MoeQuantError('E_OPTION_INVALID', `${name}: expected ${expected}, got ${describeValue(actual)}`)
}

/** The devices moe-quant names: `cpu`, `cuda`, `cuda:N`. */
const DEVICE = /^(cpu|cuda(:\d+)?)$/

const UNITS: Record<string, number> = { B: 1, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12, KIB: 2 ** 10, MIB: 2 ** 20, GIB: 2 ** 30, TIB: 2 ** 40 }

/** `'5GB'` → 5e9 bytes (decimal units as Hugging Face uses them; KiB/MiB/GiB binary), or undefined if not a size. */
export function parseSize(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isSafeInteger(value) && value > 0 ? value : undefined
  if (typeof value !== 'string') return undefined
  const match = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]I?B|B)?\s*$/i.exec(value)
  if (!match) return undefined
  const bytes = Math.round(Number(match[1]) * (UNITS[(match[2] ?? 'B').toUpperCase()] ?? Number.NaN))
  return Number.isSafeInteger(bytes) && bytes > 0 ? bytes : undefined
}

/** GPUs named as `cuda:N` (`cuda` is `cuda:0`); undefined for the CPU. */
const gpuOrdinal = (device: string): number | undefined => (device === 'cpu' ? undefined : Number(device.split(':')[1] ?? 0))

/** The small predicates option rules are made of. */
export const is = {
  object: (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value),
  nonEmptyString: (value: unknown): value is string => typeof value === 'string' && value.length > 0,
  function: (value: unknown): value is (...args: never[]) => unknown => typeof value === 'function',
  positiveInteger: (value: unknown): value is number => typeof value === 'number' && Number.isSafeInteger(value) && value >= 1,
  device: (value: unknown): value is string => typeof value === 'string' && DEVICE.test(value),
  /** A non-empty list of devices of one kind: distinct GPUs, or `cpu` entries. */
  devices: (value: unknown): value is string[] => {
    if (!Array.isArray(value) || value.length === 0 || !value.every((d) => is.device(d))) return false
    const gpus = (value as string[]).map(gpuOrdinal)
    const onGpu = gpus.filter((g) => g !== undefined)
    return onGpu.length === 0 || (onGpu.length === gpus.length && new Set(onGpu).size === gpus.length)
  },
  size: (value: unknown): value is number | string => parseSize(value) !== undefined,
  oneOf:
    <T>(choices: readonly T[]) =>
    (value: unknown): value is T =>
      choices.includes(value as T),
  arrayOf:
    <T>(item: (value: unknown) => value is T) =>
    (value: unknown): value is T[] =>
      Array.isArray(value) && value.every((element) => item(element)),
}

/** What a valid value of one option is: a test, and the words messages use for it. */
export interface Rule {
  test: (value: unknown) => boolean
  /** "an integer ≥ 1", "a directory path" … */
  expected: string
  /** Whether leaving the option out is an error too. */
  required?: boolean
}

/** One rule per option of `T` (null: any value, or checked where it is used); every key of `T` is listed. */
export type Rules<T> = { readonly [K in keyof Required<T>]: Rule | null }

/** Rules options of several functions share. */
export const rules = {
  device: { test: is.device, expected: "'cpu', 'cuda' or 'cuda:N'" },
  devices: { test: is.devices, expected: "a non-empty array of distinct GPUs ('cuda:0', 'cuda:1', …) or of 'cpu' entries" },
  positiveInteger: { test: is.positiveInteger, expected: 'an integer ≥ 1' },
  batchSize: { test: (value: unknown) => value === 'auto' || is.positiveInteger(value), expected: 'an integer ≥ 1' },
  filePath: { test: is.nonEmptyString, expected: 'a file path' },
  directory: { test: is.nonEmptyString, expected: 'a directory path', required: true },
  callback: { test: is.function, expected: 'a function' },
} satisfies Record<string, Rule>

/** Levenshtein distance between `a` and `b`. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const current = [i]
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1)
      current.push(Math.min((previous[j] as number) + 1, (current[j - 1] as number) + 1, substitution))
    }
    previous = current
  }
  return previous[b.length] as number
}

/** The candidate closest to `word` (case ignored), if it is close enough to be a likely misspelling. */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined
  let bestDistance = Number.POSITIVE_INFINITY
  for (const candidate of candidates) {
    const distance = editDistance(word.toLowerCase(), candidate.toLowerCase())
    if (distance < bestDistance) [best, bestDistance] = [candidate, distance]
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined
}

/**
 * Refuses keys of `options` that are not in `allowed`; `prefix` names the object in messages (`''` for the
 * top level, `'calibration.'` for a nested one).
 * @throws MoeQuantError `E_OPTION_INVALID`: "kvcache: unknown option (did you mean kvCache?); valid options: …"
 */
function rejectUnknownKeys(options: object, allowed: readonly string[], prefix = ''): void {
  for (const key of Object.keys(options)) {
    if (allowed.includes(key)) continue
    const guess = closest(key, allowed)
    throw new MoeQuantError(
      'E_OPTION_INVALID',
      `${prefix}${key}: unknown option${guess ? ` (did you mean ${prefix}${guess}?)` : ''}; valid options: ${allowed.map((k) => prefix + k).join(', ')}`,
    )
  }
}

/**
 * Checks an options object against its table: `options` must be an object (`what` names it in messages:
 * "quantizeModel(options)"), its keys those of `table`, and each value given (or required) must pass its rule.
 * @throws MoeQuantError `E_OPTION_INVALID` naming the first offending option (`prefix` + key)
 */
export function checkOptions<T extends object>(options: T, table: Rules<T>, what: string, prefix = ''): void {
  if (!is.object(options)) throw invalidOption(what, 'an options object', options)
  rejectUnknownKeys(options, Object.keys(table), prefix)
  for (const [key, rule] of Object.entries(table) as Array<[string, Rule | null]>) {
    const value = (options as Record<string, unknown>)[key]
    if (rule === null || (value === undefined && !rule.required)) continue
    if (!rule.test(value)) throw invalidOption(`${prefix}${key}`, rule.expected, value)
  }
}

/** A model directory given as a positional argument (`what`: "inspectModel(dir)"). @throws MoeQuantError `E_OPTION_INVALID` */
export function checkDirectory(dir: unknown, what: string, expected = 'a directory path string'): string {
  if (!is.nonEmptyString(dir)) throw invalidOption(what, expected, dir)
  return dir
}

/** A file of documents, read as its extension says: `.jsonl`, `.json`, anything else plain text. */
export function fileSource(file: string): Extract<CalibrationRequest['source'], { path: string }> {
  const resolved = path.resolve(file)
  const extension = path.extname(resolved).toLowerCase()
  return { kind: extension === '.jsonl' ? 'jsonl' : extension === '.json' ? 'json' : 'text', path: resolved }
}

/** `name` (documents in memory): a non-empty array of strings (no holes). */
export function checkTexts(texts: unknown, name: string): string[] {
  if (!Array.isArray(texts) || texts.length === 0) throw invalidOption(name, 'a non-empty array of strings', texts)
  for (let i = 0; i < texts.length; i++) {
    if (typeof texts[i] !== 'string') throw invalidOption(`${name}[${i}]`, 'a string', i in texts ? texts[i] : HOLE)
  }
  return texts as string[]
}

/** `name` (conversations in memory): a non-empty array of non-empty arrays of messages with a string `role`. */
export function checkConversations(conversations: unknown, name: string): Array<Array<Record<string, unknown>>> {
  if (!Array.isArray(conversations) || conversations.length === 0) throw invalidOption(name, 'a non-empty array of conversations', conversations)
  for (let c = 0; c < conversations.length; c++) {
    const conversation: unknown = conversations[c]
    if (!Array.isArray(conversation) || conversation.length === 0) throw invalidOption(`${name}[${c}]`, 'a non-empty array of messages', conversation)
    for (let m = 0; m < conversation.length; m++) {
      const message: unknown = conversation[m]
      if (!is.object(message) || typeof message.role !== 'string') {
        throw invalidOption(`${name}[${c}][${m}]`, "a message such as { role: 'user', content: '…' }", message)
      }
    }
  }
  return conversations as Array<Array<Record<string, unknown>>>
}

/** One row of token ids: a number array, or a typed array (`Int32Array`, `Uint32Array`, `BigInt64Array` …). */
export type IdRow = ArrayLike<number | bigint>

/**
 * Token ids given by the caller (`what` names them in errors), for calibration, evaluation and logits alike:
 * a non-empty array of non-empty rows, arrays or typed arrays of numbers or bigints, checked element by element
 * (holes of sparse arrays included), every id an integer in `[0, vocabSize)`. Returns plain number arrays,
 * ready to cross to the native core as JSON. With `sameLength`, every row must be as long as the first: for
 * the functions that run the rows as one batch rather than cutting them into windows.
 * @throws MoeQuantError `E_OPTION_INVALID` naming the row and position of a hole, a value that is not an
 *   integer, or a row of another length; `E_CALIBRATION_ID_RANGE` for an id outside the vocabulary.
 */
export function checkIdRows(rows: unknown, vocabSize: number, what: string, { sameLength = false } = {}): number[][] {
  const invalid = (message: string): MoeQuantError => new MoeQuantError('E_OPTION_INVALID', `${what}${message}`)
  if (!Array.isArray(rows) || rows.length === 0) throw invalid(': expected a non-empty array of token-id rows (arrays or typed arrays)')
  const out: number[][] = []
  for (let r = 0; r < rows.length; r++) {
    if (!(r in rows)) throw invalid(`[${r}]: a hole in a sparse array; expected a row of token ids`)
    const row: unknown = rows[r]
    const isRow = Array.isArray(row) || (ArrayBuffer.isView(row) && !(row instanceof DataView))
    if (!isRow) throw invalid(`[${r}]: expected an array or typed array of token ids, got ${describeValue(row)}`)
    const ids = row as IdRow
    if (ids.length === 0) throw invalid(`[${r}]: an empty row`)
    const plain = new Array<number>(ids.length)
    for (let t = 0; t < ids.length; t++) {
      if (Array.isArray(ids) && !(t in ids)) throw invalid(`[${r}][${t}]: a hole in a sparse array; every position needs a token id`)
      const id = ids[t]
      const value = typeof id === 'bigint' ? Number(id) : id
      if (typeof value !== 'number' || !Number.isInteger(value)) {
        throw invalid(`[${r}][${t}] = ${describeValue(id)}: expected an integer token id`)
      }
      if (value < 0 || value >= vocabSize) {
        throw new MoeQuantError('E_CALIBRATION_ID_RANGE', `${what}[${r}][${t}] = ${describeValue(id)} is not a token id of this model (vocabulary of ${vocabSize})`)
      }
      plain[t] = value
    }
    out.push(plain)
  }
  const first = (out[0] as number[]).length
  const ragged = sameLength ? out.findIndex((row) => row.length !== first) : -1
  if (ragged >= 0) throw invalid(`[${ragged}]: every row must hold ${first} token ids like the first (rows are not padded)`)
  return out
}

/**
 * The defaults that token-id rows give themselves, by the native core's windowing rule (each row cut into
 * consecutive windows of `seqLen` ids, its tail dropped): `seqLen` defaults to the shortest row, `windows` is
 * how many windows of `seqLen` the rows hold.
 */
export function idWindows(rows: readonly number[][], seqLen?: number): { seqLen: number; windows: number } {
  const length = seqLen ?? rows.reduce((shortest, row) => Math.min(shortest, row.length), Number.POSITIVE_INFINITY)
  return { seqLen: length, windows: rows.reduce((n, row) => n + Math.floor(row.length / length), 0) }
}
