//! One decoder layer assembled from blocks: pre-norm token mixer (attention, or Gated DeltaNet linear
//! attention) and pre-norm MLP (dense or MoE), each added to the residual stream (scaled by Granite's residual
//! multiplier).

use candle_core::Tensor;

use super::blocks::attention::Attention;
use super::blocks::deltanet::GatedDeltaNet;
use super::blocks::mla::Mla;
use super::blocks::mlp::Mlp;
use super::blocks::moe::MoeBlock;
use super::blocks::norm::{NormStyle, RmsNorm};
use super::blocks::rope::Rope;
use super::descriptor::{AttentionDescriptor, LayerDescriptor, MlpDescriptor};
use super::loader::WeightLoader;
use crate::error::Result;
use crate::model::observe::Observers;

enum SelfAttention {
    Gqa(Attention),
    Mla(Mla),
    DeltaNet(Box<GatedDeltaNet>),
}

enum FeedForward {
    Dense(Mlp),
    Moe(Box<MoeBlock>),
}

pub struct DecoderLayer {
    input_norm: RmsNorm,
    attention: SelfAttention,
    post_attention_norm: RmsNorm,
    feed_forward: FeedForward,
    residual_multiplier: f64,
}

impl DecoderLayer {
    /// Loads the layer's weights (only this layer's are resident while it runs).
    pub fn load(loader: &WeightLoader, desc: &LayerDescriptor, style: NormStyle, all_experts_stats: bool) -> Result<Self> {
        let attention = match &desc.attention {
            AttentionDescriptor::Gqa(gqa) => SelfAttention::Gqa(Attention::load(loader, gqa, style)?),
            AttentionDescriptor::Mla(mla) => SelfAttention::Mla(Mla::load(loader, mla)?),
            AttentionDescriptor::GatedDeltaNet(mixer) => {
                SelfAttention::DeltaNet(Box::new(GatedDeltaNet::load(loader, mixer, style.eps)?))
            }
        };
        let feed_forward = match &desc.mlp {
            MlpDescriptor::Dense(dense) => FeedForward::Dense(Mlp::load(loader, dense)?),
            MlpDescriptor::Moe(moe) => FeedForward::Moe(Box::new(MoeBlock::load(loader, moe, all_experts_stats)?)),
        };
        Ok(DecoderLayer {
            input_norm: style.norm(loader.tensor(&desc.input_norm)?)?,
            attention,
            post_attention_norm: style.norm(loader.tensor(&desc.post_attention_norm)?)?,
            feed_forward,
            residual_multiplier: desc.residual_multiplier,
        })
    }

    /// Records weight statistics that do not depend on the input (per-expert weight maxima).
    pub fn observe_weights(&self, observers: &mut Observers) -> Result<()> {
        match &self.feed_forward {
            FeedForward::Moe(moe) => moe.observe_weights(observers),
            FeedForward::Dense(_) => Ok(()),
        }
    }

    /// `xs [B, T, H]` → `[B, T, H]`.
    pub fn forward(&self, xs: &Tensor, rope: &Rope, observers: &mut Observers) -> Result<Tensor> {
        let normed = self.input_norm.forward(xs)?;
        let attended = match &self.attention {
            SelfAttention::Gqa(attention) => attention.forward(&normed, rope, observers)?,
            SelfAttention::Mla(mla) => mla.forward(&normed, rope, observers)?,
            SelfAttention::DeltaNet(mixer) => mixer.forward(&normed, observers)?,
        };
        let xs = (xs + (attended * self.residual_multiplier)?)?;
        let normed = self.post_attention_norm.forward(&xs)?;
        let fed = match &self.feed_forward {
            FeedForward::Dense(mlp) => mlp.forward(&normed, observers)?,
            FeedForward::Moe(moe) => moe.forward(&normed, observers)?,
        };
        Ok((xs + (fed * self.residual_multiplier)?)?)
    }
}
