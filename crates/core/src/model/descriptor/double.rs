//! LongCat-Flash's decoder layer, as TS describes it: two attention-and-MLP sublayers and a shortcut MoE.

use serde::Deserialize;

use super::{AttentionDescriptor, DenseMlpDescriptor};

/// What a LongCat-Flash layer holds beside its first attention (`attention`, after `input_norm`) and its MoE
/// (`mlp`, after `post_attention_norm`): the dense MLP that reads the MoE's input, and a second attention and
/// dense MLP, each after its own norm. The MoE is a shortcut, added after the last sublayer:
/// `h₁ = x + attn₁(n₁(x))`, `m = n₂(h₁)`, `h₂ = h₁ + mlp₁(m)`, `h₃ = h₂ + attn₂(n₃(h₂))`,
/// `y = h₃ + mlp₂(n₄(h₃)) + moe(m)`.
/// transformers: models/longcat_flash/modeling_longcat_flash.py `LongcatFlashDecoderLayer`.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct DoubleSublayers {
    /// `mlp₁` (`mlps.0`).
    pub first_mlp: DenseMlpDescriptor,
    /// `n₃` (`input_layernorm.1`), the norm weight before the second attention.
    pub input_norm: String,
    /// `attn₂` (`self_attn.1`).
    pub attention: AttentionDescriptor,
    /// `n₄` (`post_attention_layernorm.1`), the norm weight before the second MLP.
    pub post_attention_norm: String,
    /// `mlp₂` (`mlps.1`).
    pub second_mlp: DenseMlpDescriptor,
}
