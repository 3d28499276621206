/**
 * MoE families moe-quant detects (their experts are read by structure and quantize weight-only) whose
 * calibration forward needs a block the native forward lacks: the block, as the refusal names it.
 */
export const MISSING_BLOCKS: Readonly<Record<string, string>> = {
  minimax: "lightning attention (MiniMax-Text-01's linear attention with per-head decay) on its linear layers",
  kimi_linear: 'Kimi Delta Attention (a gated delta-rule linear attention) on its linear layers',
}
