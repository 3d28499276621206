//! RMSNorm (and, for the residual stream of some families, LayerNorm) over the last dimension: `x · rsqrt(mean(x²) + eps) · w`, normalised in f32 as transformers
//! computes it, then cast back to the input dtype before the weight multiplies it; and without a weight.

use candle_core::{DType, Tensor, D};

use crate::error::Result;
use crate::model::descriptor::NormKind;
use crate::model::loader::WeightLoader;

pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> Self {
        RmsNorm { weight, eps }
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(normalize(xs, self.eps)?.broadcast_mul(&self.weight)?)
    }
}

/// `x · rsqrt(mean(x²) + eps)` over the last dimension, computed in f32 and returned in `xs`'s dtype: RMSNorm
/// without a weight (Llama4's q/k norm).
pub fn normalize(xs: &Tensor, eps: f64) -> Result<Tensor> {
    let dtype = xs.dtype();
    let xs = xs.to_dtype(DType::F32)?;
    let variance = xs.sqr()?.mean_keepdim(D::Minus1)?;
    Ok(xs.broadcast_mul(&(variance + eps)?.sqrt()?.recip()?)?.to_dtype(dtype)?)
}

/// The norm of the residual stream, of the kind the model declares.
pub enum HiddenNorm {
    Rms(RmsNorm),
    /// `(x − mean) · rsqrt(var + eps) · w + b` over the last dimension, in f32 (nn.LayerNorm).
    Layer {
        weight: Tensor,
        bias: Tensor,
        eps: f64,
    },
}

impl HiddenNorm {
    /// The norm whose weight is `weight` (a LayerNorm's bias beside it, `….bias`).
    pub fn load(loader: &WeightLoader, kind: NormKind, weight: &str, eps: f64) -> Result<Self> {
        Ok(match kind {
            NormKind::Rms => HiddenNorm::Rms(RmsNorm::new(loader.tensor(weight)?, eps)),
            NormKind::Layer => {
                let bias = format!("{}.bias", weight.strip_suffix(".weight").unwrap_or(weight));
                HiddenNorm::Layer { weight: loader.tensor(weight)?, bias: loader.tensor(&bias)?, eps }
            }
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            HiddenNorm::Rms(norm) => norm.forward(xs),
            HiddenNorm::Layer { weight, bias, eps } => {
                let dtype = xs.dtype();
                let xs = xs.to_dtype(DType::F32)?;
                let centred = xs.broadcast_sub(&xs.mean_keepdim(D::Minus1)?)?;
                let variance = centred.sqr()?.mean_keepdim(D::Minus1)?;
                let normed = centred.broadcast_mul(&(variance + *eps)?.sqrt()?.recip()?)?;
                let weight = weight.to_dtype(DType::F32)?;
                let bias = bias.to_dtype(DType::F32)?;
                Ok(normed.broadcast_mul(&weight)?.broadcast_add(&bias)?.to_dtype(dtype)?)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    #[test]
    fn layer_norm_centres_scales_and_shifts() {
        let xs = Tensor::new(&[[1f32, 2.0, 3.0, 6.0]], &Device::Cpu).unwrap();
        let norm = HiddenNorm::Layer {
            weight: Tensor::new(&[1f32, 2.0, 1.0, 1.0], &Device::Cpu).unwrap(),
            bias: Tensor::new(&[0f32, 0.0, 0.5, 0.0], &Device::Cpu).unwrap(),
            eps: 0.0,
        };
        // mean 3, variance (4 + 1 + 0 + 9) / 4 = 3.5.
        let got = norm.forward(&xs).unwrap().to_vec2::<f32>().unwrap();
        let s = 3.5f32.sqrt();
        let want = [-2.0 / s, 2.0 * -1.0 / s, 0.5, 3.0 / s];
        for (g, w) in got[0].iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
    }
}
