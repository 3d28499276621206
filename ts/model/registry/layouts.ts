/** Builders for the layout declarations families share, so entries stay one line per layout. */
import type { LayoutDecl } from './types'

/** Hub per-expert layout with gate_proj/up_proj/down_proj. */
export function perExpertGateUpDown(block: string, router = 'gate.weight'): LayoutDecl {
  return {
    kind: 'per_expert',
    block,
    tensors: { gate: 'experts.{e}.gate_proj.weight', up: 'experts.{e}.up_proj.weight', down: 'experts.{e}.down_proj.weight' },
    router,
  }
}

/** Hub per-expert layout with w1 (gate) / w3 (up) / w2 (down). */
export function perExpertW1W3W2(block: string, router = 'gate.weight'): LayoutDecl {
  return {
    kind: 'per_expert',
    block,
    tensors: { gate: 'experts.{e}.w1.weight', up: 'experts.{e}.w3.weight', down: 'experts.{e}.w2.weight' },
    router,
  }
}

/** transformers 5 fused layout: `experts.gate_up_proj [E,2I,H]`, `experts.down_proj [E,H,I]`. */
export function fusedGateUp(block: string, router = 'gate.weight'): LayoutDecl {
  return { kind: 'fused', block, tensors: { gateUp: 'experts.gate_up_proj', down: 'experts.down_proj' }, router }
}

/** Fused experts stored with the input axis first: `experts.gate_up_proj [E,H,2I]` (gate columns first),
 * `experts.down_proj [E,I,H]` (Qwen3-VL-MoE and Llama4 on the hub). */
export function fusedTransposedGateUp(block: string, router = 'gate.weight'): LayoutDecl {
  return { kind: 'fused_transposed', block, tensors: { gateUp: 'experts.gate_up_proj', down: 'experts.down_proj' }, router }
}
