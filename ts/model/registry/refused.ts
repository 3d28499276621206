/**
 * Families whose MoE blocks moe-quant reads (weight-only formats quantize them) but whose forward needs a block the
 * descriptor does not have: each entry pins the layouts detection must find and says what is missing, so that
 * calibration is refused naming it instead of for want of an entry.
 * transformers: models/<model_type>/modeling_<model_type>.py of each.
 */
import { fusedGateUp, perExpertGateUpDown } from './layouts'
import type { ArchitectureEntry, LayoutDecl, PlacementRule } from './types'

const gateUpDown: readonly LayoutDecl[] = [perExpertGateUpDown('mlp'), fusedGateUp('mlp')]
const mlpLayerTypes = (firstDenseKey: string | undefined, firstDense: number): PlacementRule =>
  firstDenseKey ? { kind: 'mlp_layer_types', firstDenseKey, firstDense } : { kind: 'mlp_layer_types', firstDense }

/** A.X-K2: DeepSeek-V3's experts and router with DeepSeek sparse attention, whose forward here is DeepSeek-V3.2's
 * and GLM-5's; A.X-K2's own indexer is not verified against transformers. */
const axk: ArchitectureEntry = {
  modelTypes: ['axk2'],
  family: 'A.X-K2',
  layouts: gateUpDown,
  router: 'sigmoid_group_topk',
  placement: mlpLayerTypes('first_k_dense_replace', 1),
  sharedExperts: { module: 'shared_experts' },
  forwardUnsupported: "DeepSeek sparse attention as A.X-K2 computes it (its indexer is not verified against transformers' yet)",
}

export const axk2: ArchitectureEntry = axk

export const axk1: ArchitectureEntry = {
  ...axk,
  modelTypes: ['axk1'],
  family: 'A.X-K1',
  forwardUnsupported: "an RMSNorm on the MoE block's output (post_mlp_layernorm), which the MoE block does not apply",
}

export const mistral4: ArchitectureEntry = {
  modelTypes: ['mistral4'],
  family: 'Mistral-4',
  layouts: gateUpDown,
  router: 'softmax_topk',
  placement: { kind: 'first_k_dense' },
  sharedExperts: { module: 'shared_experts' },
  forwardUnsupported:
    'its MLA attention scales the queries by position (Llama-4 scaling, llama_4_scaling_beta), which the attention does ' +
    'not apply; with expert groups, its softmax router also keeps the groups whose best two scores are highest',
}

export const miniCpm5Moe: ArchitectureEntry = {
  modelTypes: ['minicpm5_moe'],
  family: 'MiniCPM5-MoE',
  layouts: gateUpDown,
  router: 'sigmoid_group_topk',
  placement: mlpLayerTypes('first_k_dense_replace', 1),
  sharedExperts: { module: 'shared_experts' },
  forwardUnsupported: 'gated attention (q_gate_proj: a sigmoid gate on every head of the attention output), which the attention does not apply',
}

export const mimoV2Flash: ArchitectureEntry = {
  modelTypes: ['mimo_v2_flash'],
  family: 'MiMo-V2-Flash',
  layouts: gateUpDown,
  router: 'sigmoid_group_topk',
  placement: mlpLayerTypes(undefined, 1),
  forwardUnsupported:
    'rope parameters per layer type, value heads narrower than the query and key heads, and twice the key/value heads on ' +
    'its sliding layers, none of which the descriptor expresses',
}

export const afmoe: ArchitectureEntry = {
  modelTypes: ['afmoe'],
  family: 'AFMoE',
  layouts: [perExpertGateUpDown('mlp', 'router.gate.weight'), fusedGateUp('mlp', 'router.gate.weight')],
  router: 'sigmoid_group_topk',
  placement: mlpLayerTypes('num_dense_layers', 1),
  sharedExperts: { module: 'shared_experts' },
  forwardUnsupported:
    "an attention output gate (gate_proj, a sigmoid gate) and norms on each sublayer's input and output, which the " +
    'decoder layer does not apply',
}

export const cohere2Moe: ArchitectureEntry = {
  modelTypes: ['cohere2_moe'],
  family: 'Cohere2-MoE',
  layouts: gateUpDown,
  router: 'softmax_topk',
  placement: mlpLayerTypes('first_k_dense_replace', 0),
  forwardUnsupported: "Cohere's parallel layer (attention and MLP both read one norm of the layer's input), which the decoder layer does not apply",
}

export const mellum: ArchitectureEntry = {
  modelTypes: ['mellum'],
  family: 'Mellum',
  layouts: gateUpDown,
  router: 'softmax_topk',
  placement: mlpLayerTypes(undefined, 0),
  forwardUnsupported: 'rope parameters given per layer type (full_attention, sliding_attention), where the descriptor has one rope',
}

export const laguna: ArchitectureEntry = {
  modelTypes: ['laguna'],
  family: 'Laguna',
  layouts: gateUpDown,
  router: 'sigmoid_group_topk',
  placement: mlpLayerTypes(undefined, 1),
  forwardUnsupported:
    'a softplus gate on the attention output (g_proj), attention heads per layer and rope parameters per layer type, ' +
    'which the descriptor does not express',
}
