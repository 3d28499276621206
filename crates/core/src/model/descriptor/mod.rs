//! The model descriptor: what the TypeScript side decided about a checkpoint (architecture, tensor names,
//! block kinds, hyper-parameters), deserialized as given. Rust never re-derives any of it. Tensor names are
//! full checkpoint names; module names get `.weight` / `.bias` appended where the block loads them.

use std::collections::BTreeMap;

use serde::Deserialize;

mod double;
mod mixers;
mod norms;
mod rope;
mod sparse;
pub use double::DoubleSublayers;
pub use mixers::{
    DeltaNetProjections, GatedDeltaNetDescriptor, KimiDeltaAttentionDescriptor, LightningAttentionDescriptor,
    Mamba2Descriptor, MambaDescriptor, ShortConvDescriptor,
};
pub use norms::{BranchNorms, NormKind, NormPlacement, OutputNorms, ResidualScales};
pub use rope::{RopeDescriptor, RopeKind};
pub use sparse::{IndexerDescriptor, SparseAttentionDescriptor};

/// One model, as TS describes it (`ts/model/spec/` builds it).
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct ModelDescriptor {
    pub hidden_size: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    /// Added to the weight of every RMSNorm of the decoder (input, post-attention, final, q/k): 1 where
    /// transformers computes `x̂ · (1 + w)` in f32 (Qwen3-Next, Qwen3.5, whose norm weights start at 0), 0 elsewhere.
    #[serde(default)]
    pub rms_norm_offset: f64,
    /// Every RMSNorm multiplies the f32 normalised values by its weight before the cast back to the compute
    /// dtype (Gemma 4), instead of after it.
    #[serde(default)]
    pub rms_norm_f32_weight: bool,
    /// Token embedding `[V, H]`.
    pub embed: String,
    /// Token ids embedded as another id is (Gemma 4's wrapper embeds its image, video and audio placeholders as
    /// its pad token).
    #[serde(default)]
    pub embed_as: Option<TokenReplacement>,
    /// Granite multiplies the embeddings by this (1 elsewhere).
    #[serde(default = "one")]
    pub embedding_multiplier: f64,
    /// Final norm weight `[H]`.
    pub final_norm: String,
    /// Output projection `[V, H]` (the embedding when tied).
    pub lm_head: String,
    /// `[V]` bias of the output projection (PhiMoE's `lm_head_bias`).
    #[serde(default)]
    pub lm_head_bias: Option<String>,
    /// The kind of the decoder layers' and the final norm.
    #[serde(default)]
    pub norm: NormKind,
    /// Granite divides the logits by this (1 elsewhere).
    #[serde(default = "one")]
    pub logits_scaling: f64,
    /// `cap · tanh(logits / cap)` (Gemma 4's `final_logit_softcapping`).
    #[serde(default)]
    pub final_logit_softcapping: Option<f64>,
    /// The rotary embedding; absent when no layer rotates (Nemotron-H, Granite-4.0-H without rope).
    #[serde(default)]
    #[ts(optional)]
    pub rope: Option<RopeDescriptor>,
    /// The rotary embeddings of the layer types whose rope differs from `rope` (Gemma 4's `full_attention` and
    /// `sliding_attention`), by layer type: the attention of a layer names its own (`rope_layer_type`).
    #[serde(default)]
    pub layer_type_ropes: BTreeMap<String, RopeDescriptor>,
    pub layers: Vec<LayerDescriptor>,
}

/// Ids `ids` are embedded as `by` is.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct TokenReplacement {
    pub ids: Vec<u32>,
    pub by: u32,
}

/// The name of expert `expert`'s tensor or module from a per-expert pattern (`…experts.{e}.down_proj.weight`).
pub fn expert_name(pattern: &str, expert: usize) -> String {
    pattern.replace("{e}", &expert.to_string())
}

fn one() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

/// One decoder layer: `x + attention(input_norm(x))`, then `x + mlp(post_attention_norm(x))`, each branch scaled
/// by the residual multiplier. A layer with a single mixer (Nemotron-H) has one of `attention` and `mlp`, no
/// `post_attention_norm`, and `input_norm` before its mixer.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[ts(optional_fields)]
pub struct LayerDescriptor {
    pub index: usize,
    /// The attention's norm weight (`n₁`: before attention, or after it when the placement is `post`; before
    /// the only mixer of a single-mixer layer).
    pub input_norm: String,
    /// The MLP's norm weight (`n₂`: before the MLP, or after it when the placement is `post`; absent on a
    /// single-mixer layer).
    #[serde(default)]
    pub post_attention_norm: Option<String>,
    #[serde(default)]
    pub norm_placement: NormPlacement,
    /// The weights of the residual terms (with the placement `normed_residual` only).
    #[serde(default)]
    pub residual_scales: Option<ResidualScales>,
    /// The norms on the sublayers' outputs (with the placement `sandwich` only).
    #[serde(default)]
    pub output_norms: Option<OutputNorms>,
    /// A `[1]` tensor multiplying the layer's output (Gemma 4's `layer_scalar`).
    #[serde(default)]
    pub output_scale: Option<String>,
    /// Granite scales each residual branch by this (1 elsewhere).
    #[serde(default = "one")]
    pub residual_multiplier: f64,
    /// The token mixer (absent on a single-mixer layer whose mixer is an MLP or MoE block).
    #[serde(default)]
    pub attention: Option<AttentionDescriptor>,
    /// The feed-forward part (absent on a single-mixer layer whose mixer is a token mixer).
    #[serde(default)]
    pub mlp: Option<MlpDescriptor>,
    /// LongCat-Flash's double sublayers: a second attention and two dense MLPs, `mlp` (the MoE) a shortcut.
    #[serde(default)]
    pub double: Option<Box<DoubleSublayers>>,
}

/// The token mixer of one layer: self-attention, linear attention or a state-space mixer.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AttentionDescriptor {
    /// Grouped-query attention (multi-head when `num_kv_heads == num_heads`).
    Gqa(GqaDescriptor),
    /// DeepSeek multi-head latent attention.
    Mla(MlaDescriptor),
    /// Gated DeltaNet linear attention (Qwen3-Next, Qwen3.5 `linear_attn`).
    GatedDeltaNet(GatedDeltaNetDescriptor),
    /// Kimi Delta Attention linear attention (Kimi-Linear's `linear_attention` layers).
    KimiDeltaAttention(KimiDeltaAttentionDescriptor),
    /// Mamba-2 (state space duality) mixer.
    Mamba2(Mamba2Descriptor),
    /// Mamba (selective state space) mixer (Jamba's `mamba`).
    Mamba(MambaDescriptor),
    /// Gated short convolution (LFM2's `conv`).
    ShortConv(ShortConvDescriptor),
    /// Lightning attention (MiniMax-Text-01's `linear_attention` layers).
    Lightning(LightningAttentionDescriptor),
}

#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[ts(optional_fields)]
pub struct GqaDescriptor {
    /// Module names of the projections (with `qkv`, q, k and v each name the fused module).
    pub q: String,
    pub k: String,
    pub v: String,
    pub o: String,
    /// One module projects q, k and v at once, its output rows q's (`q`'s rows, gate included), then k's, then
    /// v's (Param2 and Sarvam-MoE hub checkpoints' `query_key_value`, which transformers splits in that order on
    /// load); its bias, with `qkv_bias`, is stacked the same way.
    #[serde(default)]
    pub qkv: Option<String>,
    /// q/k/v carry biases.
    #[serde(default)]
    pub qkv_bias: bool,
    /// o carries a bias.
    #[serde(default)]
    pub o_bias: bool,
    /// RMSNorm weights on q and k: `[head_dim]` applied per head (Qwen3) or `[heads·head_dim]` over the
    /// whole projection (OLMoE).
    #[serde(default)]
    pub q_norm: Option<String>,
    #[serde(default)]
    pub k_norm: Option<String>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Multiplier of q·k (head_dim^-0.5 unless the family says otherwise).
    pub scaling: f64,
    /// Which earlier positions each query sees.
    #[serde(default)]
    pub mask: AttentionMask,
    /// `[heads]` learned logits joined to every row of the softmax and dropped after it (GPT-OSS `sinks`).
    #[serde(default)]
    pub sinks: Option<String>,
    /// Whether the rope rotates q and k (false on Llama4's NoPE layers).
    #[serde(default = "yes")]
    pub rope: bool,
    /// The q/k norms apply after the rope instead of before (Hunyuan's `query_layernorm` / `key_layernorm`).
    #[serde(default)]
    pub qk_norm_after_rope: bool,
    /// Weightless RMSNorm of every q and k head after the rope (Llama4 `use_qk_norm`), with the model's eps.
    #[serde(default)]
    pub qk_weightless_norm: bool,
    /// Llama4's attention temperature tuning (NoPE layers).
    #[serde(default)]
    pub temperature: Option<AttentionTemperature>,
    /// q's projection yields, head after head, the query `[head_dim]` then an output gate `[head_dim]`
    /// (`q_proj [heads·2·head_dim, H]`); the attention output is multiplied by `sigmoid(gate)` before o
    /// (Qwen3-Next, Qwen3.5).
    #[serde(default)]
    pub output_gate: bool,
    /// The values are k's projection before k's norm (Gemma 4's `attention_k_eq_v`): no v projection is read.
    #[serde(default)]
    pub values_from_keys: bool,
    /// A weightless RMSNorm of every value head, with the model's eps (Gemma 4's `v_norm`).
    #[serde(default)]
    pub v_norm: bool,
    /// The layer rotates with the model's `layer_type_ropes` entry of this layer type instead of its `rope`.
    #[serde(default)]
    pub rope_layer_type: Option<String>,
}

/// Which key positions a query at position `q` sees (transformers' masking_utils).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ts_rs::TS)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AttentionMask {
    /// `k <= q`.
    #[default]
    Causal,
    /// `q - window < k <= q` (`sliding_attention` layers, `sliding_window`).
    SlidingWindow { window: usize },
    /// `k <= q` within the same chunk: `k / size == q / size` (`chunked_attention`, `attention_chunk_size`).
    Chunked { size: usize },
}

/// q at position `p` (from 0) is multiplied by `log1p(floor((p + 1) / floor_scale)) · scale + 1`.
#[derive(Debug, Clone, Copy, Deserialize, ts_rs::TS)]
pub struct AttentionTemperature {
    /// config `attn_scale`.
    pub scale: f64,
    /// config `floor_scale`.
    pub floor_scale: f64,
}

#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[ts(optional_fields)]
pub struct MlaDescriptor {
    /// `q_proj` when `q_lora_rank` is absent, else `q_a_proj` → `q_a_layernorm` → `q_b_proj`.
    #[serde(default)]
    pub q_proj: Option<String>,
    #[serde(default)]
    pub q_a_proj: Option<String>,
    #[serde(default)]
    pub q_a_norm: Option<String>,
    #[serde(default)]
    pub q_b_proj: Option<String>,
    /// `kv_a_proj_with_mqa` `[kv_lora_rank + qk_rope_head_dim, H]`.
    pub kv_a_proj: String,
    pub kv_a_norm: String,
    /// `kv_b_proj` `[heads·(qk_nope_head_dim + v_head_dim), kv_lora_rank]`.
    pub kv_b_proj: String,
    pub o_proj: String,
    pub num_heads: usize,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    pub scaling: f64,
    /// eps of `q_a_layernorm` and `kv_a_layernorm` (transformers builds them with its default, 1e-6, whatever
    /// `rms_norm_eps` says).
    pub lora_norm_eps: f64,
    /// LongCat-Flash's LoRA scaling (absent elsewhere).
    #[serde(default)]
    pub lora_scales: Option<MlaLoraScales>,
    /// Whether the rope rotates the queries' and the shared key's `qk_rope_head_dim` channels (false: Kimi-Linear,
    /// whose MLA has no position embedding and uses those channels as they are).
    #[serde(default = "yes")]
    pub rope: bool,
    /// DeepSeek sparse attention (DeepSeek-V3.2, GLM-5): each query attends to the keys an indexer chooses;
    /// absent, to every earlier key.
    #[serde(default)]
    pub sparse: Option<SparseAttentionDescriptor>,
}

/// LongCat-Flash's MLA multiplies the queries by `query` (`√(H / q_lora_rank)`) before the rope, and the normed
/// key/value latent by `kv_latent` (`√(H / kv_lora_rank)`) before `kv_b_proj`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, ts_rs::TS)]
pub struct MlaLoraScales {
    pub query: f64,
    pub kv_latent: f64,
}

/// The feed-forward part of one layer.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MlpDescriptor {
    Dense(DenseMlpDescriptor),
    Moe(Box<MoeDescriptor>),
}

/// `down(act(gate(x)) · up(x))` (`act` silu or a GELU), or ungated `down(relu(up(x))²)` (`activation` `relu2`);
/// module names. Gate and up are either two modules or one (`gate_up`, `[2I, H]`, gate rows first: Granite's
/// `input_linear`).
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[ts(optional_fields)]
pub struct DenseMlpDescriptor {
    #[serde(default)]
    pub gate: Option<String>,
    #[serde(default)]
    pub up: Option<String>,
    #[serde(default)]
    pub gate_up: Option<String>,
    pub down: String,
    /// `silu`, `gelu` or `gelu_tanh` (gated) or `relu2` (ungated).
    #[serde(default)]
    pub activation: ExpertActivation,
}

/// How the expert tensors are stored; see `ts/model/registry/types.ts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum ExpertLayout {
    PerExpert,
    Fused,
    FusedTransposed,
    FusedInterleaved,
}

/// The activation of experts and MLPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum ExpertActivation {
    /// `silu(gate) * up`.
    #[default]
    Silu,
    /// `gelu(gate) * up`, the exact GELU (transformers' `gelu`).
    Gelu,
    /// `gelu(gate) * up`, GELU's tanh approximation (transformers' `gelu_pytorch_tanh`, `gelu_new`).
    GeluTanh,
    /// GPT-OSS: clamp, `(up + 1) · gate · sigmoid(1.702 · gate)`.
    GptOss,
    /// Ungated `relu(up)²` (Nemotron-H): no gate projection.
    Relu2,
}

/// Where the routed experts of one MoE layer are stored, and their sizes: what reading an expert's weights
/// needs (the forward's MoE block and the export's quantizer both read through it).
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[ts(optional_fields)]
pub struct ExpertTensors {
    pub layout: ExpertLayout,
    pub experts: usize,
    pub hidden: usize,
    pub intermediate: usize,
    /// Full tensor names; per-expert ones contain `{e}`.
    #[serde(default)]
    pub gate: Option<String>,
    #[serde(default)]
    pub up: Option<String>,
    pub down: String,
    #[serde(default)]
    pub gate_up: Option<String>,
    #[serde(default)]
    pub gate_up_bias: Option<String>,
    #[serde(default)]
    pub down_bias: Option<String>,
}

impl ExpertTensors {
    /// Whether the experts have a gate projection (`gate` or `gate_up`); ungated ones (Nemotron-H's relu²)
    /// have up and down only.
    pub fn gated(&self) -> bool {
        self.gate.is_some() || self.gate_up.is_some()
    }
}

#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[ts(optional_fields)]
pub struct MoeDescriptor {
    /// Module path of the MoE block, e.g. `model.layers.1.mlp` (names observers record).
    pub block: String,
    #[serde(flatten)]
    #[ts(flatten)]
    pub tensors: ExpertTensors,
    pub top_k: usize,
    #[serde(default)]
    pub activation: ExpertActivation,
    pub router: RouterDescriptor,
    #[serde(default)]
    pub shared: Option<SharedExpertDescriptor>,
    /// Zero-computation experts after the routed ones (LongCat-Flash's `zero_expert_num`; absent: none): the router
    /// scores `experts + zero_experts`, and a token that chooses one passes through, scaled by its weight.
    #[serde(default)]
    pub zero_experts: Option<usize>,
    /// Gemma 4: the shared MLP and the routed experts as two normed branches, the router reading the layer's
    /// un-normed input.
    #[serde(default)]
    pub branch_norms: Option<BranchNorms>,
}

/// How routing weights are computed from the router logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum RouterKind {
    /// softmax over all experts, top-K, renormalised when `norm_topk_prob`.
    SoftmaxTopk,
    /// softmax, top-K, always renormalised.
    SoftmaxTopkNorm,
    /// sigmoid scores, correction bias for choosing, group-limited top-K, routed scaling.
    SigmoidGroupTopk,
    /// top-K on the logits, softmax over the K.
    TopkSoftmax,
    /// top-K on the logits, sigmoid of the K.
    TopkSigmoid,
    /// softmax, group-limited top-K (a group scored by its best expert, the others' scores set to 0), routed
    /// scaling, no renormalisation (DeepSeek-V2's `greedy` with one group and `group_limited_greedy`).
    SoftmaxGroupTopk,
    /// softmax; the K chosen on the scores plus a correction bias; their scores renormalised with the sum
    /// clamped to `norm_min` (ERNIE 4.5).
    SoftmaxBiasTopk,
    /// softmax; the K chosen on the scores plus a correction bias; their scores times `routed_scaling_factor`, not
    /// renormalised (LongCat-Flash).
    SoftmaxBiasTopkScaled,
    /// PhiMoE's SparseMixer (evaluation), always two experts: the best logit, weighted by the softmax over the
    /// logits within `2·jitter_eps` (relative) of it; then the best of the others, likewise; no renormalisation.
    Sparsemixer,
}

#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[ts(optional_fields)]
pub struct RouterDescriptor {
    pub kind: RouterKind,
    /// `[E, H]` weight.
    pub weight: String,
    #[serde(default)]
    pub bias: Option<String>,
    #[serde(default)]
    pub correction_bias: Option<String>,
    #[serde(default)]
    pub norm_topk_prob: bool,
    #[serde(default = "one_usize")]
    pub n_group: usize,
    #[serde(default = "one_usize")]
    pub topk_group: usize,
    #[serde(default = "one")]
    pub routed_scaling_factor: f64,
    /// The smallest sum renormalised weights are divided by (`SoftmaxBiasTopk`: ERNIE's `moe_norm_min`).
    #[serde(default)]
    pub norm_min: f64,
    /// Added to the sum the chosen weights of a `SigmoidGroupTopk` router are divided by when renormalised: LFM2's
    /// 1e-6; 1e-20 when absent (DeepSeek-V3).
    #[serde(default)]
    pub norm_eps: Option<f64>,
    /// SparseMixer's `router_jitter_noise`.
    #[serde(default)]
    pub jitter_eps: f64,
    /// The router reads its input RMS-normalised without a weight, times this `[H]` weight and `hidden^-0.5`
    /// (Gemma 4's `scale`).
    #[serde(default)]
    pub input_scale: Option<RouterInputScale>,
    /// `[E]`: multiplies each chosen expert's weight after the renormalisation (Gemma 4).
    #[serde(default)]
    pub per_expert_scale: Option<String>,
}

/// The scaling of a router's input (Gemma 4): `rmsnorm(x) · scale · hidden^-0.5`.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct RouterInputScale {
    /// `[H]` weight.
    pub scale: String,
    /// The weightless RMSNorm's eps.
    pub eps: f64,
}

fn one_usize() -> usize {
    1
}

/// Shared expert(s): a dense MLP every token goes through, optionally scaled by `sigmoid(gate(x))`.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[ts(optional_fields)]
pub struct SharedExpertDescriptor {
    pub mlp: DenseMlpDescriptor,
    /// `[1, H]` gate weight (Qwen2-MoE `shared_expert_gate`).
    #[serde(default)]
    pub gate: Option<String>,
}
