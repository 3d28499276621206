/**
 * MoeQuantError: every failure of moe-quant carries a stable `code` (assert on codes, not messages) and a
 * message naming the file, tensor and shapes involved. Native errors arrive as an ErrorPayload (JSON of
 * `{ code, message, details }`, declared in Rust) and are converted by native/task.ts; the native code list
 * is checked against the generated ErrorCode type at compile time and against the addon's list by a test.
 */
import type { ErrorCode as NativeErrorCode } from './native/contract'

/** Codes produced by the native core (crates/core/src/error.rs). */
export const NATIVE_ERROR_CODES = [
  'E_CONFIG_MISSING',
  'E_CONFIG_INVALID',
  'E_CHECKPOINT_NO_WEIGHTS',
  'E_CHECKPOINT_INDEX_INVALID',
  'E_CHECKPOINT_SHARD_MISSING',
  'E_CHECKPOINT_TRUNCATED',
  'E_CHECKPOINT_HEADER_INVALID',
  'E_CHECKPOINT_DTYPE_UNSUPPORTED',
  'E_TENSOR_NOT_FOUND',
  'E_TENSOR_DUPLICATE',
  'E_TENSOR_SHAPE',
  'E_OUTPUT_INVALID',
  'E_IO',
  'E_CANCELLED',
  'E_INTERNAL',
  'E_TOKENIZER_MISSING',
  'E_TOKENIZER_INVALID',
  'E_CALIBRATION_INVALID',
  'E_CALIBRATION_EMPTY',
  'E_CALIBRATION_ID_RANGE',
  'E_CALIBRATION_OPTIONS',
  'E_TENSOR_NON_FINITE',
  /** The device asked for is not available in this build or on this machine. */
  'E_DEVICE_UNAVAILABLE',
  /** A checkpoint file changed size or was modified while it was being read. */
  'E_INPUT_CHANGED',
  /** The output could not be written: the disk is full, a file-size limit was hit or the filesystem is read-only. */
  'E_OUTPUT_WRITE',
  /** The calibration forward produced a NaN or an infinity (the message names the layer and the activation). */
  'E_ACTIVATION_NON_FINITE',
  /** A large buffer could not be allocated: the machine's memory or the process's address-space limit is exhausted. */
  'E_OUT_OF_MEMORY',
] as const satisfies readonly NativeErrorCode[]

/** Compiles only while NATIVE_ERROR_CODES lists every code of the Rust error table. */
const listsEveryNativeCode: Exclude<NativeErrorCode, (typeof NATIVE_ERROR_CODES)[number]> extends never ? true : never = true
void listsEveryNativeCode

/** Codes produced by the TypeScript layer (architecture and layout detection, options, loading). */
export const TS_ERROR_CODES = [
  /** An option passed to a public function is missing, of the wrong type or out of range. */
  'E_OPTION_INVALID',
  /** The native addon could not be loaded. */
  'E_NATIVE_LOAD',
  /** No expert layout matches the tensors of an MoE layer. */
  'E_LAYOUT_UNRECOGNISED',
  /** A fused gate/up tensor whose gate/up dimension is odd, so it cannot be split in two halves. */
  'E_LAYOUT_ODD_SPLIT',
  /** The number of experts found disagrees with config.json. */
  'E_LAYOUT_EXPERT_COUNT',
  /** An expert tensor is stored in the wrong orientation for the layout (H and I swapped). */
  'E_LAYOUT_ORIENTATION',
  /** Expert tensors disagree with each other or with config.json on H or I. */
  'E_LAYOUT_SHAPE',
  /** Some expert's tensor is missing. */
  'E_LAYOUT_MISSING_TENSOR',
  /** The input is already a quantized (ModelOpt-format) checkpoint. */
  'E_CHECKPOINT_ALREADY_QUANTIZED',
  /** The model is recognised, but what was asked needs something moe-quant lacks for it: a calibration forward
   * for its family (weight-only formats need none), or an export form for its experts. */
  'E_MODEL_UNSUPPORTED',
] as const

export type ErrorCode = (typeof NATIVE_ERROR_CODES)[number] | (typeof TS_ERROR_CODES)[number]

export const ERROR_CODES: readonly ErrorCode[] = [...NATIVE_ERROR_CODES, ...TS_ERROR_CODES]

/**
 * Details that help a program react to an error (all optional). Native errors carry their variant's fields
 * (crates/core/src/error.rs) in camelCase, with `file` for the path involved: `tensor` and `shape` for
 * E_TENSOR_SHAPE, `sample`, `position`, `id` and `vocabSize` for E_CALIBRATION_ID_RANGE, and so on.
 */
export interface ErrorDetails {
  file?: string
  tensor?: string
  shape?: readonly number[]
  expected?: string
  [field: string]: unknown
}

/** The error every moe-quant function throws or rejects with. */
export class MoeQuantError extends Error {
  readonly code: ErrorCode
  readonly details: ErrorDetails

  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}) {
    super(message)
    this.name = 'MoeQuantError'
    this.code = code
    this.details = details
  }
}
