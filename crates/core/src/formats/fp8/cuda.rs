//! FP8 quantization on the GPU (`fp8.cu`): the bytes [`Fp8::quantize`](super::Fp8) writes on the CPU, for
//! weights already on the device.

use candle_core::{DType, Tensor};

use super::Fp8;
use crate::checkpoint::Dtype;
use crate::cuda::{check_scales, kernel_module, Arg, Grid, Module, Source};
use crate::error::{Error, Result};
use crate::formats::{e4m3_table, scale_leading, DeviceQuantize};

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

    /// `e4m3(code) · weight_scale`, as [`dequantize_fp8`](super::dequantize_fp8) computes it.
    fn dequantize_on_device(&self, parts: &[Tensor], weight_scales: &[f32]) -> Result<Tensor> {
        let [codes] = parts else {
            return Err(Error::internal(format!("FP8 dequantizes one tensor of codes, not {}", parts.len())));
        };
        let table = e4m3_table(codes.device())?;
        let values = table.index_select(&codes.flatten_all()?, 0)?.reshape(codes.dims())?;
        scale_leading(&values, weight_scales)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::formats::{QuantFormat, WeightInput};

    #[test]
    fn dequantizing_by_tensor_ops_gives_the_values_of_dequantize() {
        let values: Vec<f32> = (0..6 * 16).map(|i| ((i * 37) % 101) as f32 * 0.07 - 3.4).collect();
        let weight = WeightInput::new("w", Dtype::BF16, &[6, 16], &values).unwrap();
        let format = Fp8 { torch_cuda: false };
        let quantized = format.quantize(&weight, 3.5).unwrap();
        let (_, expected) = format.dequantize("w", &quantized.views()).unwrap();
        let codes = Tensor::from_vec(quantized.tensors[0].data.clone(), (6, 16), &Device::Cpu).unwrap();
        let scale = format.weight_scale("w", 3.5).unwrap();
        let restored = format.dequantize_on_device(&[codes], &[scale]).unwrap();
        assert_eq!(restored.dims(), [6, 16]);
        let restored = restored.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(
            restored.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            expected.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }
}
