/**
 * The activation of a family's gated experts and MLPs, `act(gate) · up`: silu, or what the config key the family
 * names gives, under transformers' `ACT2FN` names (activations.py): `silu`/`swish`; `gelu` (exact, with erf) and
 * its python spelling; `gelu_pytorch_tanh`, `gelu_python_tanh` and `gelu_new` (the tanh approximation).
 */
import type { ExpertActivation } from '../../native/contract'
import { refuse, type SpecContext } from './context'

/** ACT2FN names the forward implements, by the activation they compute. */
const GATED: Readonly<Record<string, ExpertActivation>> = {
  silu: 'silu',
  swish: 'silu',
  gelu: 'gelu',
  gelu_python: 'gelu',
  gelu_pytorch_tanh: 'gelu_tanh',
  gelu_python_tanh: 'gelu_tanh',
  gelu_new: 'gelu_tanh',
}

/**
 * The activation of the gated experts and MLPs of a family whose experts are gated: from the family's
 * `activationKey` (with its config class's default) when it declares one; otherwise silu, which config
 * `hidden_act` must then say.
 */
export function gatedActivation(context: SpecContext): ExpertActivation {
  const { forward, values } = context
  const key = forward.activationKey
  if (key === undefined) {
    const hiddenAct = values.value('hidden_act') ?? 'silu'
    if (hiddenAct !== 'silu') refuse(context, `hidden_act "${String(hiddenAct)}" (the forward implements silu)`)
    return 'silu'
  }
  const name = values.value(key)
  const activation = typeof name === 'string' ? GATED[name] : undefined
  return activation ?? refuse(context, `${key} ${JSON.stringify(name)} (the forward implements ${Object.keys(GATED).join(', ')})`)
}
