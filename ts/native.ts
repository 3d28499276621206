/**
 * Loads the native addon (the napi-rs loader at the package root picks the platform binary) and wraps
 * each call so that its errors become MoeQuantErrors thrown at the caller's site.
 */
import { MoeQuantError, fromNative } from './errors'

import type * as Addon from '../index'

/** The raw binding, as napi-rs declares it in index.d.ts at the package root (generated from crates/node). */
export type NativeBinding = typeof Addon

/** A native flag a running task checks between steps. */
export type CancelToken = Addon.CancelToken

let binding: NativeBinding | undefined
let cudaBinding: NativeBinding | undefined

/** Where the CUDA build of the addon is looked for: the published package, then a source build. */
export const CUDA_BINDINGS = ['@moe-quant/linux-x64-gnu-cuda', '../moe-quant.linux-x64-gnu.cuda.node'] as const

/** Whether a device string asks for the GPU. */
export const isCudaDevice = (device: string | undefined): boolean => device !== undefined && device.startsWith('cuda')

function loadCuda(): NativeBinding {
  const reasons: string[] = []
  let present: string | undefined
  for (const candidate of CUDA_BINDINGS) {
    try {
      return require(candidate) as NativeBinding
    } catch (error) {
      const code = (error as { code?: unknown } | null)?.code
      if (code !== 'MODULE_NOT_FOUND') present ??= candidate
      reasons.push(`${candidate}: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`)
    }
  }
  if (present !== undefined) {
    // Found but not loadable: almost always the CUDA libraries, not the package.
    throw new MoeQuantError(
      'E_DEVICE_UNAVAILABLE',
      `a CUDA device was asked for, but the CUDA build of moe-quant (${present}) could not be loaded.\n` +
        'Possible fixes:\n' +
        '  - install an NVIDIA driver for CUDA 13.0 or later (driver 580+, provides libcuda.so.1) and put libcublas.so.13, ' +
        'libcublasLt.so.13 and libcurand.so.10 on LD_LIBRARY_PATH (see README, "Building with CUDA")\n' +
        '  - or use device: \'cpu\'\n' +
        `Tried: ${reasons.join('; ')}`,
    )
  }
  throw new MoeQuantError(
    'E_DEVICE_UNAVAILABLE',
    'a CUDA device was asked for, but the CUDA build of moe-quant is not installed.\n' +
      'Possible fixes:\n' +
      `  - install it (Linux x64): npm install ${CUDA_BINDINGS[0]}\n` +
      '  - or build it from a source checkout: npm run build:cuda (see README, "Building with CUDA")\n' +
      '  - or use device: \'cpu\'\n' +
      `Tried: ${reasons.join('; ')}`,
  )
}

/** The native binding for `device` (the CPU build unless a CUDA device is asked for), loaded once. */
export function native(device?: string): NativeBinding {
  if (isCudaDevice(device)) return (cudaBinding ??= loadCuda())
  if (binding) return binding
  try {
    binding = require('../index.js') as NativeBinding
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error)
    throw new MoeQuantError(
      'E_NATIVE_LOAD',
      `moe-quant could not load its native addon: ${reason}\n` +
        'Possible fixes:\n' +
        '  - reinstall so that the prebuilt addon is installed (published for Linux x64 with glibc as the optional dependency ' +
        '@moe-quant/linux-x64-gnu; installs that omit optional dependencies skip it): npm install moe-quant\n' +
        '  - or build it from a source checkout: npm run build (needs a Rust toolchain)',
    )
  }
  return binding
}

/**
 * Wraps a callback the native side calls: if it throws, the task is cancelled, `fallback` goes back to the
 * native side, and the error becomes the task's.
 */
export type Guard = <A, R>(fn: (arg: A) => R, fallback: R) => (arg: A) => R

/** What a cancellable native task takes from the caller's options. */
export interface TaskOptions<E> {
  device?: string
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
  const binding = native(options.device)
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
