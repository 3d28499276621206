/**
 * computeLogits(): the unquantized model's logits for a batch of token ids, computed by the native
 * forward that calibration uses (layer by layer, f32 on the CPU).
 */
import { callNative } from '../native/task'
import { describeModel } from './describe'
import { checkIdRows, type IdRow } from './options'

export interface LogitsResult {
  /** Row-major `[rows, seqLen, vocabSize]`. */
  logits: Float32Array
  shape: [rows: number, seqLen: number, vocabSize: number]
}

/**
 * The logits of the unquantized model in `dir` for `ids` (rows of equal length, no padding, causal; arrays
 * or typed arrays of numbers or bigints).
 *
 * @example
 *   const { logits, shape } = await computeLogits('./tiny-moe', [[1, 2, 3]])
 * @throws MoeQuantError `E_CALIBRATION_ID_RANGE` for ids outside the vocabulary, checkpoint and layout codes.
 */
export async function computeLogits(dir: string, ids: readonly IdRow[]): Promise<LogitsResult> {
  const descriptor = await describeModel(dir)
  // One forward over `[rows, seqLen]`: the rows are a batch, not cut into windows, so they must not be ragged.
  const rows = checkIdRows(ids, descriptor.vocab_size, 'ids', { sameLength: true })
  const seqLen = (rows[0] as number[]).length
  const logits = (await callNative((b) => b.computeLogits(dir, JSON.stringify(descriptor), rows.flat(), rows.length, seqLen))) as Float32Array
  return { logits, shape: [rows.length, seqLen, descriptor.vocab_size] }
}
