//! RMSNorm over the last dimension: `x · rsqrt(mean(x²) + eps) · w`, normalised in f32 as transformers
//! computes it, then cast back to the input dtype before the weight multiplies it.

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
        let dtype = xs.dtype();
        let xs = xs.to_dtype(DType::F32)?;
        let variance = xs.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = xs.broadcast_mul(&(variance + self.eps)?.sqrt()?.recip()?)?.to_dtype(dtype)?;
        Ok(normed.broadcast_mul(&self.weight)?)
    }
}
