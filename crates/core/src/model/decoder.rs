//! One decoder layer assembled from blocks: a pre-norm token mixer (attention, MLA or Mamba-2) and a pre-norm
//! MLP (dense or MoE), each added to the residual stream (scaled by Granite's residual multiplier); or, on a
//! single-mixer layer (Nemotron-H), one pre-norm mixer of either kind.

use candle_core::Tensor;

use super::blocks::attention::Attention;
use super::blocks::mamba2::Mamba2;
use super::blocks::mla::Mla;
use super::blocks::mlp::Mlp;
use super::blocks::moe::MoeBlock;
use super::blocks::norm::RmsNorm;
use super::blocks::rope::Rope;
use super::descriptor::{AttentionDescriptor, LayerDescriptor, MlpDescriptor};
use super::loader::WeightLoader;
use crate::error::{Error, Result};
use crate::model::observe::Observers;

enum TokenMixer {
    Gqa(Attention),
    Mla(Mla),
    Mamba2(Box<Mamba2>),
}

enum FeedForward {
    Dense(Mlp),
    Moe(Box<MoeBlock>),
}

pub struct DecoderLayer {
    input_norm: RmsNorm,
    mixer: Option<TokenMixer>,
    /// The norm before the feed-forward part (the input norm on a single-mixer layer).
    feed_forward_norm: Option<RmsNorm>,
    feed_forward: Option<FeedForward>,
    residual_multiplier: f64,
}

impl DecoderLayer {
    /// Loads the layer's weights (only this layer's are resident while it runs). `rope` says whether the model
    /// has a rotary embedding.
    pub fn load(
        loader: &WeightLoader,
        desc: &LayerDescriptor,
        eps: f64,
        rope: bool,
        all_experts_stats: bool,
    ) -> Result<Self> {
        check_form(desc, rope)?;
        let mixer = match &desc.attention {
            Some(AttentionDescriptor::Gqa(gqa)) => Some(TokenMixer::Gqa(Attention::load(loader, gqa, eps)?)),
            Some(AttentionDescriptor::Mla(mla)) => Some(TokenMixer::Mla(Mla::load(loader, mla)?)),
            Some(AttentionDescriptor::Mamba2(mamba)) => {
                Some(TokenMixer::Mamba2(Box::new(Mamba2::load(loader, mamba)?)))
            }
            None => None,
        };
        let feed_forward = match &desc.mlp {
            Some(MlpDescriptor::Dense(dense)) => Some(FeedForward::Dense(Mlp::load(loader, dense)?)),
            Some(MlpDescriptor::Moe(moe)) => {
                Some(FeedForward::Moe(Box::new(MoeBlock::load(loader, moe, all_experts_stats)?)))
            }
            None => None,
        };
        let norm = |name: &str| -> Result<RmsNorm> { Ok(RmsNorm::new(loader.tensor(name)?, eps)) };
        let feed_forward_norm = match (&desc.mlp, &desc.post_attention_norm) {
            (None, _) => None,
            (Some(_), Some(post)) => Some(norm(post)?),
            (Some(_), None) => Some(norm(&desc.input_norm)?),
        };
        Ok(DecoderLayer {
            input_norm: norm(&desc.input_norm)?,
            mixer,
            feed_forward_norm,
            feed_forward,
            residual_multiplier: desc.residual_multiplier,
        })
    }

    /// Records weight statistics that do not depend on the input (per-expert weight maxima).
    pub fn observe_weights(&self, observers: &mut Observers) -> Result<()> {
        match &self.feed_forward {
            Some(FeedForward::Moe(moe)) => moe.observe_weights(observers),
            _ => Ok(()),
        }
    }

    /// `xs [B, T, H]` → `[B, T, H]`.
    pub fn forward(&self, xs: &Tensor, rope: Option<&Rope>, observers: &mut Observers) -> Result<Tensor> {
        let mut xs = xs.clone();
        if let Some(mixer) = &self.mixer {
            let normed = self.input_norm.forward(&xs)?;
            let mixed = match mixer {
                TokenMixer::Gqa(attention) => attention.forward(&normed, rope, observers)?,
                TokenMixer::Mla(mla) => mla.forward(&normed, required_rope(rope)?, observers)?,
                TokenMixer::Mamba2(mamba) => mamba.forward(&normed, observers)?,
            };
            xs = (xs + (mixed * self.residual_multiplier)?)?;
        }
        if let (Some(norm), Some(feed_forward)) = (&self.feed_forward_norm, &self.feed_forward) {
            let normed = norm.forward(&xs)?;
            let fed = match feed_forward {
                FeedForward::Dense(mlp) => mlp.forward(&normed, observers)?,
                FeedForward::Moe(moe) => moe.forward(&normed, observers)?,
            };
            xs = (xs + (fed * self.residual_multiplier)?)?;
        }
        Ok(xs)
    }
}

/// A layer is a token mixer and an MLP with a norm each, or a single mixer of either kind after its input norm;
/// a layer that rotates needs the model's rotary embedding.
fn check_form(desc: &LayerDescriptor, rope: bool) -> Result<()> {
    let parts = (desc.attention.is_some(), desc.post_attention_norm.is_some(), desc.mlp.is_some());
    let form_ok = matches!(parts, (true, true, true) | (true, false, false) | (false, false, true));
    if !form_ok {
        return Err(Error::internal(format!(
            "decoder layer {}: a layer has attention, post-attention norm and MLP, or one mixer alone (found {parts:?})",
            desc.index
        )));
    }
    let rotates = match &desc.attention {
        Some(AttentionDescriptor::Gqa(gqa)) => gqa.rope,
        Some(AttentionDescriptor::Mla(_)) => true,
        _ => false,
    };
    if rotates && !rope {
        return Err(Error::internal(format!(
            "decoder layer {}: its attention rotates but the model has no rotary embedding",
            desc.index
        )));
    }
    Ok(())
}

/// The rotary embedding of a layer that needs one (checked at load).
pub fn required_rope(rope: Option<&Rope>) -> Result<&Rope> {
    rope.ok_or_else(|| Error::internal("an attention layer rotates but the model has no rotary embedding"))
}
