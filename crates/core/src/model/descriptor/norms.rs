//! The norms of a decoder layer, as TS describes them: their kind, where they sit around the sublayers, and the
//! norms of Gemma 4's MoE branches.

use serde::Deserialize;

/// The norm of the residual stream (the decoder layers' and the final one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    /// RMSNorm `x · rsqrt(mean(x²) + eps) · w`.
    #[default]
    Rms,
    /// LayerNorm with a bias (`<norm>.bias` beside each weight): `(x − mean) · rsqrt(var + eps) · w + b`.
    Layer,
}

/// Where a decoder layer's two norms sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum NormPlacement {
    /// On each sublayer's input: `h = x + attn(n₁(x))`, `y = h + mlp(n₂(h))`.
    #[default]
    Pre,
    /// On each sublayer's output (OLMo-2, FlexOlmo): `h = x + n₁(attn(x))`, `y = h + n₂(mlp(h))`.
    Post,
    /// On each sublayer's input, the residual taken after the norm and both terms weighted (MiniMax-Text-01):
    /// `a = n₁(x)`, `h = α₁ a + β₁ attn(a)`, `b = n₂(h)`, `y = α₂ b + β₂ mlp(b)` (`residual_scales`).
    NormedResidual,
    /// On each sublayer's input and output (Gemma 4): `h = x + o₁(attn(n₁(x)))`, `y = h + o₂(mlp(n₂(h)))`, the
    /// output norms `o₁`, `o₂` in `output_norms`.
    Sandwich,
}

/// The norms on the outputs of a layer's sublayers, with the placement `sandwich`: RMSNorm weights `[H]`.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct OutputNorms {
    /// After the token mixer (Gemma 4's `post_attention_layernorm`).
    pub attention: String,
    /// After the feed-forward part (Gemma 4's `post_feedforward_layernorm`).
    pub mlp: String,
}

/// Gemma 4's MoE layer, a dense MLP (the MoE descriptor's `shared`) and routed experts side by side, each branch
/// with its own norms: the MLP reads the layer's normed input `n₂(h)` and its output is normed by
/// `shared_output`; the router reads the un-normed `h`, the experts `experts_input(h)`, and their output is normed
/// by `experts_output`; the block's output is the sum of the two. RMSNorm weights `[H]`.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct BranchNorms {
    /// `pre_feedforward_layernorm_2`.
    pub experts_input: String,
    /// `post_feedforward_layernorm_2`.
    pub experts_output: String,
    /// `post_feedforward_layernorm_1`.
    pub shared_output: String,
}

/// The weights `[α₁, β₁, α₂, β₂]` of a layer whose residual is taken after the norm.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, ts_rs::TS)]
pub struct ResidualScales {
    pub attention_alpha: f64,
    pub attention_beta: f64,
    pub mlp_alpha: f64,
    pub mlp_beta: f64,
}
