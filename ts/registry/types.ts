/**
 * The shape of one architecture registry entry: a declarative description of a model family's MoE
 * blocks. Tensor patterns are relative to a decoder layer (`model.layers.L.`); `{e}` stands for the expert
 * index. An entry always wins over the generic structural match.
 */

/** How the routed experts of one MoE layer are stored. */
export type ExpertLayoutKind =
  /** `experts.{e}.gate_proj.weight [I,H]`, `up_proj [I,H]`, `down_proj [H,I]` (or w1/w3/w2). */
  | 'per_expert'
  /** `gate_up_proj [E,2I,H]` (gate rows first, then up), `down_proj [E,H,I]`. */
  | 'fused'
  /** `gate_up_proj [E,H,2I]` (gate columns first), `down_proj [E,I,H]`. */
  | 'fused_transposed'
  /** `gate_up_proj [E,H,2I]` with gate/up interleaved (even columns gate, odd up), `down_proj [E,I,H]`. */
  | 'fused_interleaved'

/** How a router turns logits into the K experts and their weights. */
export type RouterKind =
  /** softmax over all experts, top-K, renormalised when `norm_topk_prob` (Qwen, OLMoE). */
  | 'softmax_topk'
  /** softmax, top-K, always renormalised (Mixtral, MiniMax, Qwen3.5). */
  | 'softmax_topk_norm'
  /** sigmoid scores + correction bias for choosing, group-limited top-K, routed scaling (DeepSeek-V3, GLM4). */
  | 'sigmoid_group_topk'
  /** top-K on the logits, softmax over the K (Granite, GPT-OSS, Llama4 uses sigmoid over the K). */
  | 'topk_softmax'
  /** top-K on the logits, sigmoid of the K (Llama4). */
  | 'topk_sigmoid'

/** One on-disk layout a family may use, with its exact tensor names. */
export interface LayoutDecl {
  kind: ExpertLayoutKind
  /** Block path inside the decoder layer, e.g. `mlp`, `block_sparse_moe`, `feed_forward`. */
  block: string
  /** Expert tensors relative to the block. */
  tensors: {
    gate?: string
    up?: string
    down: string
    gateUp?: string
    gateUpBias?: string
    downBias?: string
  }
  /** Router weight `[E,H]` relative to the block. */
  router: string
}

/** Which decoder layers are MoE, from config.json. */
export type PlacementRule =
  /** Every layer is MoE. */
  | { kind: 'all' }
  /** Qwen: MoE unless in `mlp_only_layers`, and only every `decoder_sparse_step`-th layer. */
  | { kind: 'sparse_step' }
  /** DeepSeek/GLM: dense below `first_k_dense_replace`, then every `moe_layer_freq`-th layer. */
  | { kind: 'first_k_dense' }
  /** Llama4: `moe_layers`, or every `interleave_moe_layer_step`-th layer. */
  | { kind: 'interleave' }

/** Shared experts that every token goes through. */
export interface SharedExpertsDecl {
  /** Module path relative to the block (`shared_expert`, `shared_experts`). */
  module: string
  /** `sigmoid(gate(x))` scales the shared output (Qwen2-MoE), relative to the block. */
  gate?: string
}

export interface ArchitectureEntry {
  /** `model_type` values (of the text model) this entry handles. */
  modelTypes: readonly string[]
  /** Human-readable family name. */
  family: string
  /** Every layout the family is found in; the first that matches a layer's tensors is used. */
  layouts: readonly LayoutDecl[]
  router: RouterKind
  placement: PlacementRule
  sharedExperts?: SharedExpertsDecl
}
