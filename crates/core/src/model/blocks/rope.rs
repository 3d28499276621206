//! Rotary position embeddings: inverse frequencies for the default, linear, llama3, yarn, LongRoPE and
//! proportional variants (transformers' `modeling_rope_utils.py`), and their application to the leading `rotary_dim` dimensions of
//! each head, rotating halves or (DeepSeek-V3's `rope_interleave`) adjacent pairs.

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::model::descriptor::{RopeDescriptor, RopeKind};

/// cos/sin tables for positions `0..len`, `[len, rotary_dim]`.
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
    rotary_dim: usize,
    interleaved: bool,
}

/// Inverse frequencies `[rotary_dim / 2]` and the attention scaling that multiplies cos and sin.
pub fn inverse_frequencies(rope: &RopeDescriptor) -> Result<(Vec<f64>, f64)> {
    let dim = rope.rotary_dim;
    if dim == 0 || !dim.is_multiple_of(2) {
        return Err(Error::internal(format!("rotary dimension {dim} must be even and positive")));
    }
    let base: Vec<f64> = (0..dim / 2).map(|i| 1.0 / rope.theta.powf((2 * i) as f64 / dim as f64)).collect();
    let factor = rope.factor.unwrap_or(1.0);
    match rope.kind {
        RopeKind::Default => Ok((base, 1.0)),
        RopeKind::Longrope => {
            let factors = rope.short_factor.as_deref().unwrap_or_default();
            if factors.len() != base.len() {
                return Err(Error::internal(format!(
                    "LongRoPE needs {} short factors, one per inverse frequency, not {}",
                    base.len(),
                    factors.len()
                )));
            }
            Ok((base.iter().zip(factors).map(|(f, s)| f / s).collect(), rope.short_mscale.unwrap_or(1.0)))
        }
        RopeKind::Linear => Ok((base.iter().map(|f| f / factor).collect(), 1.0)),
        RopeKind::Proportional => {
            let angles = rope.proportional_angles.unwrap_or(dim / 2);
            let freqs = base.iter().enumerate().map(|(i, f)| if i < angles { f / factor } else { 0.0 }).collect();
            Ok((freqs, 1.0))
        }
        RopeKind::Llama3 => {
            let old_context = rope.original_max_position_embeddings.unwrap_or(8192.0);
            let low = rope.low_freq_factor.unwrap_or(1.0);
            let high = rope.high_freq_factor.unwrap_or(4.0);
            let low_wavelen = old_context / low;
            let high_wavelen = old_context / high;
            let freqs = base
                .iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    let scaled = if wavelen > low_wavelen { f / factor } else { f };
                    let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
                    if medium {
                        let smooth = (old_context / wavelen - low) / (high - low);
                        (1.0 - smooth) * scaled / factor + smooth * scaled
                    } else {
                        scaled
                    }
                })
                .collect();
            Ok((freqs, 1.0))
        }
        RopeKind::Yarn => yarn(rope, &base, factor),
    }
}

/// Yarn's inverse frequencies (the base ones blended with their interpolation by a ramp over the dimensions) and
/// its attention scaling.
fn yarn(rope: &RopeDescriptor, base: &[f64], factor: f64) -> Result<(Vec<f64>, f64)> {
    let dim = rope.rotary_dim;
    let mscale_of = |scale: f64, m: f64| if scale <= 1.0 { 1.0 } else { 0.1 * m * scale.ln() + 1.0 };
    let attention = match (rope.attention_factor, rope.mscale, rope.mscale_all_dim) {
        (Some(a), _, _) => a,
        (None, Some(m), Some(all)) if m != 0.0 && all != 0.0 => mscale_of(factor, m) / mscale_of(factor, all),
        _ => mscale_of(factor, 1.0),
    };
    let original = rope.original_max_position_embeddings.unwrap_or(4096.0);
    let beta_fast = rope.beta_fast.unwrap_or(32.0);
    let beta_slow = rope.beta_slow.unwrap_or(1.0);
    let correction_dim = |rotations: f64| {
        (dim as f64 * (original / (rotations * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * rope.theta.ln())
    };
    let (mut low, mut high) = (correction_dim(beta_fast), correction_dim(beta_slow));
    if rope.truncate.unwrap_or(true) {
        low = low.floor();
        high = high.ceil();
    }
    let low = low.max(0.0);
    let high = high.min(dim as f64 - 1.0);
    let high = if low == high { high + 0.001 } else { high };
    let freqs = base
        .iter()
        .enumerate()
        .map(|(i, &extrapolation)| {
            let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
            let extrapolation_factor = 1.0 - ramp;
            let interpolation = extrapolation / factor;
            interpolation * (1.0 - extrapolation_factor) + extrapolation * extrapolation_factor
        })
        .collect();
    Ok((freqs, attention))
}

impl Rope {
    /// Tables for positions `0..len` in `dtype` (the dtype of the q/k they rotate).
    pub fn new(rope: &RopeDescriptor, len: usize, device: &Device, dtype: candle_core::DType) -> Result<Self> {
        let (freqs, scaling) = inverse_frequencies(rope)?;
        // LongRoPE scales by long_mscale once the positions pass the original context.
        let past_original = rope.original_max_position_embeddings.is_some_and(|original| len as f64 > original);
        let scaling = match (rope.kind, rope.long_mscale) {
            (RopeKind::Longrope, Some(long)) if past_original => long,
            _ => scaling,
        };
        let half = freqs.len();
        let mut cos = Vec::with_capacity(len * 2 * half);
        let mut sin = Vec::with_capacity(len * 2 * half);
        for position in 0..len {
            for _ in 0..2 {
                for &f in &freqs {
                    // transformers computes the angles in f32.
                    let angle = (position as f32) * (f as f32);
                    cos.push(angle.cos() * scaling as f32);
                    sin.push(angle.sin() * scaling as f32);
                }
            }
        }
        Ok(Rope {
            cos: Tensor::from_vec(cos, (len, 2 * half), device)?.to_dtype(dtype)?,
            sin: Tensor::from_vec(sin, (len, 2 * half), device)?.to_dtype(dtype)?,
            rotary_dim: 2 * half,
            interleaved: rope.interleaved,
        })
    }

    /// Rotates `xs [B, heads, T, head_dim]` at positions `0..T`, by pairs or halves as the model's rope does.
    pub fn apply(&self, xs: &Tensor) -> Result<Tensor> {
        self.rotate(xs, self.interleaved)
    }

    /// cos and sin `[len, rotary_dim]` for a rope that rotates halves (None for adjacent pairs).
    pub fn halves_tables(&self, len: usize) -> Result<Option<(Tensor, Tensor)>> {
        if self.interleaved {
            return Ok(None);
        }
        Ok(Some((self.cos.narrow(0, 0, len)?, self.sin.narrow(0, 0, len)?)))
    }

    /// Number of leading dimensions of each head that are rotated.
    pub fn rotary_dim(&self) -> usize {
        self.rotary_dim
    }

    /// Rotates `xs [B, heads, T, head_dim]` at positions `0..T` with these tables, by adjacent pairs
    /// (`interleaved`, the rotated dimensions coming out as the even ones then the odd ones) or by halves, whatever
    /// the model's rope does (DeepSeek-V3.2's indexer rotates halves beside an attention that rotates pairs).
    pub fn rotate(&self, xs: &Tensor, interleaved: bool) -> Result<Tensor> {
        let (_, _, len, head_dim) = xs.dims4()?;
        let cos = self.cos.narrow(0, 0, len)?;
        let sin = self.sin.narrow(0, 0, len)?;
        let rotated = xs.narrow(3, 0, self.rotary_dim)?;
        let rotated = if interleaved {
            // Pairs (2i, 2i+1) → halves: the even dimensions first, then the odd ones.
            let (b, h, t, d) = rotated.dims4()?;
            rotated.reshape((b, h, t, d / 2, 2))?.transpose(3, 4)?.reshape((b, h, t, d))?
        } else {
            rotated.contiguous()?
        };
        let half = self.rotary_dim / 2;
        let x1 = rotated.narrow(3, 0, half)?;
        let x2 = rotated.narrow(3, half, half)?;
        let rotate_half = Tensor::cat(&[&x2.neg()?, &x1], 3)?;
        let out = (rotated.broadcast_mul(&cos)? + rotate_half.broadcast_mul(&sin)?)?;
        if self.rotary_dim == head_dim {
            Ok(out)
        } else {
            let pass = xs.narrow(3, self.rotary_dim, head_dim - self.rotary_dim)?;
            Ok(Tensor::cat(&[&out, &pass], 3)?)
        }
    }
}
