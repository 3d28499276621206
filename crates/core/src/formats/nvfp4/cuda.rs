//! NVFP4 quantization on the GPU (`nvfp4.cu`): the bytes [`Nvfp4::quantize`](super::Nvfp4) writes on the
//! CPU, for weights already on the device.

use candle_core::{DType, Tensor};

use super::{Nvfp4, NVFP4_BLOCK};
use crate::cuda::{address, check_scales, error_grid, kernel_module, shape_error, Arg, Grid, Module, Source};
use crate::error::{Error, Result};
use crate::formats::DeviceQuantize;

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

    /// Σ (e2m1(code) · e4m3(block scale) · weight_scale_2 − x)² and Σ x², as
    /// [`dequantize_nvfp4`](super::dequantize_nvfp4) restores the values.
    fn error_on_device(&self, xs: &Tensor, parts: &[Tensor], weight_scales_2: &[f32]) -> Result<Tensor> {
        let [packed, block_scales] = parts else {
            return Err(Error::internal(format!("NVFP4 measures codes and block scales, not {} tensors", parts.len())));
        };
        check_blocks(xs, "nvfp4_error")?;
        check_scales(xs, weight_scales_2, "nvfp4_error")?;
        let source = Source::new(xs, "nvfp4_error")?;
        let per_expert = xs.elem_count() / weight_scales_2.len().max(1);
        let (packed, block_scales) = (packed.contiguous()?, block_scales.contiguous()?);
        let scales_2 = source.upload(weight_scales_2)?;
        let (grid, blocks) = error_grid(per_expert / NVFP4_BLOCK, weight_scales_2.len())?;
        let mut partial = source.alloc(DType::F32, 2 * blocks)?;
        let kernel = format!("nvfp4_error_{}", source.suffix());
        let mut args = [
            Arg::U64(address(&packed)?),
            Arg::U64(address(&block_scales)?),
            Arg::In(&scales_2),
            Arg::U64(per_expert as u64),
            Arg::Out(&mut partial),
        ];
        source.launch(&NVFP4, &kernel, grid, &mut args)?;
        Ok(source.tensor(partial, (blocks, 2)).sum(0)?)
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
