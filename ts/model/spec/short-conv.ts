/**
 * The gated short convolution of a hybrid family's layer (LFM2): `in_proj [3H, H]`, `conv [H, 1, K]`,
 * `out_proj [H, H]`, each with its bias when config.json's switch says so (K the kernel).
 */
import type { ShortConvDescriptor } from '../../native/contract'
import type { ShortConvDecl } from '../registry/types'
import { type LayerTensors, pick, type SpecContext } from './context'

/** The short convolution whose module is `module` (e.g. `model.layers.0.conv`). */
export function shortConvDescriptor(context: SpecContext, tensors: LayerTensors, module: string, decl: ShortConvDecl): ShortConvDescriptor {
  const { values, hidden } = context
  const kernel = values.integer(pick(context, decl.kernel))
  const bias = values.boolean(pick(context, decl.bias))
  const m = (name: string): string => `${module}.${name}`
  tensors.use(m('in_proj.weight'), [3 * hidden, hidden], 'in_proj [3·hidden_size, hidden_size]')
  tensors.use(m('out_proj.weight'), [hidden, hidden], 'out_proj [hidden_size, hidden_size]')
  tensors.use(m('conv.weight'), [hidden, 1, kernel], 'conv [hidden_size, 1, conv_L_cache]')
  if (bias) {
    tensors.use(m('in_proj.bias'), [3 * hidden], 'the in_proj bias')
    tensors.use(m('out_proj.bias'), [hidden], 'the out_proj bias')
    tensors.use(m('conv.bias'), [hidden], 'the conv bias')
  }
  return { in_proj: m('in_proj'), out_proj: m('out_proj'), conv: m('conv'), bias, conv_kernel: kernel }
}
