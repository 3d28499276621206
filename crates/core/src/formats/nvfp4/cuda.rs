//! NVFP4 quantization on the GPU (`nvfp4.cu`): the bytes [`Nvfp4::quantize`](super::Nvfp4) writes on the
//! CPU, for weights already on the device.

use candle_core::{DType, Tensor};

use super::{Nvfp4, E2M1_VALUES, NVFP4_BLOCK};
use crate::cuda::{check_scales, kernel_module, shape_error, Arg, Grid, Module, Source};
use crate::error::{Error, Result};
use crate::formats::{e4m3_table, scale_leading, DeviceQuantize};

const NVFP4: Module = kernel_module!("nvfp4");

impl DeviceQuantize for Nvfp4 {
    /// `[weight, weight_scale]`: the packed E2M1 codes `[.., K/2]` and the E4M3 block scales `[.., K/16]` of
    /// `xs [.., K]` (K a multiple of 16), SPEC §4.2, both U8.
    fn quantize_on_device(&self, xs: &Tensor, weight_scales: &[f32]) -> Result<Vec<Tensor>> {
        check_blocks(xs, "nvfp4_quantize")?;
        check_scales(xs, weight_scales, "nvfp4_quantize")?;
        let source = Source::new(xs, "nvfp4_quantize")?;
        let count = xs.elem_count();
        let blocks = count / NVFP4_BLOCK;
        let mut packed = source.alloc(DType::U8, count / 2)?;
        let mut block_scales = source.alloc(DType::U8, blocks)?;
        if blocks > 0 {
            let runs = weight_scales.len();
            let per_expert = count / runs;
            let scales_2 = source.upload(weight_scales)?;
            let kernel = format!("nvfp4_quantize_{}", source.suffix());
            let grid = Grid::Wave { work: per_expert / NVFP4_BLOCK, rows: runs };
            let mut args =
                [Arg::Out(&mut packed), Arg::Out(&mut block_scales), Arg::In(&scales_2), Arg::U64(per_expert as u64)];
            source.launch(&NVFP4, &kernel, grid, &mut args)?;
        }
        let (mut packed_dims, mut scale_dims) = (xs.dims().to_vec(), xs.dims().to_vec());
        if let (Some(p), Some(s)) = (packed_dims.last_mut(), scale_dims.last_mut()) {
            *p /= 2;
            *s /= NVFP4_BLOCK;
        }
        Ok(vec![source.tensor(packed, packed_dims), source.tensor(block_scales, scale_dims)])
    }

    /// `e2m1(code) · (e4m3(block scale) · weight_scale_2)`, as [`dequantize_nvfp4`](super::dequantize_nvfp4)
    /// computes it: the low nibble of each byte first.
    fn dequantize_on_device(&self, parts: &[Tensor], weight_scales_2: &[f32]) -> Result<Tensor> {
        let [packed, block_scales] = parts else {
            return Err(Error::internal(format!(
                "NVFP4 dequantizes codes and block scales, not {} tensors",
                parts.len()
            )));
        };
        let device = packed.device();
        let pairs: Vec<f32> = (0..=255u8)
            .flat_map(|byte| [E2M1_VALUES[usize::from(byte & 0x0F)], E2M1_VALUES[usize::from(byte >> 4)]])
            .collect();
        let pairs = Tensor::from_vec(pairs, (256, 2), device)?;
        let mut blocked = block_scales.dims().to_vec();
        blocked.push(NVFP4_BLOCK);
        let codes = pairs.index_select(&packed.flatten_all()?, 0)?.reshape(blocked.as_slice())?;
        let scales = e4m3_table(device)?.index_select(&block_scales.flatten_all()?, 0)?;
        let scales =
            scale_leading(&scales.reshape(block_scales.dims())?, weight_scales_2)?.unsqueeze(blocked.len() - 1)?;
        let mut dims = packed.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last *= 2;
        }
        Ok(codes.broadcast_mul(&scales)?.reshape(dims)?)
    }
}

/// The NVFP4 block amaxes of `xs [.., K]` (K a multiple of 16) on the GPU: F32 `[.., K/16]`, what the block
/// scales derive from.
pub fn block_amax(xs: &Tensor) -> Result<Tensor> {
    check_blocks(xs, "block_amax")?;
    crate::cuda::amax_per_block(xs)
}

fn check_blocks(xs: &Tensor, op: &str) -> Result<()> {
    match xs.dims().last() {
        Some(&k) if k % NVFP4_BLOCK == 0 => Ok(()),
        _ => Err(shape_error(
            xs,
            &format!("{op} quantizes blocks of {NVFP4_BLOCK} along the last (input) dimension, which must be a multiple of {NVFP4_BLOCK}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::checkpoint::Dtype;
    use crate::formats::{QuantFormat, WeightInput};

    #[test]
    fn dequantizing_by_tensor_ops_gives_the_values_of_dequantize() {
        // Blocks of very different magnitudes, so that the block scales differ.
        let values: Vec<f32> = (0..3 * 64)
            .map(|i| (((i * 37) % 101) as f32 * 0.07 - 3.4) * if (i / 16) % 3 == 0 { 0.01 } else { 1.0 })
            .collect();
        let weight = WeightInput::new("w", Dtype::BF16, &[3, 64], &values).unwrap();
        let quantized = Nvfp4.quantize(&weight, 3.6).unwrap();
        let (_, expected) = Nvfp4.dequantize("w", &quantized.views()).unwrap();
        let part = |i: usize, shape: (usize, usize)| {
            Tensor::from_vec(quantized.tensors[i].data.clone(), shape, &Device::Cpu).unwrap()
        };
        let parts = [part(0, (3, 32)), part(1, (3, 4))];
        let restored = Nvfp4.dequantize_on_device(&parts, &[Nvfp4.weight_scale("w", 3.6).unwrap()]).unwrap();
        assert_eq!(restored.dims(), [3, 64]);
        let restored = restored.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(
            restored.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            expected.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }
}
