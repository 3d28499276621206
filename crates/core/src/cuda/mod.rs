//! The GPU: opening a CUDA device, and moe-quant's own kernels that are not a format's (amax reductions, the
//! split of fused gate/up experts, the routed experts' grouped GEMM, fused steps of the forward). Each format's quantize kernel lives in its
//! folder (`formats/<name>/cuda.rs`) and is launched through the same helper, [`launch`].
//!
//! Kernels take and return candle CUDA tensors (sources in bf16, f16 or f32) and produce exactly the bytes of
//! the CPU path (tested in `tests/kernels_cuda.rs`). A build without the `cuda` feature swaps `launch.rs` for
//! `absent.rs` (candle's own trick for its CUDA backend): everything here then fails with
//! [`Error::DeviceUnavailable`], as does a tensor on the CPU.

mod amax;
mod attention;
mod forward;
pub mod known_max;
mod route;
mod split;

#[cfg(feature = "cuda")]
mod launch;

#[cfg(not(feature = "cuda"))]
#[path = "absent.rs"]
mod launch;

use std::ops::Range;

use candle_core::{Device, Tensor};

pub use amax::{amax, amax_each, amax_per_block, amax_per_expert};
pub use attention::{fused_attention, fused_attention_fits, KeyMask};
pub use forward::{
    add_rms_norm, add_rounded, all_finite, combine_routed, gated_activation, gather_rows, head_norm_rope, rms_norm,
    softmax_scores, GatedActivation,
};
pub(crate) use launch::{address, Arg, Grid, Source, Uploader, BLOCK_THREADS};
pub use route::{route, routes_on_device, DeviceRouter, DeviceRouting};
pub use split::{split_gate_up, split_gate_up_transposed};

use crate::error::{Error, Result};

/// Elements `range` of a U8 tensor (row-major order) on the host. From a GPU only those bytes travel, once:
/// candle's `to_vec1` copies a CUDA tensor's whole storage, then the part asked for.
pub fn download_u8(xs: &Tensor, range: Range<usize>) -> Result<Vec<u8>> {
    if xs.device().is_cuda() {
        return launch::download_u8(xs, range);
    }
    let all = xs.flatten_all()?.to_vec1::<u8>()?;
    all.get(range.clone())
        .map(<[u8]>::to_vec)
        .ok_or_else(|| Error::internal(format!("download_u8: elements {range:?} of {:?}", xs.dims())))
}

/// The grid of an error kernel (`fp8_error`, `nvfp4_error`: one pair of partial sums per thread block, see
/// `block_sums` in common.cuh) over `runs` experts of `work` items each, and its number of blocks.
pub(crate) fn error_grid(work: usize, runs: usize) -> Result<(Grid, usize)> {
    const MAX_BLOCKS_PER_EXPERT: usize = 64;
    let blocks = work.div_ceil(BLOCK_THREADS as usize).clamp(1, MAX_BLOCKS_PER_EXPERT);
    let rows = u32::try_from(runs.max(1)).map_err(|_| Error::internal("cuda: too many experts for one launch"))?;
    Ok((Grid::Fixed { grid: (blocks as u32, rows, 1), block: (BLOCK_THREADS, 1, 1) }, blocks * rows as usize))
}

/// Whether this build has CUDA (the `cuda` feature).
pub const COMPILED: bool = cfg!(feature = "cuda");

/// A kernel module compiled by `build.rs` from one `.cu` file: two PTX variants (see `build.rs`).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))] // read by launch.rs only
pub(crate) struct Module {
    pub sm80_key: &'static str,
    pub sm89_key: &'static str,
    pub sm80: &'static str,
    pub sm89: &'static str,
}

/// The [`Module`] built from `<name>.cu` (build.rs lists the sources).
macro_rules! kernel_module {
    ($name:literal) => {
        $crate::cuda::Module {
            sm80_key: concat!("moe_quant_core::", $name, "::sm80"),
            sm89_key: concat!("moe_quant_core::", $name, "::sm89"),
            sm80: include_str!(concat!(env!("OUT_DIR"), "/", $name, ".sm80.ptx")),
            sm89: include_str!(concat!(env!("OUT_DIR"), "/", $name, ".sm89.ptx")),
        }
    };
}
pub(crate) use kernel_module;

/// The CUDA device with this ordinal, or [`Error::DeviceUnavailable`] when the build has no CUDA or the
/// machine has no such GPU (or no driver). Its memory pool keeps freed memory for reuse (as PyTorch's caching
/// allocator does), so repeated large allocations stay cheap. Everything on it runs on one stream.
pub fn device(ordinal: usize) -> Result<Device> {
    launch::open_device(ordinal)
}

/// The routed experts' projection in one call: for each i, rows `ranges[i]` of `xs [rows, K]` times
/// `weights[i]ᵀ` (`[N, K]`, an `nn.Linear` weight) into the same rows of the `[rows, N]` result. One cuBLAS
/// grouped GEMM (f32 accumulation, as candle's matmul), no per-expert allocation or concatenation. `xs` and
/// every weight are contiguous CUDA tensors of one dtype, bf16 or f16; the ranges tile `0..rows` in order
/// (empty ones allowed).
pub fn grouped_matmul_t(xs: &Tensor, weights: &[&Tensor], ranges: &[Range<usize>]) -> Result<Tensor> {
    let op = "grouped_matmul_t";
    let (rows, k) = xs.dims2().map_err(|_| shape_error(xs, "grouped_matmul_t expects activations [rows, K]"))?;
    if weights.len() != ranges.len() || weights.is_empty() {
        return Err(Error::internal(format!(
            "cuda::{op}: {} weights for {} row ranges (one each, at least one)",
            weights.len(),
            ranges.len()
        )));
    }
    let n = weights[0].dim(0)?;
    for weight in weights {
        if weight.dims() != [n, k] || weight.dtype() != xs.dtype() || !weight.is_contiguous() {
            return Err(shape_error(
                weight,
                &format!("grouped_matmul_t expects contiguous {:?} weights [{n}, {k}]", xs.dtype()),
            ));
        }
    }
    if !xs.is_contiguous() {
        return Err(shape_error(xs, "grouped_matmul_t expects contiguous activations"));
    }
    check_tiling(ranges, rows, op)?;
    let Device::Cuda(device) = xs.device() else {
        return Err(Error::DeviceUnavailable {
            message: format!("cuda::{op} runs on CUDA tensors (the CPU path multiplies expert by expert)"),
        });
    };
    if weights.iter().any(|w| !w.device().same_device(xs.device())) {
        return Err(Error::internal(format!("cuda::{op}: weights and activations on different devices")));
    }
    launch::grouped_matmul_t(device, xs, weights, ranges, n)
}

/// Errors unless `ranges` tile `0..rows` in order.
fn check_tiling(ranges: &[Range<usize>], rows: usize, op: &str) -> Result<()> {
    let mut next = 0;
    for range in ranges {
        if range.start != next || range.end < range.start {
            return Err(Error::internal(format!("cuda::{op}: row ranges do not tile 0..{rows} in order")));
        }
        next = range.end;
    }
    if next != rows {
        return Err(Error::internal(format!("cuda::{op}: row ranges cover 0..{next}, not 0..{rows}")));
    }
    Ok(())
}

/// The error for a tensor that is not on a CUDA device.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))] // used by launch.rs
pub(crate) fn not_on_cuda(op: &str, device: &Device) -> Error {
    Error::DeviceUnavailable {
        message: format!(
            "cuda::{op} runs on CUDA tensors, and this one is on {:?} (the formats' CPU path quantizes there)",
            device.location()
        ),
    }
}

/// A launch dimension or kernel argument as u32, or an internal error naming `op`.
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn to_u32(value: usize, op: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::internal(format!("cuda::{op}: dimension too large")))
}

pub(crate) fn shape_error(xs: &Tensor, message: &str) -> Error {
    Error::ShapeInvalid { tensor: "(device tensor)".into(), shape: xs.dims().to_vec(), message: message.into() }
}

/// The first dimension of an `[E, ..]` tensor (at least one expert).
pub(crate) fn leading_dim(xs: &Tensor, op: &str) -> Result<usize> {
    match xs.dims().first() {
        Some(&experts) if experts > 0 => Ok(experts),
        _ => Err(shape_error(xs, &format!("{op} needs a tensor [E, ..] with at least one expert"))),
    }
}

/// One scale for the whole tensor or one per expert, each finite and positive.
pub(crate) fn check_scales(xs: &Tensor, scales: &[f32], op: &str) -> Result<()> {
    if scales.len() != 1 && scales.len() != leading_dim(xs, op)? {
        return Err(shape_error(
            xs,
            &format!("{op}: {} scales given; one, or one per expert (the first dimension)", scales.len()),
        ));
    }
    if let Some(bad) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(Error::internal(format!("{op}: scale {bad} is not a finite, positive number")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // one range of rows per weight: a slice of one range is meant
    fn grouped_matmul_checks_its_arguments_before_the_device() {
        let bf16 = candle_core::DType::BF16;
        let xs = Tensor::zeros((5, 4), bf16, &Device::Cpu).unwrap();
        let w = Tensor::zeros((3, 4), bf16, &Device::Cpu).unwrap();
        let code =
            |weights: &[&Tensor], ranges: &[Range<usize>]| grouped_matmul_t(&xs, weights, ranges).unwrap_err().code();
        // Well-formed, but on the CPU.
        assert_eq!(code(&[&w, &w, &w], &[0..2, 2..2, 2..5]), "E_DEVICE_UNAVAILABLE");
        // Ranges that leave a row out, overlap, run backwards or go past the end.
        assert_eq!(code(&[&w, &w], &[0..2, 3..5]), "E_INTERNAL");
        assert_eq!(code(&[&w, &w], &[0..3, 2..5]), "E_INTERNAL");
        assert_eq!(code(&[&w], &[0..4]), "E_INTERNAL");
        assert_eq!(code(&[&w], &[0..6]), "E_INTERNAL");
        assert_eq!(code(&[&w, &w], &[0..5]), "E_INTERNAL");
        // Weights of another shape or dtype, and activations that are not a contiguous matrix.
        let wide = Tensor::zeros((3, 8), bf16, &Device::Cpu).unwrap();
        assert_eq!(code(&[&w, &wide], &[0..2, 2..5]), "E_TENSOR_SHAPE");
        let f32_w = Tensor::zeros((3, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(code(&[&f32_w], &[0..5]), "E_TENSOR_SHAPE");
        let strided = Tensor::zeros((4, 5), bf16, &Device::Cpu).unwrap().t().unwrap();
        assert_eq!(grouped_matmul_t(&strided, &[&w], &[0..5]).unwrap_err().code(), "E_TENSOR_SHAPE");
    }

    #[test]
    fn cpu_tensors_and_bad_shapes_get_typed_errors() {
        let xs = Tensor::zeros((2, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(amax(&xs).unwrap_err().code(), "E_DEVICE_UNAVAILABLE");
        assert_eq!(amax_per_block(&xs).unwrap_err().code(), "E_DEVICE_UNAVAILABLE");
        let odd = Tensor::zeros((2, 24), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(amax_per_block(&odd).unwrap_err().code(), "E_TENSOR_SHAPE");
        assert_eq!(split_gate_up(&xs).unwrap_err().code(), "E_TENSOR_SHAPE");
        if !COMPILED {
            assert_eq!(device(0).unwrap_err().code(), "E_DEVICE_UNAVAILABLE");
        }
    }
}
