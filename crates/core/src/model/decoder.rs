//! One decoder layer assembled from blocks: a token mixer (attention, MLA, Gated DeltaNet or Kimi Delta Attention
//! linear attention, Mamba-2, Mamba, a gated short convolution or lightning attention) and an MLP (dense or MoE), each with its norm on the input (pre-norm) or on the output (post-norm),
//! each added to the residual stream (scaled by Granite's residual multiplier); or, on a single-mixer layer
//! (Nemotron-H), one pre-norm mixer of either kind; or (MiniMax-Text-01) the residual taken after each norm and
//! weighted with the branch; or (Gemma 4) a norm on each sublayer's input and another on its output, the layer's
//! output scaled; or (LongCat-Flash) two pre-norm attention-and-MLP sublayers with the MoE as a shortcut across
//! them (see [`DoubleSublayers`]).

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
use super::descriptor::{
    AttentionDescriptor, DoubleSublayers, LayerDescriptor, MlpDescriptor, NormPlacement, ResidualScales,
};
use super::loader::{ExpertWeights, WeightLoader};
use crate::error::{Error, Result};
use crate::model::observe::Observers;
use crate::model::profile;

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

impl TokenMixer {
    fn load(loader: &WeightLoader, desc: &AttentionDescriptor, style: NormStyle) -> Result<Self> {
        Ok(match desc {
            AttentionDescriptor::Gqa(gqa) => TokenMixer::Gqa(Attention::load(loader, gqa, style)?),
            AttentionDescriptor::Mla(mla) => TokenMixer::Mla(Mla::load(loader, mla)?),
            AttentionDescriptor::GatedDeltaNet(mixer) => {
                TokenMixer::DeltaNet(Box::new(GatedDeltaNet::load(loader, mixer, style.eps)?))
            }
            AttentionDescriptor::KimiDeltaAttention(mixer) => {
                TokenMixer::Kda(Box::new(KimiDeltaAttention::load(loader, mixer, style.eps)?))
            }
            AttentionDescriptor::Mamba2(mamba) => TokenMixer::Mamba2(Box::new(Mamba2::load(loader, mamba)?)),
            AttentionDescriptor::Mamba(mamba) => TokenMixer::Mamba(Box::new(Mamba::load(loader, mamba)?)),
            AttentionDescriptor::ShortConv(conv) => TokenMixer::ShortConv(Box::new(ShortConv::load(loader, conv)?)),
            AttentionDescriptor::Lightning(mixer) => {
                TokenMixer::Lightning(Box::new(LightningAttention::load(loader, mixer)?))
            }
        })
    }

    fn forward(
        &self,
        input: &Tensor,
        rope: Option<&Rope>,
        chosen: &mut ChosenKeys,
        observers: &mut Observers,
    ) -> Result<Tensor> {
        let device = input.device();
        match self {
            // GQA attention times its own parts.
            TokenMixer::Gqa(attention) => attention.forward(input, rope, observers),
            TokenMixer::Mla(mla) => {
                profile::section(device, "MLA attention", || mla.forward(input, rope, chosen, observers))
            }
            TokenMixer::DeltaNet(mixer) => {
                profile::section(device, "Gated DeltaNet", || mixer.forward(input, observers))
            }
            TokenMixer::Kda(mixer) => {
                profile::section(device, "Kimi delta attention", || mixer.forward(input, observers))
            }
            TokenMixer::Mamba2(mamba) => profile::section(device, "Mamba-2", || mamba.forward(input, observers)),
            TokenMixer::Mamba(mamba) => profile::section(device, "Mamba", || mamba.forward(input, observers)),
            TokenMixer::ShortConv(conv) => {
                profile::section(device, "short convolution", || conv.forward(input, observers))
            }
            TokenMixer::Lightning(mixer) => {
                profile::section(device, "lightning attention", || mixer.forward(input, observers))
            }
        }
    }
}

enum FeedForward {
    Dense(Mlp),
    Moe(Box<MoeBlock>),
}

/// LongCat-Flash's sublayers beside the layer's first attention and its MoE (see [`DoubleSublayers`]).
struct Double {
    first_mlp: Mlp,
    input_norm: HiddenNorm,
    mixer: TokenMixer,
    post_attention_norm: HiddenNorm,
    second_mlp: Mlp,
}

impl Double {
    fn load(loader: &WeightLoader, desc: &DoubleSublayers, style: NormStyle) -> Result<Self> {
        Ok(Double {
            first_mlp: Mlp::load(loader, &desc.first_mlp)?,
            input_norm: style.hidden(loader, &desc.input_norm)?,
            mixer: TokenMixer::load(loader, &desc.attention, style)?,
            post_attention_norm: style.hidden(loader, &desc.post_attention_norm)?,
            second_mlp: Mlp::load(loader, &desc.second_mlp)?,
        })
    }
}

pub struct DecoderLayer {
    input_norm: HiddenNorm,
    /// The norms on the token mixer's and the feed-forward part's outputs (the placement `sandwich`).
    output_norms: Option<(HiddenNorm, HiddenNorm)>,
    /// `[1]`, multiplying the layer's output.
    output_scale: Option<Tensor>,
    mixer: Option<TokenMixer>,
    /// The norm of the feed-forward part (the input norm on a single-mixer layer).
    feed_forward_norm: Option<HiddenNorm>,
    feed_forward: Option<FeedForward>,
    residual_multiplier: f64,
    placement: NormPlacement,
    scales: Option<ResidualScales>,
    double: Option<Box<Double>>,
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
        let mixer = desc.attention.as_ref().map(|attention| TokenMixer::load(loader, attention, style)).transpose()?;
        let feed_forward = match &desc.mlp {
            Some(MlpDescriptor::Dense(dense)) => Some(FeedForward::Dense(Mlp::load(loader, dense)?)),
            Some(MlpDescriptor::Moe(moe)) => {
                Some(FeedForward::Moe(Box::new(MoeBlock::load(loader, moe, style, all_experts_stats)?)))
            }
            None => None,
        };
        let feed_forward_norm = match (&desc.mlp, &desc.post_attention_norm) {
            (None, _) => None,
            (Some(_), Some(post)) => Some(style.hidden(loader, post)?),
            (Some(_), None) => Some(style.hidden(loader, &desc.input_norm)?),
        };
        let output_norms = match &desc.output_norms {
            Some(norms) => Some((style.hidden(loader, &norms.attention)?, style.hidden(loader, &norms.mlp)?)),
            None => None,
        };
        Ok(DecoderLayer {
            input_norm: style.hidden(loader, &desc.input_norm)?,
            output_norms,
            output_scale: desc.output_scale.as_ref().map(|name| loader.tensor_shaped(name, &[1])).transpose()?,
            mixer,
            feed_forward_norm,
            feed_forward,
            residual_multiplier: desc.residual_multiplier,
            placement: desc.norm_placement,
            scales: desc.residual_scales,
            double: desc.double.as_ref().map(|double| Double::load(loader, double, style).map(Box::new)).transpose()?,
        })
    }

    /// Each MoE block's name and routed experts, as the forward holds them (none for a dense layer).
    pub fn routed_experts(&self) -> Vec<(&str, &[ExpertWeights])> {
        match &self.feed_forward {
            Some(FeedForward::Moe(moe)) => vec![moe.routed_experts()],
            _ => Vec::new(),
        }
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
        if let Some(double) = &self.double {
            return self.forward_double(double, xs, rope, chosen, observers);
        }
        let mut xs = xs.clone();
        // The feed-forward part's normed input, where one kernel computed it with the residual sum.
        let mut normed = None;
        if let Some(mixer) = &self.mixer {
            let mixed = self.sublayer(
                (&self.input_norm, self.output_norms.as_ref().map(|(attention, _)| attention)),
                &xs,
                |input, _, observers| mixer.forward(input, rope, chosen, observers),
                observers,
            )?;
            match self.residual_and_norm(&xs, &mixed)? {
                Some((sum, next)) => (xs, normed) = (sum, Some(next)),
                None => xs = self.residual(&xs, mixed, |s| (s.attention_alpha, s.attention_beta))?,
            }
        }
        if let (Some(norm), Some(feed_forward)) = (&self.feed_forward_norm, &self.feed_forward) {
            let run = |input: &Tensor, unnormed: &Tensor, observers: &mut Observers| match feed_forward {
                FeedForward::Dense(mlp) => {
                    profile::section(input.device(), "dense MLP", || mlp.forward(input, observers))
                }
                FeedForward::Moe(moe) => moe.forward_branches(input, unnormed, observers),
            };
            let weights = |s: &ResidualScales| (s.mlp_alpha, s.mlp_beta);
            xs = match normed {
                // The stream is unscaled here (see residual_and_norm): an MoE's f32 sum is rounded and added in one
                // kernel, with the values of the cast and then the sum.
                Some(input) => {
                    let sum = match feed_forward {
                        FeedForward::Moe(moe) => moe.forward_f32(&input, observers)?,
                        FeedForward::Dense(_) => None,
                    };
                    match sum {
                        Some(sum) => crate::cuda::add_rounded(&xs, &sum)?,
                        None => self.residual(&xs, (run(&input, &xs, observers)?, None), weights)?,
                    }
                }
                None => {
                    let output_norm = self.output_norms.as_ref().map(|(_, mlp)| mlp);
                    let fed = self.sublayer((norm, output_norm), &xs, run, observers)?;
                    self.residual(&xs, fed, weights)?
                }
            };
        }
        match &self.output_scale {
            Some(scale) => Ok(xs.broadcast_mul(scale)?),
            None => Ok(xs),
        }
    }

    /// LongCat-Flash's layer: the first attention, then its MLP and the MoE on one normed input, the second
    /// attention and MLP, and the MoE's output added last (the order of transformers' sums).
    fn forward_double(
        &self,
        double: &Double,
        xs: &Tensor,
        rope: Option<&Rope>,
        chosen: &mut ChosenKeys,
        observers: &mut Observers,
    ) -> Result<Tensor> {
        let (Some(mixer), Some(norm), Some(FeedForward::Moe(moe))) =
            (&self.mixer, &self.feed_forward_norm, &self.feed_forward)
        else {
            return Err(Error::internal("double sublayers need the first attention, its norm and the MoE"));
        };
        let xs = (xs + mixer.forward(&self.input_norm.forward(xs)?, rope, chosen, observers)?)?;
        let normed = norm.forward(&xs)?;
        let shortcut = moe.forward(&normed, observers)?;
        let xs = (&xs + double.first_mlp.forward(&normed, observers)?)?;
        let xs = (&xs + double.mixer.forward(&double.input_norm.forward(&xs)?, rope, chosen, observers)?)?;
        let fed = double.second_mlp.forward(&double.post_attention_norm.forward(&xs)?, observers)?;
        Ok(((xs + fed)? + shortcut)?)
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
            ((out, _), _) if self.residual_multiplier == 1.0 => Ok((xs + out)?),
            ((out, _), _) => Ok((xs + (out * self.residual_multiplier)?)?),
        }
    }

    /// After the token mixer of a pre-norm layer whose stream adds the branch unscaled: the sum `x + branch` and
    /// the feed-forward part's norm of it, from one kernel where there is one (the values of [`Self::residual`]
    /// then the norm). None where another form applies or no kernel does it.
    fn residual_and_norm(&self, xs: &Tensor, mixed: &(Tensor, Option<Tensor>)) -> Result<Option<(Tensor, Tensor)>> {
        let unscaled = self.placement == NormPlacement::Pre
            && self.scales.is_none()
            && mixed.1.is_none()
            && self.residual_multiplier == 1.0;
        match (&self.feed_forward_norm, &self.feed_forward) {
            (Some(norm), Some(_)) if unscaled => norm.add_forward(xs, &mixed.0),
            _ => Ok(None),
        }
    }

    /// One sublayer's branch with its norm on the input (pre), on the output (post) or on both (sandwich: the
    /// norm and the output norm); with the residual taken after the norm, also the normed input. `run` is given
    /// the sublayer's input and the un-normed stream.
    fn sublayer(
        &self,
        (norm, output_norm): (&HiddenNorm, Option<&HiddenNorm>),
        xs: &Tensor,
        run: impl FnOnce(&Tensor, &Tensor, &mut Observers) -> Result<Tensor>,
        observers: &mut Observers,
    ) -> Result<(Tensor, Option<Tensor>)> {
        match (self.placement, output_norm) {
            (NormPlacement::Pre, _) => Ok((run(&norm.forward(xs)?, xs, observers)?, None)),
            (NormPlacement::Post, _) => Ok((norm.forward(&run(xs, xs, observers)?)?, None)),
            (NormPlacement::NormedResidual, _) => {
                let normed = norm.forward(xs)?;
                Ok((run(&normed, xs, observers)?, Some(normed)))
            }
            (NormPlacement::Sandwich, Some(output_norm)) => {
                Ok((output_norm.forward(&run(&norm.forward(xs)?, xs, observers)?)?, None))
            }
            (NormPlacement::Sandwich, None) => Err(Error::internal("a sandwich layer without its output norms")),
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
    let sandwich = desc.norm_placement == NormPlacement::Sandwich;
    if sandwich != desc.output_norms.is_some() || (sandwich && parts != (true, true, true)) {
        return Err(Error::internal(format!(
            "decoder layer {}: output norms go with the placement sandwich on a layer of attention and MLP",
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
    let double_ok = desc.norm_placement == NormPlacement::Pre
        && desc.residual_multiplier == 1.0
        && matches!(desc.mlp, Some(MlpDescriptor::Moe(_)))
        && parts == (true, true, true);
    if desc.double.is_some() && !double_ok {
        return Err(Error::internal(format!(
            "decoder layer {}: double sublayers go with pre-norm attention and an MoE shortcut, unscaled",
            desc.index
        )));
    }
    let rotates = |attention: Option<&AttentionDescriptor>| match attention {
        Some(AttentionDescriptor::Gqa(gqa)) => gqa.rope,
        Some(AttentionDescriptor::Mla(mla)) => mla.rope,
        _ => false,
    };
    let rotates = rotates(desc.attention.as_ref()) || rotates(desc.double.as_ref().map(|d| &d.attention));
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
