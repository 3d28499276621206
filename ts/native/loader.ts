/**
 * Loads the native addon: the CPU build through the napi-rs loader at the package root (a local build first,
 * then the platform package), the CUDA build only when a CUDA device is asked for. A failure names concrete
 * fixes, since the person who sees it usually did not choose how moe-quant was installed.
 */
import { MoeQuantError } from '../errors'

import type * as Addon from '../../index'

/** The raw binding, as napi-rs declares it in index.d.ts at the package root (generated from crates/node). */
export type NativeBinding = typeof Addon

/** A native flag a running task checks between steps. */
export type CancelToken = Addon.CancelToken

let binding: NativeBinding | undefined
let cudaBinding: NativeBinding | undefined

/** Where the CUDA build of the addon is looked for: the published package, then a source build. */
const CUDA_BINDINGS = ['@moe-quant/linux-x64-gnu-cuda', '../../moe-quant.linux-x64-gnu.cuda.node'] as const

/** Whether a device string asks for the GPU. */
const isCudaDevice = (device: string | undefined): boolean => device !== undefined && device.startsWith('cuda')

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
    binding = require('../../index.js') as NativeBinding
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
