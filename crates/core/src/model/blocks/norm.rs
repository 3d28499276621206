//! RMSNorm over the last dimension: `x · rsqrt(mean(x²) + eps) · w`, normalised in f32 as transformers
//! computes it, then cast back to the input dtype before the weight multiplies it; and without a weight.

use candle_core::{DType, Tensor, D};

use crate::error::Result;

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
