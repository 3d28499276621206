//! DeepSeek sparse attention, as TS describes it: which keys each query of an MLA layer attends to.

use serde::Deserialize;

/// DeepSeek sparse attention (DSA) on an MLA layer: each query attends only to the `top_k` keys of highest index
/// score among those the causal mask lets it see (all of them when it sees no more than `top_k`). The scores come
/// from the layer's lightning indexer, or, on a layer without one (GLM-5's `shared` layers), the keys are those the
/// last layer with an indexer chose.
/// transformers: models/deepseek_v32 `DeepseekV32Attention`, models/glm_moe_dsa `GlmMoeDsaAttention`.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[ts(optional_fields)]
pub struct SparseAttentionDescriptor {
    /// config `index_topk`.
    pub top_k: usize,
    /// Absent: reuse the choice of the last layer that has an indexer.
    #[serde(default)]
    pub indexer: Option<IndexerDescriptor>,
}

/// The lightning indexer: `score(s, t) = Σ_h w_h(s) · relu(q_h(s) · k(t) · head_dim^-½)` with
/// `w(s) = weights_proj(x_s) · heads^-½`, q from the MLA query latent (after `q_a_layernorm`), one key per position
/// `k = LayerNorm(wk(x))`, and the rope on the leading `rope_dim` dimensions of each q head and of k. Scores in f32.
/// transformers: models/deepseek_v32 `DeepseekV32Indexer`, models/glm_moe_dsa `GlmMoeDsaIndexer`.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct IndexerDescriptor {
    /// Module names: `wq_b [heads·head_dim, q_lora_rank]`, `wk [head_dim, H]`, `weights_proj [heads, H]`.
    pub wq_b: String,
    pub wk: String,
    pub weights_proj: String,
    /// Weight `[head_dim]` of the LayerNorm of k (its bias `….bias` beside it).
    pub k_norm: String,
    pub k_norm_eps: f64,
    /// config `index_n_heads`, `index_head_dim`.
    pub num_heads: usize,
    pub head_dim: usize,
    /// Rotated leading dimensions of each head (the MLA's `qk_rope_head_dim`), with the model's rope tables.
    pub rope_dim: usize,
    /// The rope rotates adjacent pairs (GLM-5) instead of halves (DeepSeek-V3.2).
    pub rope_interleaved: bool,
}
