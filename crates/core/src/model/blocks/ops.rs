//! Tensor helpers candle-core lacks: softmax, sigmoid, causal mask, absolute maximum.

use candle_core::{DType, Device, Tensor, D};

use crate::error::Result;

/// Softmax over the last dimension in f32, stabilised by the row maximum (returns f32).
pub fn softmax_last(xs: &Tensor) -> Result<Tensor> {
    let xs = xs.to_dtype(DType::F32)?;
    let max = xs.max_keepdim(D::Minus1)?;
    let exp = xs.broadcast_sub(&max)?.exp()?;
    let sum = exp.sum_keepdim(D::Minus1)?;
    Ok(exp.broadcast_div(&sum)?)
}

/// `1 / (1 + exp(-x))`.
pub fn sigmoid(xs: &Tensor) -> Result<Tensor> {
    Ok((xs.neg()?.exp()? + 1.0)?.recip()?)
}

/// `[T, T]` additive mask: 0 on and below the diagonal, -inf above.
pub fn causal_mask(len: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> =
        (0..len).flat_map(|i| (0..len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Ok(Tensor::from_vec(mask, (len, len), device)?)
}

/// max |x| over the whole tensor.
pub fn abs_max(xs: &Tensor) -> Result<f32> {
    Ok(xs.abs()?.flatten_all()?.max_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?)
}
