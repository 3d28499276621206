//! RMSNorm over the last dimension: `x · rsqrt(mean(x²) + eps) · w`, normalised in f32 as transformers
//! computes it, then cast back to the input dtype before the weight multiplies it; the `(1 + w)` variant of
//! Qwen3-Next and Qwen3.5, which multiplies in f32 before the cast; the gated variant of their linear-attention
//! mixers, `w · x̂ · silu(z)`; and the norm without a weight.

use candle_core::{DType, Tensor, D};

use crate::error::Result;

pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
    /// The weight is `1 + w` (f32), applied to the f32 normalised values before the cast back.
    offset: bool,
}

/// What every RMSNorm of a model's decoder shares: its eps and the offset added to its weights (0 or 1).
#[derive(Debug, Clone, Copy)]
pub struct NormStyle {
    pub eps: f64,
    pub offset: f64,
}

impl NormStyle {
    /// The RMSNorm of this style with weight `weight`.
    pub fn norm(&self, weight: Tensor) -> Result<RmsNorm> {
        if self.offset == 0.0 {
            return Ok(RmsNorm::new(weight, self.eps));
        }
        // transformers: `x̂ · (1.0 + w.float())`, all in f32, then cast to the input dtype.
        let weight = (weight.to_dtype(DType::F32)? + self.offset)?;
        Ok(RmsNorm { weight, eps: self.eps, offset: true })
    }
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> Self {
        RmsNorm { weight, eps, offset: false }
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if self.offset {
            let normed = normalize_f32(xs, self.eps)?.broadcast_mul(&self.weight)?;
            return Ok(normed.to_dtype(xs.dtype())?);
        }
        Ok(normalize(xs, self.eps)?.broadcast_mul(&self.weight)?)
    }
}

/// `x · rsqrt(mean(x²) + eps)` over the last dimension, computed in f32 and returned in `xs`'s dtype: RMSNorm
/// without a weight (Llama4's q/k norm).
pub fn normalize(xs: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(normalize_f32(xs, eps)?.to_dtype(xs.dtype())?)
}

/// `x · rsqrt(mean(x²) + eps)` over the last dimension, in f32.
fn normalize_f32(xs: &Tensor, eps: f64) -> Result<Tensor> {
    let xs = xs.to_dtype(DType::F32)?;
    let variance = xs.sqr()?.mean_keepdim(D::Minus1)?;
    Ok(xs.broadcast_mul(&(variance + eps)?.sqrt()?.recip()?)?)
}

/// RMSNorm then gate: `w · x̂ · silu(z)` over the last dimension (the heads of a Gated DeltaNet's output), the
/// normalisation in f32 cast back to the input dtype before the weight, the gate in f32.
/// transformers: models/qwen3_next `Qwen3NextRMSNormGated`.
pub struct GatedRmsNorm {
    /// `[D]`.
    pub weight: Tensor,
    pub eps: f64,
}

impl GatedRmsNorm {
    /// `xs` and `gate` `[…, D]` → `[…, D]` in `xs`'s dtype.
    pub fn forward(&self, xs: &Tensor, gate: &Tensor) -> Result<Tensor> {
        let normed = normalize(xs, self.eps)?.broadcast_mul(&self.weight)?;
        let gated = normed.to_dtype(DType::F32)?.mul(&gate.to_dtype(DType::F32)?.silu()?)?;
        Ok(gated.to_dtype(xs.dtype())?)
    }
}
