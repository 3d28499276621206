//! One decoder layer assembled from blocks: a token mixer (attention, MLA, Gated DeltaNet or Kimi Delta Attention
//! linear attention, Mamba-2, Mamba, a gated short convolution or lightning attention) and an MLP (dense or MoE), each with its norm on the input (pre-norm) or on the output (post-norm),
//! each added to the residual stream (scaled by Granite's residual multiplier); or, on a single-mixer layer
//! (Nemotron-H), one pre-norm mixer of either kind; or (MiniMax-Text-01) the residual taken after each norm and
//! weighted with the branch.

use candle_core::Tensor;

use super::blocks::attention::Attention;
use super::blocks::deltanet::GatedDeltaNet;
use super::blocks::kda::KimiDeltaAttention;
use super::blocks::key_selection::ChosenKeys;
use super::blocks::lightning::LightningAttention;
use super::blocks::mamba::Mamba;
use super::blocks::mamba2::Mamba2;
use super::blocks::mla::Mla;
use super::blocks::mlp::Mlp;
use super::blocks::moe::MoeBlock;
use super::blocks::norm::{HiddenNorm, NormStyle};
use super::blocks::rope::Rope;
use super::blocks::short_conv::ShortConv;
use super::descriptor::{AttentionDescriptor, LayerDescriptor, MlpDescriptor, NormPlacement, ResidualScales};
use super::loader::WeightLoader;
use crate::error::{Error, Result};
use crate::model::observe::Observers;

enum TokenMixer {
    Gqa(Attention),
    Mla(Mla),
    DeltaNet(Box<GatedDeltaNet>),
    Kda(Box<KimiDeltaAttention>),
    Mamba2(Box<Mamba2>),
    Mamba(Box<Mamba>),
    ShortConv(Box<ShortConv>),
    Lightning(Box<LightningAttention>),
}

enum FeedForward {
    Dense(Mlp),
    Moe(Box<MoeBlock>),
}

pub struct DecoderLayer {
    input_norm: HiddenNorm,
    mixer: Option<TokenMixer>,
    /// The norm of the feed-forward part (the input norm on a single-mixer layer).
    feed_forward_norm: Option<HiddenNorm>,
    feed_forward: Option<FeedForward>,
    residual_multiplier: f64,
    placement: NormPlacement,
    scales: Option<ResidualScales>,
}

impl DecoderLayer {
    /// Loads the layer's weights (only this layer's are resident while it runs). `rope` says whether the model
    /// has a rotary embedding.
    pub fn load(
        loader: &WeightLoader,
        desc: &LayerDescriptor,
        style: NormStyle,
        rope: bool,
        all_experts_stats: bool,
    ) -> Result<Self> {
        check_form(desc, rope)?;
        let mixer = match &desc.attention {
            Some(AttentionDescriptor::Gqa(gqa)) => Some(TokenMixer::Gqa(Attention::load(loader, gqa, style)?)),
            Some(AttentionDescriptor::Mla(mla)) => Some(TokenMixer::Mla(Mla::load(loader, mla)?)),
            Some(AttentionDescriptor::GatedDeltaNet(mixer)) => {
                Some(TokenMixer::DeltaNet(Box::new(GatedDeltaNet::load(loader, mixer, style.eps)?)))
            }
            Some(AttentionDescriptor::KimiDeltaAttention(mixer)) => {
                Some(TokenMixer::Kda(Box::new(KimiDeltaAttention::load(loader, mixer, style.eps)?)))
            }
            Some(AttentionDescriptor::Mamba2(mamba)) => {
                Some(TokenMixer::Mamba2(Box::new(Mamba2::load(loader, mamba)?)))
            }
            Some(AttentionDescriptor::Mamba(mamba)) => Some(TokenMixer::Mamba(Box::new(Mamba::load(loader, mamba)?))),
            Some(AttentionDescriptor::ShortConv(conv)) => {
                Some(TokenMixer::ShortConv(Box::new(ShortConv::load(loader, conv)?)))
            }
            Some(AttentionDescriptor::Lightning(mixer)) => {
                Some(TokenMixer::Lightning(Box::new(LightningAttention::load(loader, mixer)?)))
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
        let feed_forward_norm = match (&desc.mlp, &desc.post_attention_norm) {
            (None, _) => None,
            (Some(_), Some(post)) => Some(style.hidden(loader, post)?),
            (Some(_), None) => Some(style.hidden(loader, &desc.input_norm)?),
        };
        Ok(DecoderLayer {
            input_norm: style.hidden(loader, &desc.input_norm)?,
            mixer,
            feed_forward_norm,
            feed_forward,
            residual_multiplier: desc.residual_multiplier,
            placement: desc.norm_placement,
            scales: desc.residual_scales,
        })
    }

    /// Records weight statistics that do not depend on the input (per-expert weight maxima).
    pub fn observe_weights(&self, observers: &mut Observers) -> Result<()> {
        match &self.feed_forward {
            Some(FeedForward::Moe(moe)) => moe.observe_weights(observers),
            _ => Ok(()),
        }
    }

    /// `xs [B, T, H]` → `[B, T, H]`; `chosen` carries the keys DeepSeek sparse attention chose for the batch from
    /// a layer with an indexer to the layers after it that reuse them.
    pub fn forward(
        &self,
        xs: &Tensor,
        rope: Option<&Rope>,
        chosen: &mut ChosenKeys,
        observers: &mut Observers,
    ) -> Result<Tensor> {
        let mut xs = xs.clone();
        if let Some(mixer) = &self.mixer {
            let mixed = self.sublayer(
                &self.input_norm,
                &xs,
                |input, observers| match mixer {
                    TokenMixer::Gqa(attention) => attention.forward(input, rope, observers),
                    TokenMixer::Mla(mla) => mla.forward(input, rope, chosen, observers),
                    TokenMixer::DeltaNet(mixer) => mixer.forward(input, observers),
                    TokenMixer::Kda(mixer) => mixer.forward(input, observers),
                    TokenMixer::Mamba2(mamba) => mamba.forward(input, observers),
                    TokenMixer::Mamba(mamba) => mamba.forward(input, observers),
                    TokenMixer::ShortConv(conv) => conv.forward(input, observers),
                    TokenMixer::Lightning(mixer) => mixer.forward(input, observers),
                },
                observers,
            )?;
            xs = self.residual(&xs, mixed, |s| (s.attention_alpha, s.attention_beta))?;
        }
        if let (Some(norm), Some(feed_forward)) = (&self.feed_forward_norm, &self.feed_forward) {
            let fed = self.sublayer(
                norm,
                &xs,
                |input, observers| match feed_forward {
                    FeedForward::Dense(mlp) => mlp.forward(input, observers),
                    FeedForward::Moe(moe) => moe.forward(input, observers),
                },
                observers,
            )?;
            xs = self.residual(&xs, fed, |s| (s.mlp_alpha, s.mlp_beta))?;
        }
        Ok(xs)
    }

    /// The stream after a sublayer: `x + m · branch`, or, with the residual taken after the norm,
    /// `α · n(x) + β · branch` (the branch already carries `n(x)`'s place: see [`Self::sublayer`]).
    fn residual(
        &self,
        xs: &Tensor,
        branch: (Tensor, Option<Tensor>),
        weights: impl Fn(&ResidualScales) -> (f64, f64),
    ) -> Result<Tensor> {
        match (branch, self.scales.as_ref()) {
            ((out, Some(normed)), Some(scales)) => {
                let (alpha, beta) = weights(scales);
                Ok(((normed * alpha)? + (out * beta)?)?)
            }
            ((out, _), _) => Ok((xs + (out * self.residual_multiplier)?)?),
        }
    }

    /// One sublayer's branch with its norm on the input (pre) or on the output (post); with the residual taken
    /// after the norm, also the normed input.
    fn sublayer(
        &self,
        norm: &HiddenNorm,
        xs: &Tensor,
        run: impl FnOnce(&Tensor, &mut Observers) -> Result<Tensor>,
        observers: &mut Observers,
    ) -> Result<(Tensor, Option<Tensor>)> {
        match self.placement {
            NormPlacement::Pre => Ok((run(&norm.forward(xs)?, observers)?, None)),
            NormPlacement::Post => Ok((norm.forward(&run(xs, observers)?)?, None)),
            NormPlacement::NormedResidual => {
                let normed = norm.forward(xs)?;
                Ok((run(&normed, observers)?, Some(normed)))
            }
        }
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
    let normed_residual = desc.norm_placement == NormPlacement::NormedResidual;
    if normed_residual != desc.residual_scales.is_some() || (normed_residual && parts != (true, true, true)) {
        return Err(Error::internal(format!(
            "decoder layer {}: residual scales go with the placement normed_residual on a layer of attention and MLP",
            desc.index
        )));
    }
    let rotates = match &desc.attention {
        Some(AttentionDescriptor::Gqa(gqa)) => gqa.rope,
        Some(AttentionDescriptor::Mla(mla)) => mla.rope,
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
