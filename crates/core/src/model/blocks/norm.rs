//! RMSNorm over the last dimension: `x · rsqrt(mean(x²) + eps) · w`, normalised in f32 as transformers
//! computes it, then cast back to the input dtype before the weight multiplies it (and, for the residual stream
//! of some families, LayerNorm with a bias); the `(1 + w)` variant of
//! Qwen3-Next and Qwen3.5, which multiplies in f32 before the cast; the gated variant of linear-attention mixers,
//! `w · x̂ · silu(z)` (Gated DeltaNet) or `w · x̂ · sigmoid(g)` (Kimi Delta Attention); and the norm without a weight.

use candle_core::{DType, Tensor, D};

use super::ops::sigmoid;
use crate::error::Result;
use crate::model::descriptor::NormKind;
use crate::model::loader::WeightLoader;

pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
    /// The weight (`1 + w`, or `w` as stored) is f32, applied to the f32 normalised values before the cast back.
    offset: bool,
}

/// What every norm of a model's decoder shares: its eps, the offset added to RMSNorm weights (0 or 1), whether
/// the weight multiplies the f32 normalised values before the cast back (Gemma 4), and the kind of the residual
/// stream's norms.
#[derive(Debug, Clone, Copy)]
pub struct NormStyle {
    pub eps: f64,
    pub offset: f64,
    pub kind: NormKind,
    pub f32_weight: bool,
}

impl NormStyle {
    /// The RMSNorm of this style with weight `weight`.
    pub fn norm(&self, weight: Tensor) -> Result<RmsNorm> {
        if self.offset == 0.0 && !self.f32_weight {
            return Ok(RmsNorm::new(weight, self.eps));
        }
        // transformers: `x̂ · (1.0 + w.float())` (Gemma 4: `x̂ · w.float()`), all in f32, then cast to the input
        // dtype.
        let weight = (weight.to_dtype(DType::F32)? + self.offset)?;
        Ok(RmsNorm { weight, eps: self.eps, offset: true })
    }

    /// The residual stream's norm whose weight is `weight` (a LayerNorm's bias beside it, `….bias`).
    pub fn hidden(&self, loader: &WeightLoader, weight: &str) -> Result<HiddenNorm> {
        Ok(match self.kind {
            NormKind::Rms => HiddenNorm::Rms(self.norm(loader.tensor(weight)?)?),
            NormKind::Layer => {
                let bias = format!("{}.bias", weight.strip_suffix(".weight").unwrap_or(weight));
                HiddenNorm::Layer { weight: loader.tensor(weight)?, bias: loader.tensor(&bias)?, eps: self.eps }
            }
        })
    }
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> Self {
        RmsNorm { weight, eps, offset: false }
    }

    /// The weight and eps of a norm without the `1 + w` offset.
    pub fn plain(&self) -> Option<(&Tensor, f64)> {
        (!self.offset).then_some((&self.weight, self.eps))
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if self.offset {
            let normed = normalize_f32(xs, self.eps)?.broadcast_mul(&self.weight)?;
            return Ok(normed.to_dtype(xs.dtype())?);
        }
        if xs.device().is_cuda() && self.weight.dtype() == xs.dtype() {
            // The same values in one pass.
            return crate::cuda::rms_norm(xs, &self.weight, self.eps as f32);
        }
        Ok(normalize(xs, self.eps)?.broadcast_mul(&self.weight)?)
    }

    /// `(xs + branch, norm of it)` in one pass where a kernel does it (on a GPU, without the `1 + w` offset, all of
    /// one dtype): the same values as the sum, then [`Self::forward`]. None elsewhere.
    pub fn add_forward(&self, xs: &Tensor, branch: &Tensor) -> Result<Option<(Tensor, Tensor)>> {
        let fits = !self.offset
            && xs.device().is_cuda()
            && self.weight.dtype() == xs.dtype()
            && branch.dtype() == xs.dtype()
            && branch.dims() == xs.dims();
        if !fits {
            return Ok(None);
        }
        Ok(Some(crate::cuda::add_rms_norm(xs, branch, &self.weight, self.eps as f32)?))
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

/// How a gated RMSNorm gates its output, and where its weight multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputGate {
    /// `w · x̂ · silu(z)`, x̂ cast back to the input dtype before the weight multiplies it (Qwen3-Next's
    /// `Qwen3NextRMSNormGated`).
    Silu,
    /// `w · x̂ · sigmoid(g)`, all in f32 (Kimi-Linear's `KimiLinearRMSNormGated`).
    Sigmoid,
}

/// RMSNorm then gate over the last dimension (the heads of a linear-attention mixer's output): the
/// normalisation in f32, the gate in f32, the result in the input dtype.
/// transformers: models/qwen3_next `Qwen3NextRMSNormGated`, models/kimi_linear `KimiLinearRMSNormGated`.
pub struct GatedRmsNorm {
    /// `[D]`.
    pub weight: Tensor,
    pub eps: f64,
    pub gate: OutputGate,
}

impl GatedRmsNorm {
    /// `xs` and `gate` `[…, D]` → `[…, D]` in `xs`'s dtype.
    pub fn forward(&self, xs: &Tensor, gate: &Tensor) -> Result<Tensor> {
        let gate = gate.to_dtype(DType::F32)?;
        let gated = match self.gate {
            OutputGate::Silu => {
                let normed = normalize(xs, self.eps)?.broadcast_mul(&self.weight)?;
                normed.to_dtype(DType::F32)?.mul(&gate.silu()?)?
            }
            OutputGate::Sigmoid => {
                let normed = normalize_f32(xs, self.eps)?.broadcast_mul(&self.weight.to_dtype(DType::F32)?)?;
                normed.mul(&sigmoid(&gate)?)?
            }
        };
        Ok(gated.to_dtype(xs.dtype())?)
    }
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

    /// `(xs + branch, norm of it)` in one pass where [`RmsNorm::add_forward`] has a kernel for it; None elsewhere.
    pub fn add_forward(&self, xs: &Tensor, branch: &Tensor) -> Result<Option<(Tensor, Tensor)>> {
        match self {
            HiddenNorm::Rms(norm) => norm.add_forward(xs, branch),
            HiddenNorm::Layer { .. } => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    #[test]
    fn the_gated_norm_gates_by_silu_or_by_sigmoid() {
        // x = (3, 4): mean square 12.5, x̂ = x / √12.5; weight (1, 2); gate (0, ln 3).
        let xs = Tensor::new(&[[3f32, 4.0]], &Device::Cpu).unwrap();
        let gate = Tensor::new(&[[0f32, 3f32.ln()]], &Device::Cpu).unwrap();
        let weight = Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let normed = [3.0 / 12.5f32.sqrt(), 2.0 * 4.0 / 12.5f32.sqrt()];
        // silu(0) = 0, silu(ln 3) = ln 3 · 3/4; sigmoid(0) = 1/2, sigmoid(ln 3) = 3/4.
        let cases = [(OutputGate::Silu, [0.0, 3f32.ln() * 0.75]), (OutputGate::Sigmoid, [0.5, 0.75])];
        for (kind, factors) in cases {
            let norm = GatedRmsNorm { weight: weight.clone(), eps: 0.0, gate: kind };
            let got = norm.forward(&xs, &gate).unwrap().to_vec2::<f32>().unwrap();
            for ((g, n), f) in got[0].iter().zip(normed).zip(factors) {
                assert!((g - n * f).abs() < 1e-6, "{kind:?}: {g} vs {}", n * f);
            }
        }
    }

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
