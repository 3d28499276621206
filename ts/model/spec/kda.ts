/**
 * Kimi Delta Attention, Kimi-Linear's linear attention: its sizes and, without `layer_types`, its layers, read from
 * config.json as KimiLinearConfig reads them (the checkpoint's `linear_attn_config` first), and the descriptor of a
 * layer's mixer in either layout (transformers 5's `conv1d` and `forget_gate`, or the hub's `q_conv1d`, `k_conv1d`,
 * `v_conv1d` and the decay's tensors beside the projections), every tensor checked against the shape config.json
 * implies.
 * transformers: models/kimi_linear/configuration_kimi_linear.py, modeling_kimi_linear.py `KimiLinearDeltaAttention`.
 */
import type { KimiDeltaAttentionDescriptor } from '../../native/contract'
import { isObject } from './config-values'
import { type LayerTensors, pick, type SpecContext } from './context'

/** The object config.json may hold the linear attention's settings in, as the hub checkpoints write them. */
const SETTINGS = 'linear_attn_config'

/**
 * Whether each layer is linear attention when config.json has no `layer_types`: from `linear_attn_config`'s 1-based
 * `full_attn_layers` and `kda_layers` when it has both (together they must name every layer once), else full
 * attention on layers 4, 8, 12, … and Kimi Delta Attention elsewhere.
 * @throws MoeQuantError `E_CONFIG_INVALID` for lists that do not name every layer once
 */
export function kdaDefaultLayers(context: SpecContext, layers: number): boolean[] {
  const settings = context.values.value(SETTINGS)
  const full = isObject(settings) ? settings.full_attn_layers : undefined
  const linear = isObject(settings) ? settings.kda_layers : undefined
  if (full === undefined || linear === undefined) return Array.from({ length: layers }, (_, i) => !(i > 0 && i % 4 === 0))
  const kinds: (boolean | undefined)[] = Array.from({ length: layers }, () => undefined)
  const place = (key: string, list: unknown, isLinear: boolean): void => {
    const valid = Array.isArray(list) && list.every((n) => Number.isSafeInteger(n) && n >= 1 && n <= layers)
    if (!valid) context.values.invalid(`${SETTINGS}.${key}`, `a list of layer numbers from 1 to ${layers}`)
    for (const n of list as number[]) kinds[n - 1] = isLinear
  }
  place('full_attn_layers', full, false)
  place('kda_layers', linear, true)
  if (kinds.some((k) => k === undefined)) {
    context.values.invalid(SETTINGS, `full_attn_layers and kda_layers that name each of the ${layers} layers`, settings)
  }
  return kinds as boolean[]
}

/** The Kimi Delta Attention whose module is `attn` (e.g. `model.layers.0.self_attn`). */
export function kdaDescriptor(context: SpecContext, tensors: LayerTensors, attn: string): KimiDeltaAttentionDescriptor {
  const { values, hidden } = context
  const headDim = values.integer(pick(context, [`${SETTINGS}.head_dim`, 'linear_head_dim']))
  const heads = values.integer(pick(context, [`${SETTINGS}.num_heads`, 'linear_num_heads']))
  const kernel = values.integer(pick(context, [`${SETTINGS}.short_conv_kernel_size`, 'linear_conv_kernel_dim']))
  const width = heads * headDim
  const m = (name: string): string => `${attn}.${name}`
  const linear = (name: string, shape: [number, number], what: string): string => {
    tensors.use(`${m(name)}.weight`, shape, `${name} [${what}]`)
    return m(name)
  }
  // transformers 5 holds one convolution over q, k and v; the hub stores one per projection.
  const conv1d = tensors.has(m('conv1d.weight'))
    ? [tensors.use(m('conv1d.weight'), [3 * width, 1, kernel], 'conv1d [3·linear_num_heads·linear_head_dim, 1, linear_conv_kernel_dim]')]
    : ['q', 'k', 'v'].map((p) => tensors.use(m(`${p}_conv1d.weight`), [width, 1, kernel], `${p}_conv1d [linear_num_heads·linear_head_dim, 1, linear_conv_kernel_dim]`))
  // The decay's tensors sit in `forget_gate` in transformers 5, beside the projections on the hub.
  const gate = tensors.has(m('forget_gate.f_a_proj.weight')) ? 'forget_gate.' : ''
  return {
    q_proj: linear('q_proj', [width, hidden], 'linear_num_heads·linear_head_dim, hidden_size'),
    k_proj: linear('k_proj', [width, hidden], 'linear_num_heads·linear_head_dim, hidden_size'),
    v_proj: linear('v_proj', [width, hidden], 'linear_num_heads·linear_head_dim, hidden_size'),
    conv1d,
    f_a_proj: linear(`${gate}f_a_proj`, [headDim, hidden], 'linear_head_dim, hidden_size'),
    f_b_proj: linear(`${gate}f_b_proj`, [width, headDim], 'linear_num_heads·linear_head_dim, linear_head_dim'),
    dt_bias: tensors.use(m(`${gate}dt_bias`), [width], 'dt_bias [linear_num_heads·linear_head_dim]'),
    a_log: tensors.use(m(`${gate}A_log`), [1, 1, heads, 1], 'A_log [1, 1, linear_num_heads, 1]'),
    b_proj: linear('b_proj', [heads, hidden], 'linear_num_heads, hidden_size'),
    g_a_proj: linear('g_a_proj', [headDim, hidden], 'linear_head_dim, hidden_size'),
    g_b_proj: linear('g_b_proj', [width, headDim], 'linear_num_heads·linear_head_dim, linear_head_dim'),
    norm: tensors.use(m('o_norm.weight'), [headDim], 'the gated norm o_norm [linear_head_dim]'),
    o_proj: linear('o_proj', [hidden, width], 'hidden_size, linear_num_heads·linear_head_dim'),
    num_heads: heads,
    head_dim: headDim,
    conv_kernel: kernel,
  }
}
