/**
 * The Mamba-2 mixer of a hybrid family's layer: its sizes and switches from config.json under the keys the
 * family declares (aliases first, as its config class reads them), every tensor checked against the shapes they
 * imply: `in_proj [2I + 2GN + heads, H]`, `conv1d [I + 2GN, 1, K]`, `A_log`, `D`, `dt_bias [heads]`, the gated
 * norm `[I]`, `out_proj [H, I]` (I = heads × head_dim, G groups, N the state size, K the kernel).
 */
import type { Mamba2Descriptor } from '../../native/contract'
import type { Mamba2Decl } from '../registry/types'
import { type LayerTensors, pick, refuse, type SpecContext } from './context'

/** A config number as transformers 5.25 writes it: a JSON number, or `{"__float__": "Infinity"}` for ±inf and NaN. */
function configFloat(value: unknown): number | undefined {
  if (typeof value === 'number') return value
  if (typeof value === 'object' && value !== null && '__float__' in value) {
    const text = (value as { __float__: unknown }).__float__
    if (text === 'Infinity' || text === 'inf') return Infinity
    if (text === '-Infinity' || text === '-inf') return -Infinity
  }
  return undefined
}

/** `[min, max]` of the time step (`(0, inf)` when absent), as the descriptor's `dt_min` and optional `dt_max`. */
function timeStepLimits(context: SpecContext, decl: Mamba2Decl): { dt_min: number; dt_max?: number } {
  const key = pick(context, decl.timeStepLimit)
  const value = context.values.value(key)
  if (value === undefined) return { dt_min: 0 }
  const bounds = Array.isArray(value) ? value.map(configFloat) : []
  const [min, max] = bounds as [number | undefined, number | undefined]
  if (bounds.length !== 2 || min === undefined || max === undefined || Number.isNaN(min) || Number.isNaN(max) || min > max || min === Infinity) {
    context.values.invalid(key, 'two numbers [min, max] (max may be Infinity)')
  }
  // softplus is never negative: a lower bound below 0 clamps nothing.
  const limits: { dt_min: number; dt_max?: number } = { dt_min: Math.max(min as number, 0) }
  if (Number.isFinite(max)) limits.dt_max = max as number
  return limits
}

/** The mixer's sizes. */
function mamba2Sizes(context: SpecContext, decl: Mamba2Decl): { heads: number; headDim: number; groups: number; state: number; kernel: number; chunk: number } {
  const { values, hidden } = context
  const integer = (keys: readonly string[]): number => values.integer(pick(context, keys))
  const heads = integer(decl.heads)
  const headKey = pick(context, decl.headDim)
  const given = values.value(headKey)
  let headDim: number
  if (given === 'auto' || given === undefined || given === null) {
    const expandKey = pick(context, decl.expand)
    const inner = values.number(expandKey) * hidden
    if (!Number.isSafeInteger(inner) || inner % heads !== 0) values.invalid(expandKey, `a factor making ${expandKey} × hidden_size a multiple of the ${heads} heads`)
    headDim = inner / heads
  } else {
    headDim = values.integer(headKey)
  }
  const groups = integer(decl.groups)
  if (heads % groups !== 0) values.invalid(pick(context, decl.groups), `a divisor of the ${heads} Mamba heads`)
  return { heads, headDim, groups, state: integer(decl.stateSize), kernel: integer(decl.convKernel), chunk: integer(decl.chunkSize) }
}

/** The Mamba-2 mixer whose module is `module` (e.g. `model.layers.0.mamba`). */
export function mamba2Descriptor(context: SpecContext, tensors: LayerTensors, module: string, decl: Mamba2Decl): Mamba2Descriptor {
  const { values, hidden } = context
  const activation = values.value(pick(context, decl.activation))
  if (activation !== 'silu') refuse(context, `a Mamba-2 convolution activation ${JSON.stringify(activation)} (the forward implements silu)`)
  const { heads, headDim, groups, state, kernel, chunk } = mamba2Sizes(context, decl)
  const inner = heads * headDim
  const convDim = inner + 2 * groups * state
  const projBias = values.boolean(pick(context, decl.projBias))
  const convBias = values.boolean(pick(context, decl.convBias))
  const m = (name: string): string => `${module}.${name}`
  tensors.use(m('in_proj.weight'), [inner + convDim + heads, hidden], 'in_proj [2·heads·head_dim + 2·groups·state + heads, hidden_size]')
  tensors.use(m('out_proj.weight'), [hidden, inner], 'out_proj [hidden_size, heads·head_dim]')
  if (projBias) {
    tensors.use(m('in_proj.bias'), [inner + convDim + heads], 'the in_proj bias')
    tensors.use(m('out_proj.bias'), [hidden], 'the out_proj bias')
  }
  tensors.use(m('conv1d.weight'), [convDim, 1, kernel], 'conv1d [heads·head_dim + 2·groups·state, 1, conv_kernel]')
  if (convBias) tensors.use(m('conv1d.bias'), [convDim], 'the conv1d bias')
  for (const name of ['A_log', 'D', 'dt_bias']) tensors.use(m(name), [heads], `${name} [heads]`)
  tensors.use(m('norm.weight'), [inner], 'the gated norm [heads·head_dim]')
  const epsKey = pick(context, decl.normEps)
  const eps = values.number(epsKey)
  if (eps < 0) values.invalid(epsKey, 'a number ≥ 0')
  return {
    in_proj: m('in_proj'),
    out_proj: m('out_proj'),
    proj_bias: projBias,
    conv1d: m('conv1d'),
    conv_bias: convBias,
    a_log: m('A_log'),
    d: m('D'),
    dt_bias: m('dt_bias'),
    norm: m('norm.weight'),
    norm_eps: eps,
    num_heads: heads,
    head_dim: headDim,
    n_groups: groups,
    state_size: state,
    conv_kernel: kernel,
    chunk_size: chunk,
    ...timeStepLimits(context, decl),
  }
}
