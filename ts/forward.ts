/**
 * computeLogits(): the unquantized model's logits for a batch of token ids, computed by the native
 * forward that calibration uses (layer by layer, f32 on the CPU).
 */
import { describeModel } from './descriptor'
import { MoeQuantError } from './errors'
import { callNative } from './native'

export interface LogitsResult {
  /** Row-major `[rows, seqLen, vocabSize]`. */
  logits: Float32Array
  shape: [rows: number, seqLen: number, vocabSize: number]
}

/** Checks `ids` is a non-empty rectangle of integer token ids below `vocabSize`; returns it flattened. */
export function flattenIds(ids: unknown, vocabSize: number, what = 'ids'): { flat: number[]; rows: number; seqLen: number } {
  if (!Array.isArray(ids) || ids.length === 0) {
    throw new MoeQuantError('E_OPTION_INVALID', `${what}: expected a non-empty array of token id arrays`)
  }
  const seqLen = Array.isArray(ids[0]) ? (ids[0] as unknown[]).length : 0
  if (seqLen === 0) throw new MoeQuantError('E_OPTION_INVALID', `${what}[0]: expected a non-empty array of token ids`)
  const flat: number[] = []
  ids.forEach((row: unknown, r) => {
    if (!Array.isArray(row) || row.length !== seqLen) {
      throw new MoeQuantError('E_OPTION_INVALID', `${what}[${r}]: every row must hold ${seqLen} token ids (rows are not padded)`)
    }
    row.forEach((id: unknown, t) => {
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= vocabSize) {
        throw new MoeQuantError(
          'E_CALIBRATION_ID_RANGE',
          `${what}[${r}][${t}] = ${JSON.stringify(id)} is not a token id of this model (vocabulary of ${vocabSize})`,
        )
      }
      flat.push(id)
    })
  })
  return { flat, rows: ids.length, seqLen }
}

/**
 * The logits of the unquantized model in `dir` for `ids` (rows of equal length, no padding, causal).
 *
 * @example
 *   const { logits, shape } = await computeLogits('./tiny-moe', [[1, 2, 3]])
 * @throws MoeQuantError `E_CALIBRATION_ID_RANGE` for ids outside the vocabulary, checkpoint and layout codes.
 */
export async function computeLogits(dir: string, ids: number[][]): Promise<LogitsResult> {
  const descriptor = await describeModel(dir)
  const { flat, rows, seqLen } = flattenIds(ids, descriptor.vocab_size)
  const logits = (await callNative((b) => b.computeLogits(dir, JSON.stringify(descriptor), flat, rows, seqLen))) as Float32Array
  return { logits, shape: [rows, seqLen, descriptor.vocab_size] }
}
