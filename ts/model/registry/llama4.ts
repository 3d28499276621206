/**
 * Llama 4 (text model): fused experts stored transposed, `gate_up_proj [E,H,2I]` (gate columns first)
 * and `down_proj [E,I,H]`; top-K on the logits with sigmoid scores; a shared expert on every MoE layer;
 * MoE every `interleave_moe_layer_step`-th layer (or the layers listed in `moe_layers`).
 * transformers: models/llama4/modeling_llama4.py
 */
import type { ArchitectureEntry } from './types'

export const llama4: ArchitectureEntry = {
  modelTypes: ['llama4_text', 'llama4'],
  family: 'Llama4',
  layouts: [
    {
      kind: 'fused_transposed',
      block: 'feed_forward',
      tensors: { gateUp: 'experts.gate_up_proj', down: 'experts.down_proj' },
      router: 'router.weight',
    },
  ],
  router: 'topk_sigmoid',
  placement: { kind: 'interleave' },
  sharedExperts: { module: 'shared_expert' },
  forwardUnsupported:
    'layers without rope (no_rope_layers) with attention temperature tuning, chunked attention ' +
    '(attention_chunk_size), the weightless L2 q/k norm and the router weight applied to the expert input ' +
    'are not expressible in the model descriptor yet',
}
