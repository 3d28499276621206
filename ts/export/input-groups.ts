/**
 * Which linears read one input (q/k/v, gate/up …): they share an input scale, and with a group-scaled format their
 * weight amax (SPEC §4.3).
 */
import type { DenseMlpDescriptor, ModelDescriptor } from '../native/contract'

/** Sibling linears that read one input, by name: q/k/v (Kimi Delta Attention's with the first projections of its
 * decay and output gate and b_proj, the decay's beside them on the hub, in `forget_gate` in transformers 5), MLA's two
 * down-projections (with a sparse-attention indexer, its wk and weights_proj read the same input, and its wq_b the
 * query latent q_b_proj reads), gate/up (w1/w3), and the query/key/value and output-gate projections of a Gated
 * DeltaNet mixer (Qwen3.5). The first group a module completes is its group. */
const NAMED_INPUT_GROUPS = [
  ['q_proj', 'k_proj', 'v_proj', 'f_a_proj', 'b_proj', 'g_a_proj'],
  ['q_proj', 'k_proj', 'v_proj', 'forget_gate.f_a_proj', 'b_proj', 'g_a_proj'],
  ['q_proj', 'k_proj', 'v_proj'],
  ['q_a_proj', 'kv_a_proj_with_mqa', 'indexer.wk', 'indexer.weights_proj'],
  ['q_a_proj', 'kv_a_proj_with_mqa'],
  ['q_proj', 'kv_a_proj_with_mqa'],
  ['q_b_proj', 'indexer.wq_b'],
  ['gate_proj', 'up_proj'],
  ['w1', 'w3'],
  ['in_proj_qkv', 'in_proj_z'],
] as const

/**
 * Groups of linears that read the same input: q/k/v (MLA: the query and key/value down-projections; Gated DeltaNet:
 * its input projections; lightning attention: qkv_proj and output_gate; Kimi Delta Attention: q/k/v, f_a_proj,
 * b_proj and g_a_proj), and gate/up of dense MLPs and shared experts (of both sublayers of a LongCat-Flash layer).
 * From the
 * forward's descriptor when there is one; otherwise (weight-only formats, which run no forward) from the
 * module names (NAMED_INPUT_GROUPS, siblings of one parent).
 */
export function inputGroups(descriptor: ModelDescriptor | null, modules: Iterable<string>): string[][] {
  const groups: string[][] = []
  if (!descriptor) {
    const present = new Set(modules)
    for (const module of present) {
      for (const [first, ...rest] of NAMED_INPUT_GROUPS) {
        if (!module.endsWith(`.${first}`)) continue
        const parent = module.slice(0, -first.length)
        const group = [module, ...rest.map((leaf) => `${parent}${leaf}`)]
        if (group.every((m) => present.has(m))) {
          groups.push(group)
          break
        }
      }
    }
    return groups
  }
  // Gate and up of an MLP are two linears reading one input (a fused gate_up, or an ungated up, is one).
  const mlpGroup = (mlp: DenseMlpDescriptor): void => {
    if (mlp.gate && mlp.up) groups.push([mlp.gate, mlp.up])
  }
  // A LongCat-Flash layer's second attention and its two dense MLPs are sublayers of their own.
  const sublayers = descriptor.layers.flatMap(({ attention, mlp, double }) => [
    { attention, mlp },
    ...(double
      ? [
          { attention: double.attention, mlp: { kind: 'dense' as const, ...double.first_mlp } },
          { attention: undefined, mlp: { kind: 'dense' as const, ...double.second_mlp } },
        ]
      : []),
  ])
  for (const { attention, mlp } of sublayers) {
    // A fused q/k/v projection is one linear; keys that are the values too are one (Gemma 4: q and k).
    if (attention?.kind === 'gqa' && !attention.qkv) {
      groups.push(attention.values_from_keys ? [attention.q, attention.k] : [attention.q, attention.k, attention.v])
    }
    if (attention?.kind === 'mla') {
      // A sparse-attention indexer reads the layer's input (wk, weights_proj) and the query latent (wq_b).
      const indexer = attention.sparse?.indexer
      groups.push([(attention.q_a_proj ?? attention.q_proj) as string, attention.kv_a_proj, ...(indexer ? [indexer.wk, indexer.weights_proj] : [])])
      if (indexer && attention.q_b_proj) groups.push([attention.q_b_proj, indexer.wq_b])
    }
    if (attention?.kind === 'gated_delta_net') {
      // Every input projection reads the layer's normed hidden states (ModelOpt leaves in_proj_a/b, in_proj_ba unquantized).
      const p = attention.projections
      groups.push(p.layout === 'grouped' ? [p.qkvz, p.ba] : [p.qkv, p.z, p.b, p.a])
    }
    // Lightning attention's qkv_proj and output_gate both read the layer's normed hidden states.
    if (attention?.kind === 'lightning') groups.push([attention.qkv_proj, attention.output_gate])
    // So do Kimi Delta Attention's q, k, v, the decay's and the output gate's first projections, and b_proj.
    if (attention?.kind === 'kimi_delta_attention') {
      groups.push([attention.q_proj, attention.k_proj, attention.v_proj, attention.f_a_proj, attention.b_proj, attention.g_a_proj])
    }
    if (mlp?.kind === 'dense') mlpGroup(mlp)
    if (mlp?.kind === 'moe' && mlp.shared) mlpGroup(mlp.shared.mlp)
  }
  return groups
}
