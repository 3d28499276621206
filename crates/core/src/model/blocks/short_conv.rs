//! The gated short convolution of LFM2: the input projection into B, C and x (`H` channels each, in that order);
//! `B ⊙ x` through a causal depthwise convolution (with its bias, no activation); the product with C; the output
//! projection. transformers: `Lfm2MoeShortConv` (models/lfm2_moe) on its PyTorch path, without a cache.

use candle_core::Tensor;

use super::causal_conv::CausalConv;
use super::linear::Linear;
use crate::error::{Error, Result};
use crate::model::descriptor::ShortConvDescriptor;
use crate::model::loader::WeightLoader;
use crate::model::observe::Observers;

pub struct ShortConv {
    in_proj: Linear,
    out_proj: Linear,
    conv: CausalConv,
    /// `[H]`.
    conv_bias: Option<Tensor>,
    channels: usize,
}

impl ShortConv {
    pub fn load(loader: &WeightLoader, desc: &ShortConvDescriptor) -> Result<Self> {
        let in_proj = Linear::load(loader, &desc.in_proj, desc.bias)?;
        let (rows, channels) = in_proj.weight.dims2()?;
        if rows != 3 * channels || desc.conv_kernel == 0 {
            return Err(Error::internal(format!(
                "{}: in_proj is [{rows}, {channels}], not [3·H, H]; kernel {}",
                desc.in_proj, desc.conv_kernel
            )));
        }
        let weight = loader.tensor_shaped(&format!("{}.weight", desc.conv), &[channels, 1, desc.conv_kernel])?;
        let conv_bias =
            if desc.bias { Some(loader.tensor_shaped(&format!("{}.bias", desc.conv), &[channels])?) } else { None };
        Ok(ShortConv {
            in_proj,
            out_proj: Linear::load(loader, &desc.out_proj, desc.bias)?,
            conv: CausalConv::new(&weight)?,
            conv_bias,
            channels,
        })
    }

    /// `xs [B, T, H]` → `[B, T, H]`.
    pub fn forward(&self, xs: &Tensor, observers: &mut Observers) -> Result<Tensor> {
        let channels = self.channels;
        observers.record_input(&[&self.in_proj.name], xs)?;
        let projected = self.in_proj.forward(xs)?;
        let (b, c, x) = (
            projected.narrow(2, 0, channels)?,
            projected.narrow(2, channels, channels)?,
            projected.narrow(2, 2 * channels, channels)?,
        );
        let mut convolved = self.conv.forward(&b.mul(&x)?)?;
        if let Some(bias) = &self.conv_bias {
            convolved = convolved.broadcast_add(bias)?;
        }
        let ys = c.mul(&convolved)?;
        observers.record_input(&[&self.out_proj.name], &ys)?;
        self.out_proj.forward(&ys)
    }
}
