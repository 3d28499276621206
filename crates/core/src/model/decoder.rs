//! One decoder layer assembled from blocks: a token mixer (attention, or Gated DeltaNet linear attention) and an
//! MLP (dense or MoE), each with its norm on the input (pre-norm) or on the output (post-norm), each added to
//! the residual stream (scaled by Granite's residual
//! multiplier).

use candle_core::Tensor;

use super::blocks::attention::Attention;
use super::blocks::deltanet::GatedDeltaNet;
use super::blocks::mla::Mla;
use super::blocks::mlp::Mlp;
use super::blocks::moe::MoeBlock;
use super::blocks::norm::{HiddenNorm, NormStyle};
use super::blocks::rope::Rope;
use super::descriptor::{AttentionDescriptor, LayerDescriptor, MlpDescriptor, NormPlacement};
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
    input_norm: HiddenNorm,
    attention: SelfAttention,
    post_attention_norm: HiddenNorm,
    feed_forward: FeedForward,
    residual_multiplier: f64,
    placement: NormPlacement,
}

impl DecoderLayer {
    /// Loads the layer's weights (only this layer's are resident while it runs).
    pub fn load(
        loader: &WeightLoader,
        desc: &LayerDescriptor,
        style: NormStyle,
        all_experts_stats: bool,
    ) -> Result<Self> {
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
            input_norm: style.hidden(loader, &desc.input_norm)?,
            attention,
            post_attention_norm: style.hidden(loader, &desc.post_attention_norm)?,
            feed_forward,
            residual_multiplier: desc.residual_multiplier,
            placement: desc.norm_placement,
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
        let attended = self.sublayer(
            &self.input_norm,
            xs,
            |input, observers| match &self.attention {
                SelfAttention::Gqa(attention) => attention.forward(input, rope, observers),
                SelfAttention::Mla(mla) => mla.forward(input, rope, observers),
                SelfAttention::DeltaNet(mixer) => mixer.forward(input, observers),
            },
            observers,
        )?;
        let xs = (xs + (attended * self.residual_multiplier)?)?;
        let fed = self.sublayer(
            &self.post_attention_norm,
            &xs,
            |input, observers| match &self.feed_forward {
                FeedForward::Dense(mlp) => mlp.forward(input, observers),
                FeedForward::Moe(moe) => moe.forward(input, observers),
            },
            observers,
        )?;
        Ok((xs + (fed * self.residual_multiplier)?)?)
    }

    /// One sublayer's branch with its norm on the input (pre) or on the output (post).
    fn sublayer(
        &self,
        norm: &HiddenNorm,
        xs: &Tensor,
        run: impl FnOnce(&Tensor, &mut Observers) -> Result<Tensor>,
        observers: &mut Observers,
    ) -> Result<Tensor> {
        match self.placement {
            NormPlacement::Pre => run(&norm.forward(xs)?, observers),
            NormPlacement::Post => norm.forward(&run(xs, observers)?),
        }
    }
}
