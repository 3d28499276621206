/**
 * Runs native calls for the verbs: a cancellable task's CancelToken follows the caller's AbortSignal, its
 * progress events are decoded for `onProgress`, and a native error (an ErrorPayload, declared in Rust) becomes
 * a MoeQuantError with its details, thrown with the caller's stack rather than the N-API callback's.
 */
import { ERROR_CODES, type ErrorCode, type ErrorDetails, MoeQuantError } from '../errors'
import type { ErrorPayload } from './contract'
import { type CancelToken, native, type NativeBinding } from './loader'

/** The ErrorPayload a native error's message holds, if it holds one. */
function payloadOf(message: string): ErrorPayload | undefined {
  if (!message.startsWith('{')) return undefined
  try {
    const payload = JSON.parse(message) as Partial<ErrorPayload> | null
    if (typeof payload?.code !== 'string' || typeof payload.message !== 'string') return undefined
    return { code: payload.code, message: payload.message, details: payload.details ?? {} }
  } catch {
    return undefined
  }
}

/**
 * Converts an error thrown by the native addon into a MoeQuantError, keeping `stack` (the caller's stack,
 * captured before the await) so the error points at the user's call site.
 */
export function fromNative(error: unknown, stack?: string): MoeQuantError {
  const text = error instanceof Error ? error.message : String(error)
  const payload = payloadOf(text)
  const code: ErrorCode = payload && (ERROR_CODES as readonly string[]).includes(payload.code) ? payload.code : 'E_INTERNAL'
  const converted = new MoeQuantError(code, payload?.message ?? text, (payload?.details ?? {}) as ErrorDetails)
  if (stack) converted.stack = `${converted.name} [${code}]: ${converted.message}\n${stack.split('\n').slice(1).join('\n')}`
  return converted
}

/**
 * Wraps a callback the native side calls: if it throws, the task is cancelled, `fallback` goes back to the
 * native side, and the error becomes the task's.
 */
export type Guard = <A, R>(fn: (arg: A) => R, fallback: R) => (arg: A) => R

/** What a cancellable native task takes from the caller's options. */
export interface TaskOptions<E> {
  device?: string
  /** Several devices of one kind (the first decides which build runs). */
  devices?: string[]
  signal?: AbortSignal
  onProgress?: (event: E) => void
}

/**
 * Runs a cancellable native task: its CancelToken follows `options.signal`, and each progress event (JSON)
 * is decoded and handed to `options.onProgress`. The native side waits for each callback before it goes
 * on, so the events arrive in order and all before the result, and an abort from a callback is seen at the
 * task's next cancellation check (for quantizeModel, at the latest right before the output is published).
 * A callback that throws cancels the task, and its error is what the returned promise rejects with; `guard`
 * gives the same treatment to other callbacks of the task.
 * Native errors become MoeQuantErrors with the caller's stack.
 */
export async function runTask<T, E>(
  options: TaskOptions<E>,
  decode: (event: string) => E,
  call: (binding: NativeBinding, token: CancelToken, onEvent: ((event: string) => void) | undefined, guard: Guard) => Promise<T>,
): Promise<T> {
  const stack = new Error().stack
  if (options.signal?.aborted) throw new MoeQuantError('E_CANCELLED', 'the operation was cancelled')
  const binding = native(options.device ?? options.devices?.[0])
  const token = new binding.CancelToken()
  const abort = (): void => token.cancel()
  options.signal?.addEventListener('abort', abort, { once: true })
  const onProgress = options.onProgress
  let failure: { error: unknown } | undefined
  const guard: Guard = (fn, fallback) => (arg) => {
    if (failure) return fallback
    try {
      return fn(arg)
    } catch (error) {
      failure = { error }
      token.cancel()
      return fallback
    }
  }
  const onEvent = onProgress ? guard((event: string) => onProgress(decode(event)), undefined) : undefined
  try {
    const result = await call(binding, token, onEvent, guard)
    if (failure) throw failure.error
    return result
  } catch (error) {
    if (failure) throw failure.error
    if (error instanceof MoeQuantError) throw error
    throw fromNative(error, stack)
  } finally {
    options.signal?.removeEventListener('abort', abort)
  }
}

/** Awaits a native call on the binding for `device`; a rejection becomes a MoeQuantError with the caller's stack. */
export async function callNative<T>(call: (binding: NativeBinding) => Promise<T>, device?: string): Promise<T> {
  const stack = new Error().stack
  try {
    return await call(native(device))
  } catch (error) {
    if (error instanceof MoeQuantError) throw error
    throw fromNative(error, stack)
  }
}
