//! GPU kernels for the hot loops of quantization: amax reductions, FP8 and NVFP4 quantization, and the split
//! of fused gate/up expert tensors. They take and return candle CUDA tensors (the sources in bf16, f16 or f32)
//! and produce exactly the bytes of the CPU reference in [`crate::formats`] (tested in
//! `tests/kernels_cuda.rs`). Also the calibration forward's routed-expert projections as one cuBLAS grouped
//! GEMM ([`grouped_matmul_t`]), and the amax that its activation maxima use.
//!
//! The CUDA code lives in `quant.cu` beside this file, compiled to PTX by `build.rs` when the `cuda` feature is
//! on. Without the feature every function here returns [`Error::DeviceUnavailable`]; a tensor on the CPU gets
//! the same error (use [`crate::formats`] there).
//!
//! Scales are passed in, not computed: [`fp8_weight_scale`] and [`nvfp4_weight_scale_2`] turn an amax into
//! the scale the CPU formats would use, so that a caller can read the amax back from [`amax`] (4 bytes) and
//! apply SPEC §4.3's sharing rules on the host.

#[cfg(feature = "cuda")]
mod cuda;
#[cfg(feature = "cuda")]
mod grouped_gemm;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// FP8 E4M3's largest value.
const E4M3_MAX: f32 = 448.0;
/// E2M1's largest value.
const E2M1_MAX: f32 = 6.0;

/// NVFP4 output of one tensor `[.., K]`: the E2M1 codes and the E4M3 block scales, both as `U8` tensors on the
/// source's device.
#[derive(Debug, Clone)]
pub struct Nvfp4Tensors {
    /// `[.., K/2]`: two codes per byte, the even-indexed element in the low nibble.
    pub packed: Tensor,
    /// `[.., K/16]`: the E4M3 bytes of the block scales.
    pub block_scales: Tensor,
}

/// Whether this build has the CUDA kernels (the `cuda` feature).
pub const fn compiled() -> bool {
    cfg!(feature = "cuda")
}

/// The CUDA device with this ordinal, or [`Error::DeviceUnavailable`] when the build has no CUDA or the
/// machine has no such GPU (or no driver). Its memory pool keeps freed memory for reuse (as PyTorch's caching
/// allocator does), so repeated large allocations stay cheap. Everything on it runs on one stream.
pub fn cuda_device(ordinal: usize) -> Result<Device> {
    #[cfg(feature = "cuda")]
    {
        let device = candle_core::CudaDevice::new_with_stream(ordinal).map_err(|error| Error::DeviceUnavailable {
            message: format!("cuda:{ordinal} could not be opened: {error}"),
        })?;
        // All work on this device goes to this one stream, whichever thread issues it, so stream order alone
        // orders every use of every buffer. cudarc's per-buffer events (two created per allocation, a wait and
        // a record per kernel argument) add nothing then, and cost host time on every one of the forward's
        // thousands of small launches.
        // SAFETY: no other stream of this context touches memory allocated through this device.
        unsafe { device.disable_event_tracking() };
        cuda::keep_freed_memory(&device)?;
        Ok(Device::Cuda(device))
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = ordinal;
        Err(not_compiled("cuda_device"))
    }
}

/// `weight_scale` of FP8 for a per-tensor weight amax, as `formats::Fp8` computes it: `amax / 448`, with a
/// zero amax read as 448 and one below the smallest normal f32 raised to it.
pub fn fp8_weight_scale(amax: f32) -> Result<f32> {
    Ok(sanitize_weight_amax(amax, E4M3_MAX)? / E4M3_MAX)
}

/// `weight_scale_2` of NVFP4 for a per-tensor weight amax, as `formats::Nvfp4` computes it: `amax / (6·448)`,
/// with a zero amax read as 6 and one below the smallest normal f32 raised to it.
pub fn nvfp4_weight_scale_2(amax: f32) -> Result<f32> {
    Ok(sanitize_weight_amax(amax, E2M1_MAX)? / (E2M1_MAX * E4M3_MAX))
}

/// max |x| over the whole tensor, as an F32 tensor of shape `[]`. NaN values are skipped (the CPU's
/// `weight_amax` does the same); an infinite value gives +inf.
pub fn amax(xs: &Tensor) -> Result<Tensor> {
    let per_expert = amax_runs(xs, 1, "amax")?;
    Ok(per_expert.reshape(())?)
}

/// max |x| per expert of an `[E, ..]` tensor (gate_up `[E, 2I, H]`, down `[E, H, I]`), as F32 `[E]`.
pub fn amax_per_expert(xs: &Tensor) -> Result<Tensor> {
    let experts = leading_dim(xs, "amax_per_expert")?;
    amax_runs(xs, experts, "amax_per_expert")
}

/// max |x| per block of 16 along the last dimension: F32 `[.., K/16]` for `[.., K]` (K a multiple of 16),
/// the block amaxes NVFP4 derives its block scales from.
pub fn amax_per_block(xs: &Tensor) -> Result<Tensor> {
    check_blocks(xs, "amax_per_block")?;
    #[cfg(feature = "cuda")]
    {
        cuda::amax_per_block(xs)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(not_compiled("amax_per_block"))
    }
}

/// FP8 E4M3 codes of `xs / weight_scale` (divided in the source's dtype, SPEC §4.1) as a `U8` tensor of the
/// same shape. `weight_scale` comes from [`fp8_weight_scale`].
pub fn fp8_quantize(xs: &Tensor, weight_scale: f32) -> Result<Tensor> {
    fp8_quantize_experts(xs, &[weight_scale])
}

/// As [`fp8_quantize`], with one scale per expert of an `[E, ..]` tensor (`weight_scales.len() == E`), or one
/// for the whole tensor.
pub fn fp8_quantize_experts(xs: &Tensor, weight_scales: &[f32]) -> Result<Tensor> {
    check_scales(xs, weight_scales, "fp8_quantize")?;
    #[cfg(feature = "cuda")]
    {
        cuda::fp8_quantize(xs, weight_scales)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(not_compiled("fp8_quantize"))
    }
}

/// NVFP4 codes and block scales of `xs` `[.., K]` (K a multiple of 16) with this `weight_scale_2` (from
/// [`nvfp4_weight_scale_2`]), SPEC §4.2.
pub fn nvfp4_quantize(xs: &Tensor, weight_scale_2: f32) -> Result<Nvfp4Tensors> {
    nvfp4_quantize_experts(xs, &[weight_scale_2])
}

/// As [`nvfp4_quantize`], with one `weight_scale_2` per expert of an `[E, ..]` tensor, or one for the whole
/// tensor.
pub fn nvfp4_quantize_experts(xs: &Tensor, weight_scales_2: &[f32]) -> Result<Nvfp4Tensors> {
    check_blocks(xs, "nvfp4_quantize")?;
    check_scales(xs, weight_scales_2, "nvfp4_quantize")?;
    #[cfg(feature = "cuda")]
    {
        cuda::nvfp4_quantize(xs, weight_scales_2)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(not_compiled("nvfp4_quantize"))
    }
}

/// Splits a fused `gate_up [E, 2I, H]` (rows `[:I]` gate, `[I:]` up) into contiguous `gate [E, I, H]` and
/// `up [E, I, H]`, each expert's `[I, H]` matrix contiguous.
pub fn split_gate_up(gate_up: &Tensor) -> Result<(Tensor, Tensor)> {
    let &[_, two_i, _] = gate_up.dims() else {
        return Err(shape_error(gate_up, "split_gate_up expects a fused gate_up tensor [E, 2I, H]"));
    };
    if two_i % 2 != 0 {
        return Err(shape_error(gate_up, "the gate/up dimension 2I is odd, so it cannot be split in two halves"));
    }
    #[cfg(feature = "cuda")]
    {
        cuda::split_gate_up(gate_up)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(not_compiled("split_gate_up"))
    }
}

/// Splits a transposed fused `gate_up [E, H, 2I]` into `gate [E, I, H]` and `up [E, I, H]` in the `nn.Linear`
/// orientation. Gate is columns `[:I]` and up `[I:]` (Llama 4, Qwen3-VL-MoE), or with `interleaved` the even
/// and the odd columns (GPT-OSS).
pub fn split_gate_up_transposed(gate_up: &Tensor, interleaved: bool) -> Result<(Tensor, Tensor)> {
    let &[_, _, two_i] = gate_up.dims() else {
        return Err(shape_error(gate_up, "split_gate_up_transposed expects a fused gate_up tensor [E, H, 2I]"));
    };
    if two_i % 2 != 0 {
        return Err(shape_error(gate_up, "the gate/up dimension 2I is odd, so it cannot be split in two halves"));
    }
    #[cfg(feature = "cuda")]
    {
        cuda::split_gate_up_transposed(gate_up, interleaved)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = interleaved;
        Err(not_compiled("split_gate_up_transposed"))
    }
}

/// The routed experts' projection in one call: for each i, rows `ranges[i]` of `xs [rows, K]` times
/// `weights[i]ᵀ` (`[N, K]`, an `nn.Linear` weight) into the same rows of the `[rows, N]` result. One cuBLAS
/// grouped GEMM (f32 accumulation, as candle's matmul), no per-expert allocation or concatenation. `xs` and
/// every weight are contiguous CUDA tensors of one dtype, bf16 or f16; the ranges tile `0..rows` in order
/// (empty ones allowed).
pub fn grouped_matmul_t(xs: &Tensor, weights: &[&Tensor], ranges: &[std::ops::Range<usize>]) -> Result<Tensor> {
    let op = "grouped_matmul_t";
    let (rows, k) = xs.dims2().map_err(|_| shape_error(xs, "grouped_matmul_t expects activations [rows, K]"))?;
    if weights.len() != ranges.len() || weights.is_empty() {
        return Err(Error::internal(format!(
            "kernels::{op}: {} weights for {} row ranges (one each, at least one)",
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
    let mut next = 0;
    for range in ranges {
        if range.start != next || range.end < range.start {
            return Err(Error::internal(format!("kernels::{op}: row ranges do not tile 0..{rows} in order")));
        }
        next = range.end;
    }
    if next != rows {
        return Err(Error::internal(format!("kernels::{op}: row ranges cover 0..{next}, not 0..{rows}")));
    }
    let device = match xs.device() {
        Device::Cuda(device) => device,
        _ => {
            return Err(Error::DeviceUnavailable {
                message: format!("kernels::{op} runs on CUDA tensors (the CPU path multiplies expert by expert)"),
            })
        }
    };
    if weights.iter().any(|w| !w.device().same_device(xs.device())) {
        return Err(Error::internal(format!("kernels::{op}: weights and activations on different devices")));
    }
    #[cfg(feature = "cuda")]
    {
        grouped_gemm::grouped_matmul_t(device, xs, weights, ranges, n)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = device;
        Err(not_compiled(op))
    }
}

/// `amax` over `runs` equal consecutive runs of the tensor's elements, F32 `[runs]`.
fn amax_runs(xs: &Tensor, runs: usize, op: &str) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    {
        let _ = op;
        cuda::amax_runs(xs, runs)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (xs, runs);
        Err(not_compiled(op))
    }
}

#[cfg_attr(feature = "cuda", allow(dead_code))]
fn not_compiled(op: &str) -> Error {
    Error::DeviceUnavailable {
        message: format!(
            "kernels::{op}: this build of moe-quant has no CUDA support (rebuild with the `cuda` feature: \
             `npm run build:cuda`, or `cargo build --features cuda` after sourcing tools/cuda-env.sh)"
        ),
    }
}

fn shape_error(xs: &Tensor, message: &str) -> Error {
    Error::ShapeInvalid { tensor: "(device tensor)".into(), shape: xs.dims().to_vec(), message: message.into() }
}

fn leading_dim(xs: &Tensor, op: &str) -> Result<usize> {
    match xs.dims().first() {
        Some(&experts) if experts > 0 => Ok(experts),
        _ => Err(shape_error(xs, &format!("{op} needs a tensor [E, ..] with at least one expert"))),
    }
}

fn check_blocks(xs: &Tensor, op: &str) -> Result<()> {
    match xs.dims().last() {
        Some(&k) if k % 16 == 0 => Ok(()),
        _ => Err(shape_error(
            xs,
            &format!("{op} quantizes blocks of 16 along the last (input) dimension, which must be a multiple of 16"),
        )),
    }
}

fn check_scales(xs: &Tensor, scales: &[f32], op: &str) -> Result<()> {
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

/// `formats::sanitize_weight_amax` without the tensor name: 0 → `maxbound`, tiny → smallest normal f32.
fn sanitize_weight_amax(amax: f32, maxbound: f32) -> Result<f32> {
    if !amax.is_finite() || amax < 0.0 {
        return Err(Error::internal(format!("the weight amax {amax} is not a finite, non-negative number")));
    }
    Ok(if amax == 0.0 { maxbound } else { amax.max(f32::MIN_POSITIVE) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Dtype;
    use crate::formats::{Fp8, Nvfp4, QuantFormat, WeightInput};

    fn scalar(q: &crate::formats::QuantizedWeight, suffix: &str) -> f32 {
        let data = &q.get(suffix).unwrap().data;
        f32::from_le_bytes([data[0], data[1], data[2], data[3]])
    }

    #[test]
    fn scales_match_the_cpu_formats() {
        let values = [0.5f32; 16];
        let weight = WeightInput::new("w", Dtype::F32, &[1, 16], &values).unwrap();
        for amax in [0.0, 1e-45, 1e-39, 0.5, 3.7, 448.0, 1e30] {
            assert_eq!(
                fp8_weight_scale(amax).unwrap(),
                scalar(&Fp8::default().quantize(&weight, amax).unwrap(), "weight_scale")
            );
            assert_eq!(
                nvfp4_weight_scale_2(amax).unwrap(),
                scalar(&Nvfp4.quantize(&weight, amax).unwrap(), "weight_scale_2")
            );
        }
        assert!(fp8_weight_scale(f32::NAN).is_err());
        assert!(nvfp4_weight_scale_2(-1.0).is_err());
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // one range of rows per weight: a slice of one range is meant
    fn grouped_matmul_checks_its_arguments_before_the_device() {
        let bf16 = candle_core::DType::BF16;
        let xs = Tensor::zeros((5, 4), bf16, &Device::Cpu).unwrap();
        let w = Tensor::zeros((3, 4), bf16, &Device::Cpu).unwrap();
        let code = |weights: &[&Tensor], ranges: &[std::ops::Range<usize>]| {
            grouped_matmul_t(&xs, weights, ranges).unwrap_err().code()
        };
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
        assert_eq!(fp8_quantize(&xs, 1.0).unwrap_err().code(), "E_DEVICE_UNAVAILABLE");
        assert_eq!(nvfp4_quantize(&xs, 1.0).unwrap_err().code(), "E_DEVICE_UNAVAILABLE");
        assert_eq!(amax(&xs).unwrap_err().code(), "E_DEVICE_UNAVAILABLE");
        let odd = Tensor::zeros((2, 24), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(nvfp4_quantize(&odd, 1.0).unwrap_err().code(), "E_TENSOR_SHAPE");
        assert_eq!(fp8_quantize_experts(&xs, &[1.0, 2.0, 3.0]).unwrap_err().code(), "E_TENSOR_SHAPE");
        assert_eq!(split_gate_up(&xs).unwrap_err().code(), "E_TENSOR_SHAPE");
        if !compiled() {
            assert_eq!(cuda_device(0).unwrap_err().code(), "E_DEVICE_UNAVAILABLE");
        }
    }
}
