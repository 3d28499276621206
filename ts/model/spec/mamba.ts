/**
 * The Mamba (Mamba-1) mixer of a hybrid family's layer: its sizes and switches from config.json under the keys the
 * family declares, every tensor checked against the shapes they imply: `in_proj [2I, H]`, `conv1d [I, 1, K]`,
 * `x_proj [R + 2N, I]`, `dt_proj [I, R]` with its bias `[I]`, `A_log [I, N]`, `D [I]`, the dt, B and C norms
 * `[R]`, `[N]`, `[N]` where the family has them, `out_proj [H, I]` (I = expand × hidden_size, N the state size, R
 * the time-step rank, K the kernel).
 */
import type { MambaDescriptor } from '../../native/contract'
import type { MambaDecl } from '../registry/types'
import { type LayerTensors, pick, refuse, type SpecContext } from './context'

/** The mixer's sizes: intermediate, state, time-step rank (`"auto"`: `ceil(hidden_size / 16)`), kernel. */
function mambaSizes(context: SpecContext, decl: MambaDecl): { inner: number; state: number; rank: number; kernel: number } {
  const { values, hidden } = context
  const integer = (keys: readonly string[]): number => values.integer(pick(context, keys))
  const expandKey = pick(context, decl.expand)
  const inner = values.number(expandKey) * hidden
  if (!Number.isSafeInteger(inner) || inner <= 0) values.invalid(expandKey, 'a factor making it × hidden_size a positive integer')
  const rankKey = pick(context, decl.dtRank)
  const rank = values.value(rankKey) === 'auto' ? Math.ceil(hidden / 16) : values.integer(rankKey)
  return { inner, state: integer(decl.stateSize), rank, kernel: integer(decl.convKernel) }
}

/** The Mamba mixer whose module is `module` (e.g. `model.layers.0.mamba`). */
export function mambaDescriptor(context: SpecContext, tensors: LayerTensors, module: string, decl: MambaDecl): MambaDescriptor {
  const { values, hidden } = context
  const activation = values.value(pick(context, decl.activation))
  if (activation !== 'silu') refuse(context, `a Mamba convolution activation ${JSON.stringify(activation)} (the forward implements silu)`)
  const { inner, state, rank, kernel } = mambaSizes(context, decl)
  const projBias = values.boolean(pick(context, decl.projBias))
  const convBias = values.boolean(pick(context, decl.convBias))
  const m = (name: string): string => `${module}.${name}`
  tensors.use(m('in_proj.weight'), [2 * inner, hidden], 'in_proj [2·intermediate, hidden_size]')
  tensors.use(m('out_proj.weight'), [hidden, inner], 'out_proj [hidden_size, intermediate]')
  if (projBias) {
    tensors.use(m('in_proj.bias'), [2 * inner], 'the in_proj bias')
    tensors.use(m('out_proj.bias'), [hidden], 'the out_proj bias')
  }
  tensors.use(m('conv1d.weight'), [inner, 1, kernel], 'conv1d [intermediate, 1, conv_kernel]')
  if (convBias) tensors.use(m('conv1d.bias'), [inner], 'the conv1d bias')
  tensors.use(m('x_proj.weight'), [rank + 2 * state, inner], 'x_proj [dt_rank + 2·state, intermediate]')
  tensors.use(m('dt_proj.weight'), [inner, rank], 'dt_proj [intermediate, dt_rank]')
  tensors.use(m('dt_proj.bias'), [inner], 'the dt_proj bias [intermediate]')
  tensors.use(m('A_log'), [inner, state], 'A_log [intermediate, state]')
  tensors.use(m('D'), [inner], 'D [intermediate]')
  const descriptor: MambaDescriptor = {
    in_proj: m('in_proj'),
    x_proj: m('x_proj'),
    dt_proj: m('dt_proj'),
    out_proj: m('out_proj'),
    proj_bias: projBias,
    conv1d: m('conv1d'),
    conv_bias: convBias,
    a_log: m('A_log'),
    d: m('D'),
    norm_eps: 0,
    intermediate_size: inner,
    state_size: state,
    dt_rank: rank,
    conv_kernel: kernel,
  }
  if (decl.norms) {
    const { dt, b, c, eps } = decl.norms
    descriptor.dt_norm = tensors.use(m(`${dt}.weight`), [rank], `${dt} [dt_rank]`)
    descriptor.b_norm = tensors.use(m(`${b}.weight`), [state], `${b} [state]`)
    descriptor.c_norm = tensors.use(m(`${c}.weight`), [state], `${c} [state]`)
    const epsKey = pick(context, eps)
    descriptor.norm_eps = values.number(epsKey)
    if (descriptor.norm_eps < 0) values.invalid(epsKey, 'a number ≥ 0')
  }
  return descriptor
}
