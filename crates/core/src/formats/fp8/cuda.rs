//! FP8 quantization on the GPU (`fp8.cu`): the bytes [`Fp8::quantize`](super::Fp8) writes on the CPU, for
//! weights already on the device.

use candle_core::{DType, Tensor};

use super::Fp8;
use crate::checkpoint::Dtype;
use crate::cuda::{address, check_scales, error_grid, kernel_module, Arg, Grid, Module, Source};
use crate::error::{Error, Result};
use crate::formats::DeviceQuantize;

const FP8: Module = kernel_module!("fp8");
/// Elements one thread loads with 16-byte vectors (`GROUP` in common.cuh).
const VECTOR_GROUP: usize = 16;

impl DeviceQuantize for Fp8 {
    /// `[weight]`: E4M3 codes of `xs / weight_scale` (divided in the source's dtype by [`Fp8::divisor`], SPEC
    /// §4.1), U8 of the source's shape.
    fn quantize_on_device(&self, xs: &Tensor, weight_scales: &[f32]) -> Result<Vec<Tensor>> {
        check_scales(xs, weight_scales, "fp8_quantize")?;
        let dtype = match xs.dtype() {
            DType::BF16 => Dtype::BF16,
            DType::F16 => Dtype::F16,
            _ => Dtype::F32,
        };
        let divisors: Vec<f32> = weight_scales.iter().map(|&scale| self.divisor(scale, dtype)).collect();
        let weight_scales = divisors.as_slice();
        let source = Source::new(xs, "fp8_quantize")?;
        let count = xs.elem_count();
        let mut out = source.alloc(DType::U8, count)?;
        if count > 0 {
            let runs = weight_scales.len();
            let per_expert = count / runs;
            let vectorized = i32::from(runs == 1 || per_expert.is_multiple_of(VECTOR_GROUP));
            let scales = source.upload(weight_scales)?;
            let kernel = format!("fp8_quantize_{}", source.suffix());
            let grid = Grid::Wave { work: per_expert / VECTOR_GROUP + per_expert % VECTOR_GROUP, rows: runs };
            let mut args = [Arg::Out(&mut out), Arg::In(&scales), Arg::U64(per_expert as u64), Arg::I32(vectorized)];
            source.launch(&FP8, &kernel, grid, &mut args)?;
        }
        Ok(vec![source.tensor(out, xs.dims())])
    }

    /// Σ (e4m3(code) · weight_scale − x)² and Σ x², as [`dequantize_fp8`](super::dequantize_fp8) restores the
    /// values.
    fn error_on_device(&self, xs: &Tensor, parts: &[Tensor], weight_scales: &[f32]) -> Result<Tensor> {
        let [codes] = parts else {
            return Err(Error::internal(format!("FP8 measures one tensor of codes, not {}", parts.len())));
        };
        check_scales(xs, weight_scales, "fp8_error")?;
        let source = Source::new(xs, "fp8_error")?;
        let per_expert = xs.elem_count() / weight_scales.len().max(1);
        let codes = codes.contiguous()?;
        let scales = source.upload(weight_scales)?;
        let (grid, blocks) = error_grid(per_expert, weight_scales.len())?;
        let mut partial = source.alloc(DType::F32, 2 * blocks)?;
        let kernel = format!("fp8_error_{}", source.suffix());
        let mut args =
            [Arg::U64(address(&codes)?), Arg::In(&scales), Arg::U64(per_expert as u64), Arg::Out(&mut partial)];
        source.launch(&FP8, &kernel, grid, &mut args)?;
        Ok(source.tensor(partial, (blocks, 2)).sum(0)?)
    }
}
