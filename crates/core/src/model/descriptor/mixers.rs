//! The token mixers of hybrid stacks, as TS describes them: Gated DeltaNet and Kimi Delta Attention (linear
//! attention), Mamba-2, Mamba, the gated short convolution and lightning attention.

use serde::Deserialize;

/// A Gated DeltaNet mixer: projections, a depthwise causal convolution with SiLU over q, k and v, the gated
/// delta rule (per value head, a `[key_head_dim, value_head_dim]` state decayed by `exp(g)` and corrected toward
/// each value with rate `β`), a per-head RMSNorm gated by `silu(z)`, and the output projection.
/// transformers: models/qwen3_next `Qwen3NextGatedDeltaNet`, models/qwen3_5_moe `Qwen3_5MoeGatedDeltaNet`.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct GatedDeltaNetDescriptor {
    pub projections: DeltaNetProjections,
    /// Depthwise convolution weight `[2·key_heads·key_head_dim + value_heads·value_head_dim, 1, conv_kernel]`
    /// (no bias), over the channels q, k, v in that order.
    pub conv1d: String,
    /// `[value_heads]`: added to `a` before the softplus.
    pub dt_bias: String,
    /// `[value_heads]`: `g = -exp(A_log) · softplus(a + dt_bias)`.
    pub a_log: String,
    /// Weight `[value_head_dim]` of the gated RMSNorm (`w · x̂ · silu(z)`, plain weight, the model's eps).
    pub norm: String,
    /// Module name of the output projection `[H, value_heads·value_head_dim]`.
    pub out_proj: String,
    pub num_key_heads: usize,
    pub num_value_heads: usize,
    pub key_head_dim: usize,
    pub value_head_dim: usize,
    pub conv_kernel: usize,
}

/// How a Gated DeltaNet stores its input projections (module names, no biases).
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[serde(tag = "layout", rename_all = "snake_case")]
pub enum DeltaNetProjections {
    /// Qwen3-Next: `in_proj_qkvz [2·key_dim + 2·value_dim, H]` grouped by key head, each group
    /// `[q (dk) | k (dk) | v (r·dv) | z (r·dv)]` with `r = value_heads / key_heads`, and `in_proj_ba [2·value_heads, H]`
    /// grouped likewise, `[b (r) | a (r)]`.
    Grouped { qkvz: String, ba: String },
    /// Qwen3.5: `in_proj_qkv [2·key_dim + value_dim, H]` (all q heads, all k heads, all v heads),
    /// `in_proj_z [value_dim, H]`, `in_proj_b` and `in_proj_a [value_heads, H]`.
    Split { qkv: String, z: String, b: String, a: String },
}

/// A Kimi Delta Attention mixer: q, k and v projected from the hidden states, each through a depthwise causal
/// convolution and SiLU; per token a log decay for every key channel, `g = −exp(A_log) · softplus(f_b(f_a(x)) +
/// dt_bias)`, and a rate per head, `β = sigmoid(b_proj(x))`; the gated delta rule (per head a `[head_dim, head_dim]`
/// state, each of its rows decayed by its channel's `exp(g)`); per head an RMSNorm gated by
/// `sigmoid(g_b(g_a(x)))`; the output projection. No projection has a bias.
/// transformers: models/kimi_linear `KimiLinearDeltaAttention`.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct KimiDeltaAttentionDescriptor {
    /// Module names of the projections q, k and v `[heads·head_dim, H]`.
    pub q_proj: String,
    pub k_proj: String,
    pub v_proj: String,
    /// The depthwise convolution weights over the channels of q, k and v in that order (no bias): one
    /// `[3·heads·head_dim, 1, conv_kernel]` (transformers' `conv1d`), or one `[heads·head_dim, 1, conv_kernel]` each
    /// (the hub's `q_conv1d`, `k_conv1d`, `v_conv1d`), joined along the channels.
    pub conv1d: Vec<String>,
    /// Module names of the decay's low-rank projections `[head_dim, H]` and `[heads·head_dim, head_dim]`.
    pub f_a_proj: String,
    pub f_b_proj: String,
    /// `[heads·head_dim]`, added before the softplus.
    pub dt_bias: String,
    /// `[1, 1, heads, 1]`: the decay rate of each head is `exp(A_log)`.
    pub a_log: String,
    /// Module name of the rate projection `[heads, H]`.
    pub b_proj: String,
    /// Module names of the output gate's low-rank projections `[head_dim, H]` and `[heads·head_dim, head_dim]`.
    pub g_a_proj: String,
    pub g_b_proj: String,
    /// Weight `[head_dim]` of the gated RMSNorm (`w · x̂ · sigmoid(gate)`, the model's eps).
    pub norm: String,
    /// Module name of the output projection `[H, heads·head_dim]`.
    pub o_proj: String,
    pub num_heads: usize,
    pub head_dim: usize,
    pub conv_kernel: usize,
}

/// A Mamba-2 mixer: `[z | xBC | dt] = in_proj(x)`; `xBC = silu(causal depthwise conv(xBC))`, split into x
/// `[heads, head_dim]`, B and C `[groups, state]`; the selective scan with `A = -exp(A_log)`,
/// `dt = softplus(dt + dt_bias)` clamped to the time-step limits, and the `D` skip; then `y · silu(z)`
/// RMS-normalised per group of `heads·head_dim / groups` channels, times the norm weight, and `out_proj`.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[ts(optional_fields)]
pub struct Mamba2Descriptor {
    /// Module names of the projections `[heads·head_dim·2 + 2·groups·state + heads, H]` and `[H, heads·head_dim]`.
    pub in_proj: String,
    pub out_proj: String,
    /// in_proj and out_proj carry biases.
    #[serde(default)]
    pub proj_bias: bool,
    /// Module name of the depthwise convolution, weight `[conv_dim, 1, conv_kernel]`.
    pub conv1d: String,
    /// The convolution carries a bias `[conv_dim]`.
    #[serde(default)]
    pub conv_bias: bool,
    /// `[heads]` tensors.
    pub a_log: String,
    pub d: String,
    pub dt_bias: String,
    /// Weight `[heads·head_dim]` of the gated group norm.
    pub norm: String,
    pub norm_eps: f64,
    pub num_heads: usize,
    pub head_dim: usize,
    pub n_groups: usize,
    pub state_size: usize,
    pub conv_kernel: usize,
    /// Positions per chunk of the chunked scan (transformers' `chunk_size`).
    pub chunk_size: usize,
    /// The time step is clamped to `[dt_min, dt_max]` (no upper bound when absent).
    #[serde(default)]
    pub dt_min: f64,
    #[serde(default)]
    pub dt_max: Option<f64>,
}

impl Mamba2Descriptor {
    /// Channels of x, B and C together (what the convolution runs over).
    pub fn conv_dim(&self) -> usize {
        self.num_heads * self.head_dim + 2 * self.n_groups * self.state_size
    }
}

/// A Mamba (selective state space) mixer: `[x | z] = in_proj(h)`; `x = silu(causal depthwise conv(x))`;
/// `[dt | B | C] = x_proj(x)`, split `[dt_rank, state, state]` and each RMS-normalised where the family has those
/// norms (Jamba); `dt = softplus(dt · dt_projᵀ + dt_proj.bias)`; per channel c, a state `h ∈ R^state` from zero,
/// `h_t = exp(A[c] · dt_t[c]) ⊙ h_t-1 + dt_t[c] · B_t · x_t[c]`, `y_t[c] = h_t · C_t + D[c] · x_t[c]`, with
/// `A = -exp(A_log)`; then `y · silu(z)` and `out_proj`.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[ts(optional_fields)]
pub struct MambaDescriptor {
    /// Module names of the projections `[2·intermediate, H]`, `[dt_rank + 2·state, intermediate]` (no bias),
    /// `[intermediate, dt_rank]` (with a bias, added before the softplus) and `[H, intermediate]`.
    pub in_proj: String,
    pub x_proj: String,
    pub dt_proj: String,
    pub out_proj: String,
    /// in_proj and out_proj carry biases.
    #[serde(default)]
    pub proj_bias: bool,
    /// Module name of the depthwise convolution, weight `[intermediate, 1, conv_kernel]`.
    pub conv1d: String,
    /// The convolution carries a bias `[intermediate]`.
    #[serde(default)]
    pub conv_bias: bool,
    /// `[intermediate, state]`.
    pub a_log: String,
    /// `[intermediate]`.
    pub d: String,
    /// Weights of the RMSNorms of dt `[dt_rank]`, B and C `[state]` (Jamba's `dt_layernorm`, `b_layernorm`,
    /// `c_layernorm`); absent where the mixer has none.
    #[serde(default)]
    pub dt_norm: Option<String>,
    #[serde(default)]
    pub b_norm: Option<String>,
    #[serde(default)]
    pub c_norm: Option<String>,
    /// eps of those norms.
    #[serde(default)]
    pub norm_eps: f64,
    pub intermediate_size: usize,
    pub state_size: usize,
    pub dt_rank: usize,
    pub conv_kernel: usize,
}

/// A gated short convolution: `[B | C | x] = in_proj(h)`, three chunks of `H` channels in that order; `y = C ⊙
/// conv(B ⊙ x)` with a causal depthwise convolution and no activation; `out_proj(y)`.
/// transformers: models/lfm2_moe `Lfm2MoeShortConv`.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct ShortConvDescriptor {
    /// Module names of the projections `[3H, H]` and `[H, H]`.
    pub in_proj: String,
    pub out_proj: String,
    /// Module name of the convolution, weight `[H, 1, conv_kernel]`.
    pub conv: String,
    /// The projections and the convolution carry biases (LFM2's `conv_bias`).
    #[serde(default)]
    pub bias: bool,
    pub conv_kernel: usize,
}

/// Lightning attention: `[q | k | v] = silu(qkv_proj(h))` per head (`[heads, 3·head_dim]`), the decayed linear
/// attention of each head (rate from the head, the layer's index and the number of layers), an RMSNorm over all
/// heads, the gate `sigmoid(output_gate(h))`, `out_proj`. transformers: models/minimax `MiniMaxLightningAttention`.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct LightningAttentionDescriptor {
    /// Module names of the projections `[3·heads·head_dim, H]`, `[heads·head_dim, H]` and `[H, heads·head_dim]`.
    pub qkv_proj: String,
    pub output_gate: String,
    pub out_proj: String,
    /// The output norm's weight `[heads·head_dim]`.
    pub norm: String,
    /// eps of that norm.
    pub norm_eps: f64,
    pub num_heads: usize,
    pub head_dim: usize,
    /// Positions per block of the computation (config `block_size`).
    pub block_size: usize,
    /// The layer's index and the model's number of layers, which scale the decay rates.
    pub layer_index: usize,
    pub num_layers: usize,
    /// The module whose stored `slope_rate`, `query_decay`, `key_decay` and `diagonal_decay` transformers loads
    /// and uses instead of computing them; absent where the checkpoint has none.
    #[serde(default)]
    pub stored_decays: Option<String>,
}
