/**
 * The feed-forward part of the spec: a dense MLP, or an MoE block (router, routed experts in their
 * detected layout, shared experts) whose router parameters come from config.json under the family's router
 * kind, and whose shared experts must be what the registry declares.
 */
import { MoeQuantError } from '../../errors'
import type { DenseMlpDescriptor, MlpDescriptor, MoeDescriptor, RouterDescriptor, SharedExpertDescriptor } from '../../native/contract'
import { gatedActivation } from './activation'
import { expertSource, expertTensorNames, type MoeLayer } from '../resolve'
import { type LayerTensors, refuse, type SpecContext } from './context'

/**
 * A dense MLP's module names, with the family's gated activation: gated `gate_proj`/`up_proj [I, H]`, `down_proj [H, I]` (LFM2: `w1`/`w3`, `w2`); Granite's fused
 * `input_linear [2I, H]` (gate rows first) and `output_linear [H, I]`; or, in a family whose MLPs are relu²,
 * ungated `up_proj`/`down_proj`.
 */
function denseMlp(context: SpecContext, module: string, hidden: number, tensors: LayerTensors): DenseMlpDescriptor {
  const rows = (name: string): number => {
    const shape = tensors.get(`${module}.${name}.weight`)?.shape
    return shape?.length === 2 ? (shape[0] as number) : 0
  }
  if (tensors.has(`${module}.input_linear.weight`)) {
    const intermediate = Math.floor(rows('input_linear') / 2)
    tensors.use(`${module}.input_linear.weight`, [2 * intermediate, hidden], 'input_linear [2·intermediate, hidden_size]')
    tensors.use(`${module}.output_linear.weight`, [hidden, intermediate], 'output_linear [hidden_size, intermediate]')
    return { gate_up: `${module}.input_linear`, down: `${module}.output_linear`, activation: gatedActivation(context) }
  }
  if (context.forward.expertActivation === 'relu2') {
    if (context.values.value('mlp_bias') === true) refuse(context, 'mlp_bias true: MLP biases are not expressible in the descriptor yet')
    const intermediate = rows('up_proj')
    tensors.use(`${module}.up_proj.weight`, [intermediate, hidden], 'up_proj [intermediate, hidden_size]')
    tensors.use(`${module}.down_proj.weight`, [hidden, intermediate], 'down_proj [hidden_size, intermediate]')
    return { up: `${module}.up_proj`, down: `${module}.down_proj`, activation: 'relu2' }
  }
  // gate_proj/up_proj/down_proj, or (LFM2) w1/w3/w2.
  const [gate, up, down] = tensors.has(`${module}.w1.weight`) ? ['w1', 'w3', 'w2'] : ['gate_proj', 'up_proj', 'down_proj']
  const intermediate = rows(gate)
  tensors.use(`${module}.${gate}.weight`, [intermediate, hidden], `${gate} [intermediate, hidden_size]`)
  tensors.use(`${module}.${up}.weight`, [intermediate, hidden], `${up} [intermediate, hidden_size]`)
  tensors.use(`${module}.${down}.weight`, [hidden, intermediate], `${down} [hidden_size, intermediate]`)
  return { gate: `${module}.${gate}`, up: `${module}.${up}`, down: `${module}.${down}`, activation: gatedActivation(context) }
}

/** `E_CONFIG_INVALID` unless the experts split into `n_group` equal groups of which `topk_group` are kept. */
function checkGroups(experts: number, router: RouterDescriptor): void {
  if (experts % router.n_group !== 0 || router.topk_group > router.n_group) {
    throw new MoeQuantError(
      'E_CONFIG_INVALID',
      `config.json: ${experts} experts cannot be split into n_group ${router.n_group} groups with topk_group ${router.topk_group}`,
    )
  }
}

/** The zero-computation experts the family's router scores after the routed ones (0 without them). */
function zeroExperts(context: SpecContext): number {
  const key = context.forward.zeroExpertsKey
  const value = key ? context.values.value(key) : undefined
  return key && value !== null && value !== undefined ? context.values.integer(key) : 0
}

/** The router of an MoE layer, with the parameters its kind reads from config.json; `zero` zero experts after the
 * routed ones are scored too. */
function routerDescriptor(context: SpecContext, layer: MoeLayer, tensors: LayerTensors, zero: number): RouterDescriptor {
  const { values } = context
  const t = layer.tensors
  const { hidden } = layer
  const experts = layer.experts + zero
  const what = zero > 0 ? `experts + ${context.forward.zeroExpertsKey}` : 'experts'
  tensors.use(t.router, [experts, hidden], `the router weight [${what}, hidden_size]`)
  const router: RouterDescriptor = {
    kind: layer.router,
    weight: t.router,
    norm_topk_prob: false,
    n_group: 1,
    topk_group: 1,
    routed_scaling_factor: 1,
    norm_min: 0,
    jitter_eps: 0,
  }
  if (t.routerBias) router.bias = tensors.use(t.routerBias, [experts], 'the router bias [experts]')
  const scaled = context.forward.scaledRouter
  if (scaled) {
    // Beside the router's linear, in its module (Gemma 4: `router.proj` with `router.scale`, `router.per_expert_scale`).
    const module = t.router.replace(/\.[^.]+\.weight$/, '')
    router.input_scale = { scale: tensors.use(`${module}.${scaled.scale}`, [hidden], `the router's ${scaled.scale} [hidden_size]`), eps: values.number('rms_norm_eps') }
    router.per_expert_scale = tensors.use(`${module}.${scaled.perExpertScale}`, [experts], `the router's ${scaled.perExpertScale} [experts]`)
  }
  const biasKey = context.forward.routerBiasKey
  if (t.correctionBias && biasKey && !values.boolean(biasKey)) refuse(context, `${t.correctionBias} is stored but ${biasKey} is false: transformers would not load it`)
  if (t.correctionBias) {
    // ERNIE stores it as [1, experts].
    const shape = tensors.get(t.correctionBias)?.shape.length === 2 ? [1, experts] : [experts]
    router.correction_bias = tensors.use(t.correctionBias, shape, `e_score_correction_bias [${shape.length === 2 ? '1, ' : ''}${what}]`)
  }
  kindParameters(context, layer, router, experts)
  return router
}

/** The parameters of `router` that its kind reads from the config (renormalisation, groups, scaling, …). */
function kindParameters(context: SpecContext, layer: MoeLayer, router: RouterDescriptor, experts: number): void {
  const { values } = context
  switch (layer.router) {
    case 'softmax_topk':
      // A family whose router never renormalises (Jamba) ignores the key.
      router.norm_topk_prob = context.forward.routerRenormalises === false ? false : values.boolean('norm_topk_prob')
      break
    case 'softmax_topk_norm':
      router.norm_topk_prob = true
      break
    case 'sigmoid_group_topk': {
      const fixed = context.forward.routerParameters
      router.norm_topk_prob = fixed?.normTopkProb ?? values.boolean('norm_topk_prob')
      if (context.forward.routerRenormEps !== undefined) router.norm_eps = context.forward.routerRenormEps
      if (fixed?.groups !== false) {
        router.n_group = values.integer('n_group')
        router.topk_group = values.integer('topk_group')
      }
      if (fixed?.scaled !== false) router.routed_scaling_factor = values.number(fixed?.routedScalingKey ?? 'routed_scaling_factor')
      checkGroups(experts, router)
      break
    }
    case 'softmax_group_topk': {
      // DeepSeek-V2: `greedy` is one group; `group_limited_greedy` keeps topk_group of n_group groups.
      const method = values.value('topk_method')
      if (method === 'group_limited_greedy') {
        router.n_group = values.integer('n_group')
        router.topk_group = values.integer('topk_group')
      } else if (method !== 'greedy') {
        values.invalid('topk_method', '"greedy" or "group_limited_greedy"')
      }
      router.routed_scaling_factor = values.number('routed_scaling_factor')
      checkGroups(experts, router)
      break
    }
    case 'softmax_bias_topk':
      if (!router.correction_bias) refuse(context, `${layer.block}: the router chooses with e_score_correction_bias, which the checkpoint lacks`)
      router.norm_min = values.number('moe_norm_min')
      break
    case 'softmax_bias_topk_scaled':
      if (!router.correction_bias) refuse(context, `${layer.block}: the router chooses with e_score_correction_bias, which the checkpoint lacks`)
      router.routed_scaling_factor = values.number('routed_scaling_factor')
      // LongCat-Flash computes its logits from the classifier's weight alone, whatever bias config router_bias gives it.
      delete router.bias
      break
    case 'sparsemixer':
      // PhiMoE: always two experts, whatever num_experts_per_tok says.
      if (layer.topK !== 2) refuse(context, `${layer.block}: SparseMixer routes every token to 2 experts, not num_experts_per_tok ${layer.topK}`)
      router.jitter_eps = values.number('router_jitter_noise')
      break
    case 'topk_softmax':
    case 'topk_sigmoid':
      break
  }
}

/** The shared experts of an MoE layer: what the registry declares must be what the checkpoint holds. */
function sharedExperts(context: SpecContext, layer: MoeLayer, tensors: LayerTensors): SharedExpertDescriptor | undefined {
  const declared = context.entry.sharedExperts
  const found = layer.sharedExperts
  const presence = !!declared !== !!found && !(declared?.optional && !found)
  if (presence || (declared && found && !!declared.gate !== !!found.gate)) {
    const describe = (s: { gate?: string } | null | undefined): string => (s ? (s.gate ? 'gated shared experts' : 'ungated shared experts') : 'no shared experts')
    refuse(context, `${layer.block}: the family has ${describe(declared)} but the checkpoint holds ${describe(found)}`)
  }
  if (!found) return undefined
  const shared: SharedExpertDescriptor = { mlp: denseMlp(context, found.module, layer.hidden, tensors) }
  if (found.gate) shared.gate = tensors.use(found.gate, [1, layer.hidden], 'the shared-expert gate [1, hidden_size]')
  return shared
}

/** A dense MLP beside the experts as the MoE layer's shared branch, with the norms of both branches (Gemma 4). */
function denseBeside(context: SpecContext, layer: MoeLayer, tensors: LayerTensors, prefix: string, descriptor: MoeDescriptor): void {
  const decl = context.forward.denseBesideExperts
  if (!decl) return
  descriptor.shared = { mlp: denseMlp(context, `${prefix}${decl.module}`, layer.hidden, tensors) }
  const norm = (name: string): string => tensors.use(`${prefix}${name}.weight`, [layer.hidden], `the ${name} [hidden_size]`)
  descriptor.branch_norms = { experts_input: norm(decl.expertsInput), experts_output: norm(decl.expertsOutput), shared_output: norm(decl.mlpOutput) }
}

/** An MoE layer: router, routed experts (their tensors were checked by detection) and shared experts. */
function moeDescriptor(context: SpecContext, layer: MoeLayer, tensors: LayerTensors, prefix: string): MoeDescriptor {
  const zero = zeroExperts(context)
  const router = routerDescriptor(context, layer, tensors, zero)
  const descriptor: MoeDescriptor = {
    block: layer.block,
    ...expertSource(layer),
    top_k: layer.topK,
    activation: context.forward.expertActivation === 'silu' ? gatedActivation(context) : context.forward.expertActivation,
    router,
  }
  if (zero > 0) descriptor.zero_experts = zero
  const shared = sharedExperts(context, layer, tensors)
  if (shared) descriptor.shared = shared
  denseBeside(context, layer, tensors, prefix, descriptor)
  for (const name of expertTensorNames(layer)) tensors.used.add(name)
  return descriptor
}

/** The dense MLP under `module` (a full module name). */
export function denseMlpDescriptor(context: SpecContext, tensors: LayerTensors, module: string): DenseMlpDescriptor {
  return denseMlp(context, module, context.hidden, tensors)
}

/**
 * The feed-forward part of decoder layer `index` (names starting with `prefix`): its MoE block when
 * detection found one, else a dense MLP under `mlp`, `feed_forward` or `block_sparse_moe` (or the module `module`).
 * @throws MoeQuantError `E_LAYOUT_MISSING_TENSOR` for a layer with neither
 */
export function mlpDescriptor(context: SpecContext, tensors: LayerTensors, index: number, prefix: string, moe: MoeLayer | undefined, module?: string): MlpDescriptor {
  if (moe) return { kind: 'moe', ...moeDescriptor(context, moe, tensors, prefix) }
  const projections = context.forward.expertActivation === 'relu2' ? ['up_proj'] : ['gate_proj', 'w1']
  const has = (b: string): boolean => projections.some((p) => tensors.has(`${prefix}${b}.${p}.weight`))
  const projection = projections[0] as string
  // `block_sparse_moe`: a hub layout whose reverse renaming moved the dense MLPs there too (Kimi-Linear).
  const block = module ?? ['mlp', 'feed_forward', 'block_sparse_moe'].find(has)
  if (!block || !has(block)) {
    throw new MoeQuantError('E_LAYOUT_MISSING_TENSOR', `layer ${index} has neither routed experts nor a dense MLP (${prefix}${block ?? 'mlp'}.${projection}.weight)`)
  }
  return { kind: 'dense', ...denseMlp(context, `${prefix}${block}`, context.hidden, tensors) }
}
