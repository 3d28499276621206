/**
 * GPT-OSS: fused experts `gate_up_proj [E,H,2I]` with gate and up interleaved (even columns gate, odd
 * up) and biases, `down_proj [E,I,H]`; router with bias, top-K on the logits then softmax over the K.
 * The structure alone cannot tell interleaved from concatenated columns, so this entry must say it.
 * transformers: models/gpt_oss/modeling_gpt_oss.py
 */
import type { ArchitectureEntry } from './types'

export const gptOss: ArchitectureEntry = {
  modelTypes: ['gpt_oss'],
  family: 'GPT-OSS',
  layouts: [
    {
      kind: 'fused_interleaved',
      block: 'mlp',
      tensors: {
        gateUp: 'experts.gate_up_proj',
        down: 'experts.down_proj',
        gateUpBias: 'experts.gate_up_proj_bias',
        downBias: 'experts.down_proj_bias',
      },
      router: 'router.weight',
    },
  ],
  router: 'topk_softmax',
  placement: { kind: 'all' },
  forwardUnsupported:
    'attention sinks (self_attn.sinks, an extra softmax logit per head) and sliding-window layers (layer_types) ' +
    'are not expressible in the model descriptor yet',
}
