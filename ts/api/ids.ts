/**
 * Token ids given by the caller (calibration, evaluation, logits): rows of arrays or typed arrays of numbers
 * or bigints. One validator for all of them: every row is checked element by element (holes of sparse
 * arrays included), every id must be an integer in the vocabulary, and the rows come back as plain number
 * arrays, ready to cross to the native core as JSON.
 */
import { MoeQuantError } from '../errors'

/** One row of token ids: a number array, or a typed array (`Int32Array`, `Uint32Array`, `BigInt64Array` …). */
export type IdRow = ArrayLike<number | bigint>

const describe = (value: unknown): string => (typeof value === 'bigint' ? `${value}n` : JSON.stringify(value) ?? String(value))

/**
 * Validates `rows` (`what` names them in errors) and returns plain copies.
 * @throws MoeQuantError `E_OPTION_INVALID` for anything but a non-empty array of non-empty rows of integers
 *   (naming the row and position of a hole or a value that is not an integer), `E_CALIBRATION_ID_RANGE` for
 *   an id outside `[0, vocabSize)`.
 */
export function checkIdRows(rows: unknown, vocabSize: number, what: string): number[][] {
  const invalid = (message: string): MoeQuantError => new MoeQuantError('E_OPTION_INVALID', `${what}${message}`)
  if (!Array.isArray(rows) || rows.length === 0) throw invalid(': expected a non-empty array of token-id rows (arrays or typed arrays)')
  const out: number[][] = []
  for (let r = 0; r < rows.length; r++) {
    if (!(r in rows)) throw invalid(`[${r}]: a hole in a sparse array; expected a row of token ids`)
    const row: unknown = rows[r]
    const isRow = Array.isArray(row) || (ArrayBuffer.isView(row) && !(row instanceof DataView))
    if (!isRow) throw invalid(`[${r}]: expected an array or typed array of token ids, got ${describe(row)}`)
    const ids = row as IdRow
    if (ids.length === 0) throw invalid(`[${r}]: an empty row`)
    const plain = new Array<number>(ids.length)
    for (let t = 0; t < ids.length; t++) {
      if (Array.isArray(ids) && !(t in ids)) throw invalid(`[${r}][${t}]: a hole in a sparse array; every position needs a token id`)
      const id = ids[t]
      const value = typeof id === 'bigint' ? Number(id) : id
      if (typeof value !== 'number' || !Number.isInteger(value)) {
        throw invalid(`[${r}][${t}] = ${describe(id)}: expected an integer token id`)
      }
      if (value < 0 || value >= vocabSize) {
        throw new MoeQuantError('E_CALIBRATION_ID_RANGE', `${what}[${r}][${t}] = ${describe(id)} is not a token id of this model (vocabulary of ${vocabSize})`)
      }
      plain[t] = value
    }
    out.push(plain)
  }
  return out
}

/** Checks `rows` (as checkIdRows) and that they are all as long as the first; returns them flattened. */
export function flattenIds(rows: unknown, vocabSize: number, what = 'ids'): { flat: number[]; rows: number; seqLen: number } {
  const checked = checkIdRows(rows, vocabSize, what)
  const seqLen = (checked[0] as number[]).length
  const ragged = checked.findIndex((row) => row.length !== seqLen)
  if (ragged >= 0) {
    throw new MoeQuantError('E_OPTION_INVALID', `${what}[${ragged}]: every row must hold ${seqLen} token ids like the first (rows are not padded)`)
  }
  return { flat: checked.flat(), rows: checked.length, seqLen }
}
