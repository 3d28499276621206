//! The rotary embedding, as TS describes it: transformers' `rope_parameters` with every default resolved.

use serde::Deserialize;

/// transformers' `rope_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum RopeKind {
    Default,
    Linear,
    Llama3,
    Yarn,
    /// Phi-3's LongRoPE as PhiMoE computes it: the short factors always, `short_mscale` or, past
    /// `original_max_position_embeddings` positions, `long_mscale` on cos and sin.
    Longrope,
    /// Gemma 4's proportional rope: `rotary_dim / 2` frequencies over the whole head, of which the first
    /// `proportional_angles` are `theta^(-2i / rotary_dim)` and the others 0 (their dimensions are left as they
    /// are), all divided by `factor`.
    Proportional,
}

/// Rotary embedding parameters, as transformers' `rope_parameters` describe them.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[ts(optional_fields)]
pub struct RopeDescriptor {
    pub kind: RopeKind,
    pub theta: f64,
    /// Number of leading dimensions of each head that are rotated (head_dim × partial_rotary_factor).
    pub rotary_dim: usize,
    /// Rotate adjacent pairs (DeepSeek-V3's `rope_interleave`) instead of the two halves.
    #[serde(default)]
    pub interleaved: bool,
    #[serde(default)]
    pub factor: Option<f64>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<f64>,
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    #[serde(default)]
    pub beta_fast: Option<f64>,
    #[serde(default)]
    pub beta_slow: Option<f64>,
    #[serde(default)]
    pub mscale: Option<f64>,
    #[serde(default)]
    pub mscale_all_dim: Option<f64>,
    #[serde(default)]
    pub attention_factor: Option<f64>,
    #[serde(default)]
    pub truncate: Option<bool>,
    /// LongRoPE: one divisor per inverse frequency.
    #[serde(default)]
    pub short_factor: Option<Vec<f64>>,
    #[serde(default)]
    pub short_mscale: Option<f64>,
    #[serde(default)]
    pub long_mscale: Option<f64>,
    /// Proportional: how many of the `rotary_dim / 2` frequencies rotate.
    #[serde(default)]
    pub proportional_angles: Option<usize>,
}
