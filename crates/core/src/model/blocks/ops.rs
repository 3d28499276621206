//! Tensor helpers candle-core lacks: softmax, sigmoid, softplus, attention masks, absolute maximum.

use candle_core::{DType, Device, Tensor, D};

use crate::error::Result;
use crate::model::descriptor::AttentionMask;

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

/// `log(1 + eˣ)`, and `x` itself above 20 (torch's `softplus` threshold).
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// [`softplus`] of every element of an f32 tensor (computed on the host, where `ln_1p` is exact).
pub fn softplus_tensor(xs: &Tensor) -> Result<Tensor> {
    let values: Vec<f32> = xs.flatten_all()?.to_vec1::<f32>()?.into_iter().map(softplus).collect();
    Ok(Tensor::from_vec(values, xs.shape(), xs.device())?)
}

/// `[T, T]` additive mask: 0 on and below the diagonal, -inf above.
pub fn causal_mask(len: usize, device: &Device) -> Result<Tensor> {
    attention_mask(len, AttentionMask::Causal, device)
}

/// `[T, T]` additive mask: 0 where query `q` (row) sees key `k` (column), -inf elsewhere.
pub fn attention_mask(len: usize, kind: AttentionMask, device: &Device) -> Result<Tensor> {
    let sees = move |q: usize, k: usize| {
        k <= q
            && match kind {
                AttentionMask::Causal => true,
                AttentionMask::SlidingWindow { window } => k + window > q,
                AttentionMask::Chunked { size } => k / size.max(1) == q / size.max(1),
            }
    };
    let mask: Vec<f32> =
        (0..len).flat_map(|q| (0..len).map(move |k| if sees(q, k) { 0.0 } else { f32::NEG_INFINITY })).collect();
    Ok(Tensor::from_vec(mask, (len, len), device)?)
}

/// max |x| over the whole tensor, as a 0-d f32 tensor left on the device (no host synchronisation): the maximum
/// the fused kernel that wrote `xs` recorded (`cuda::known_max`: no pass over the tensor), else, on a GPU, our
/// amax kernel (all multiprocessors at memory bandwidth; candle's `max_all` reduces the whole
/// tensor in one thread block); NaN is ignored on both paths, as `f32::max` does.
pub fn abs_max_on_device(xs: &Tensor) -> Result<Tensor> {
    if let Some(amax) = crate::cuda::known_max::known(xs) {
        return Ok(amax);
    }
    if xs.device().is_cuda() && matches!(xs.dtype(), DType::BF16 | DType::F16 | DType::F32) {
        return crate::cuda::amax(xs);
    }
    if let Some(amax) = super::host::abs_max(xs)? {
        return Ok(Tensor::new(amax, xs.device())?);
    }
    Ok(xs.abs()?.flatten_all()?.max_all()?.to_dtype(DType::F32)?)
}

/// max |x| of each tensor, read back with one copy; on a GPU one launch reduces them all (`cuda::amax_each`).
pub fn abs_max_each(tensors: &[&Tensor]) -> Result<Vec<f32>> {
    let Some(first) = tensors.first() else {
        return Ok(Vec::new());
    };
    let one_dtype = tensors.iter().all(|t| t.dtype() == first.dtype());
    if first.device().is_cuda() && one_dtype && matches!(first.dtype(), DType::BF16 | DType::F16 | DType::F32) {
        return Ok(crate::cuda::amax_each(tensors)?.to_vec1::<f32>()?);
    }
    let maxima = tensors.iter().map(|t| abs_max_on_device(t)).collect::<Result<Vec<_>>>()?;
    read_scalars(&maxima)
}

/// The values of 0-d tensors gathered on the device and read back with one copy.
pub fn read_scalars(values: &[Tensor]) -> Result<Vec<f32>> {
    if values.is_empty() {
        return Ok(Vec::new());
    }
    Ok(Tensor::stack(values, 0)?.to_vec1::<f32>()?)
}

/// Whether every element of `xs` is finite: the sum of `xs · 0` is 0 for finite values and NaN as soon as one
/// is NaN or infinite, whatever the magnitudes (no overflow, unlike a sum of the values).
pub fn all_finite(xs: &Tensor) -> Result<bool> {
    if xs.device().is_cuda() && matches!(xs.dtype(), DType::BF16 | DType::F16 | DType::F32) {
        return crate::cuda::all_finite(xs);
    }
    Ok((xs * 0.0)?.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()? == 0.0)
}

/// max |x| over the whole tensor.
pub fn abs_max(xs: &Tensor) -> Result<f32> {
    Ok(abs_max_on_device(xs)?.to_scalar::<f32>()?)
}
