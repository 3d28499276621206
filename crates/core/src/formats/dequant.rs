//! Dequantization: the f32 values a ModelOpt-format quantized weight stands for, so that an exported
//! checkpoint can be run (and compared with its original) by the same f32 forward.
//!
//! - FP8 (SPEC §4.1): `W = e4m3(weight) · weight_scale`, weight F8_E4M3 `[N, K]`, weight_scale F32 0-d (a
//!   per-row `[N]` / `[N, 1]` scale is accepted too).
//! - NVFP4 (SPEC §4.2): `W = e2m1(code) · (e4m3(weight_scale) · weight_scale_2)`, weight U8 `[N, K/2]` (two codes
//!   per byte, the even element in the low nibble), weight_scale F8_E4M3 `[N, K/16]`, weight_scale_2 F32 0-d.
//!
//! The block scale is formed as the f32 product `e4m3(weight_scale) · weight_scale_2` first, the divisor the
//! quantizer used, so a value that was exactly on the scaled grid comes back exactly.
//!
//! [`stored_quantization`] recognises these tensors in a checkpoint by their siblings' names and dtypes.

use super::e4m3::e4m3_to_f32;
use super::nvfp4::NVFP4_BLOCK;
use super::QuantizedWeight;
use crate::checkpoint::{Checkpoint, Dtype, TensorView};
use crate::error::{Error, Result};

/// The values of every E2M1 code (bit 3 is the sign), for decoding by table.
const E2M1_VALUES: [f32; 16] = {
    let grid = super::e2m1::E2M1_GRID;
    let mut values = [0f32; 16];
    let mut i = 0;
    while i < 8 {
        values[i] = grid[i];
        values[i + 8] = -grid[i];
        i += 1;
    }
    values
};

/// FP8 weight `[N, K]` (E4M3 bytes) times its scale: one per tensor (`scales.len() == 1`) or one per row
/// (`scales.len() == N`). Returns `N·K` f32 values, row major.
pub fn dequantize_fp8(name: &str, shape: [usize; 2], codes: &[u8], scales: &[f32]) -> Result<Vec<f32>> {
    let [rows, cols] = shape;
    if rows.checked_mul(cols) != Some(codes.len()) {
        return Err(shape_error(name, &shape, format!("{} FP8 bytes were given for this shape", codes.len())));
    }
    match scales.len() {
        1 => {
            let scale = scales[0];
            Ok(codes.iter().map(|&b| e4m3_to_f32(b) * scale).collect())
        }
        n if n == rows => {
            let mut values = Vec::with_capacity(codes.len());
            for (row, &scale) in codes.chunks_exact(cols.max(1)).zip(scales) {
                values.extend(row.iter().map(|&b| e4m3_to_f32(b) * scale));
            }
            Ok(values)
        }
        n => Err(shape_error(
            name,
            &shape,
            format!("an FP8 weight needs one weight_scale per tensor or one per row ({rows}), got {n}"),
        )),
    }
}

/// NVFP4 weight: packed codes `[N, K/2]`, E4M3 block scales `[N, K/16]` and the per-tensor `scale_2`.
/// `packed_shape` is the stored `[N, K/2]`; returns the logical `[N, K]` and `N·K` f32 values, row major.
pub fn dequantize_nvfp4(
    name: &str,
    packed_shape: [usize; 2],
    packed: &[u8],
    block_scales: &[u8],
    scale_2: f32,
) -> Result<([usize; 2], Vec<f32>)> {
    let [rows, half_cols] = packed_shape;
    let cols = half_cols * 2;
    if rows.checked_mul(half_cols) != Some(packed.len()) {
        return Err(shape_error(
            name,
            &packed_shape,
            format!("{} packed bytes were given for this shape", packed.len()),
        ));
    }
    if cols % NVFP4_BLOCK != 0 {
        return Err(shape_error(
            name,
            &packed_shape,
            format!("an NVFP4 weight holds K = {cols} values per row, not a multiple of the block size {NVFP4_BLOCK}"),
        ));
    }
    if block_scales.len() != rows * (cols / NVFP4_BLOCK) {
        return Err(shape_error(
            name,
            &packed_shape,
            format!(
                "its weight_scale holds {} block scales; [{rows}, {}] were expected for K = {cols}",
                block_scales.len(),
                cols / NVFP4_BLOCK
            ),
        ));
    }
    let mut values = vec![0f32; rows * cols];
    let bytes_per_block = NVFP4_BLOCK / 2;
    let blocks = values.chunks_exact_mut(NVFP4_BLOCK).zip(packed.chunks_exact(bytes_per_block)).zip(block_scales);
    for ((out, bytes), &scale_byte) in blocks {
        let block_scale = e4m3_to_f32(scale_byte) * scale_2;
        for (pair, &byte) in out.chunks_exact_mut(2).zip(bytes) {
            pair[0] = E2M1_VALUES[usize::from(byte & 0x0F)] * block_scale;
            pair[1] = E2M1_VALUES[usize::from(byte >> 4)] * block_scale;
        }
    }
    Ok(([rows, cols], values))
}

/// The f32 values `[N, K]` (row major) of a weight the formats quantized, from its output tensors: NVFP4 when
/// a `weight_scale_2` is among them, FP8 when the weight is F8_E4M3. `shape` is the logical `[N, K]`.
pub fn dequantize(quantized: &QuantizedWeight, shape: [usize; 2]) -> Result<Vec<f32>> {
    let part = |suffix: &str| {
        quantized.get(suffix).ok_or_else(|| Error::internal(format!("a quantized weight without its {suffix} tensor")))
    };
    let weight = part("weight")?;
    let scale_value = |suffix: &str| -> Result<f32> {
        let tensor = part(suffix)?;
        let bytes: [u8; 4] = tensor
            .data
            .as_slice()
            .try_into()
            .map_err(|_| Error::internal(format!("{suffix} holds {} bytes, not one f32", tensor.data.len())))?;
        Ok(f32::from_le_bytes(bytes))
    };
    let values = if quantized.get("weight_scale_2").is_some() {
        let packed_shape = [shape[0], shape[1] / 2];
        let block_scales = &part("weight_scale")?.data;
        dequantize_nvfp4("weight", packed_shape, &weight.data, block_scales, scale_value("weight_scale_2")?)?.1
    } else if weight.dtype == Dtype::F8E4M3 {
        dequantize_fp8("weight", shape, &weight.data, &[scale_value("weight_scale")?])?
    } else {
        return Err(Error::internal(format!("cannot dequantize a {} weight without block scales", weight.dtype)));
    };
    if values.len() != shape[0] * shape[1] {
        return Err(shape_error("weight", &shape, format!("dequantized to {} values", values.len())));
    }
    Ok(values)
}

/// How a checkpoint stores one `<module>.weight`, as recognised from the tensors beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredQuantization {
    /// F8_E4M3 weight with `<module>.weight_scale`.
    Fp8 { weight_scale: String },
    /// U8 weight with an F8_E4M3 `<module>.weight_scale` and `<module>.weight_scale_2`.
    Nvfp4 { weight_scale: String, weight_scale_2: String },
}

/// Whether the tensor `name` is a ModelOpt-quantized weight of `checkpoint`, and which format. Anything else
/// (no `.weight` suffix, no scale beside it, other dtypes) is `None`: the tensor is read as stored.
pub fn stored_quantization(checkpoint: &Checkpoint, name: &str) -> Result<Option<StoredQuantization>> {
    let Some(module) = name.strip_suffix(".weight") else { return Ok(None) };
    let weight_scale = format!("{module}.weight_scale");
    if !checkpoint.contains(&weight_scale) {
        return Ok(None);
    }
    let weight_dtype = checkpoint.info(name)?.dtype;
    let scale_dtype = checkpoint.info(&weight_scale)?.dtype;
    let weight_scale_2 = format!("{module}.weight_scale_2");
    Ok(match weight_dtype {
        Dtype::F8E4M3 => Some(StoredQuantization::Fp8 { weight_scale }),
        Dtype::U8 if scale_dtype == Dtype::F8E4M3 && checkpoint.contains(&weight_scale_2) => {
            Some(StoredQuantization::Nvfp4 { weight_scale, weight_scale_2 })
        }
        _ => None,
    })
}

/// Reads and dequantizes the weight `name` when it is stored quantized: its logical shape `[N, K]` and values.
/// `None` when the tensor is not a quantized weight (see [`stored_quantization`]).
pub fn dequantize_stored(checkpoint: &Checkpoint, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
    let Some(kind) = stored_quantization(checkpoint, name)? else { return Ok(None) };
    let weight = checkpoint.read(name)?;
    let weight = weight.view();
    let shape = matrix_shape(&weight)?;
    match kind {
        StoredQuantization::Fp8 { weight_scale } => {
            let scale = checkpoint.read(&weight_scale)?;
            let scale = scale.view();
            if !scale.dtype.is_float() {
                return Err(shape_error(
                    &weight_scale,
                    scale.shape,
                    format!("the scale of an FP8 weight must be floating point, not {}", scale.dtype),
                ));
            }
            let values = dequantize_fp8(name, shape, weight.data, &scale.to_f32())?;
            Ok(Some((shape.to_vec(), values)))
        }
        StoredQuantization::Nvfp4 { weight_scale, weight_scale_2 } => {
            let block_scales = checkpoint.read(&weight_scale)?;
            let block_scales = block_scales.view();
            let expected = [shape[0], shape[1] * 2 / NVFP4_BLOCK];
            if block_scales.shape != expected {
                return Err(shape_error(
                    &weight_scale,
                    block_scales.shape,
                    format!("expected {expected:?} for {name}"),
                ));
            }
            let scale_2 = scalar(&checkpoint.read(&weight_scale_2)?.view())?;
            let (logical, values) = dequantize_nvfp4(name, shape, weight.data, block_scales.data, scale_2)?;
            Ok(Some((logical.to_vec(), values)))
        }
    }
}

fn matrix_shape(view: &TensorView) -> Result<[usize; 2]> {
    match *view.shape {
        [rows, cols] => Ok([rows, cols]),
        _ => {
            Err(shape_error(view.name, view.shape, "a quantized weight must be 2-D [out_features, in_features]".into()))
        }
    }
}

/// The value of a one-element float tensor (0-d or `[1]`).
fn scalar(view: &TensorView) -> Result<f32> {
    match view.to_f32().as_slice() {
        [value] if view.dtype.is_float() => Ok(*value),
        _ => Err(shape_error(
            view.name,
            view.shape,
            format!("expected one floating-point value, found {} {}", view.numel(), view.dtype),
        )),
    }
}

fn shape_error(name: &str, shape: &[usize], message: String) -> Error {
    Error::ShapeInvalid { tensor: name.to_string(), shape: shape.to_vec(), message }
}

#[cfg(test)]
mod tests {
    use super::super::e2m1::{e2m1_to_f32, unpack_pair, E2M1_GRID};
    use super::super::e4m3::e4m3_to_f32;
    use super::super::{weight_amax, Fp8, Nvfp4, QuantFormat, WeightInput};
    use super::*;

    /// The obviously correct NVFP4 decoder the table-driven one is tested against: element by element with
    /// explicit (row, column) indexing.
    fn dequantize_nvfp4_reference(
        packed_shape: [usize; 2],
        packed: &[u8],
        block_scales: &[u8],
        scale_2: f32,
    ) -> Vec<f32> {
        let [rows, half_cols] = packed_shape;
        let cols = half_cols * 2;
        let mut values = Vec::with_capacity(rows * cols);
        for row in 0..rows {
            for col in 0..cols {
                let (even, odd) = unpack_pair(packed[row * half_cols + col / 2]);
                let code = if col % 2 == 0 { even } else { odd };
                let block_scale = e4m3_to_f32(block_scales[row * (cols / NVFP4_BLOCK) + col / NVFP4_BLOCK]) * scale_2;
                values.push(e2m1_to_f32(code) * block_scale);
            }
        }
        values
    }

    fn random_values(count: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..count)
            .map(|i| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let unit = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                unit * 10f32.powi(((i / 16) % 4) as i32 - 3)
            })
            .collect()
    }

    fn scalar_of(q: &QuantizedWeight, suffix: &str) -> f32 {
        f32::from_le_bytes(q.get(suffix).unwrap().data.clone().try_into().unwrap())
    }

    fn fp8_round_trip(values: &[f32], shape: [usize; 2], amax: f32) -> Vec<f32> {
        let q = Fp8::default().quantize(&WeightInput::new("w", Dtype::F32, &shape, values).unwrap(), amax).unwrap();
        dequantize_fp8("w", shape, &q.get("weight").unwrap().data, &[scalar_of(&q, "weight_scale")]).unwrap()
    }

    fn nvfp4_round_trip(values: &[f32], shape: [usize; 2], amax: f32) -> Vec<f32> {
        let q = Nvfp4.quantize(&WeightInput::new("w", Dtype::F32, &shape, values).unwrap(), amax).unwrap();
        let weight = q.get("weight").unwrap();
        let packed_shape = [weight.shape[0], weight.shape[1]];
        let (logical, back) = dequantize_nvfp4(
            "w",
            packed_shape,
            &weight.data,
            &q.get("weight_scale").unwrap().data,
            scalar_of(&q, "weight_scale_2"),
        )
        .unwrap();
        assert_eq!(logical, shape);
        back
    }

    #[test]
    fn fp8_values_on_the_grid_come_back_exactly() {
        // amax 448 makes the scale 1, so every E4M3 value is its own code.
        let values: Vec<f32> = (0u8..=0x7E).flat_map(|b| [e4m3_to_f32(b), -e4m3_to_f32(b)]).collect();
        let shape = [2, values.len() / 2];
        assert_eq!(fp8_round_trip(&values, shape, 448.0), values);
        // A power-of-two scale keeps them exact too.
        let scaled: Vec<f32> = values.iter().map(|v| v * 0.125).collect();
        assert_eq!(fp8_round_trip(&scaled, shape, 56.0), scaled);
    }

    #[test]
    fn fp8_round_trip_is_within_half_an_ulp() {
        let values = random_values(32 * 48, 3);
        let amax = weight_amax(&values);
        let scale = amax / 448.0;
        for (&v, &back) in values.iter().zip(&fp8_round_trip(&values, [32, 48], amax)) {
            assert!((back - v).abs() <= v.abs() / 16.0 + scale * 2f32.powi(-10), "{v} → {back}");
        }
    }

    #[test]
    fn fp8_per_row_scales() {
        let codes = [0x38u8, 0xB8, 0x40, 0x30];
        assert_eq!(dequantize_fp8("w", [2, 2], &codes, &[2.0, 0.5]).unwrap(), [2.0, -2.0, 1.0, 0.25]);
        let err = dequantize_fp8("w", [2, 2], &codes, &[1.0, 1.0, 1.0]).unwrap_err();
        assert_eq!(err.code(), "E_TENSOR_SHAPE");
        assert_eq!(dequantize_fp8("w", [3, 2], &codes, &[1.0]).unwrap_err().code(), "E_TENSOR_SHAPE");
    }

    #[test]
    fn nvfp4_values_on_the_grid_come_back_exactly() {
        // amax 2688 makes weight_scale_2 1; a block whose max is 6 gets block scale 1.
        let block: Vec<f32> = E2M1_GRID.iter().flat_map(|&g| [g, -g]).collect();
        let mut values = block.clone();
        // A second row scaled by 2^-3: block max 0.75, block scale e4m3(0.125) exact.
        values.extend(block.iter().map(|v| v / 8.0));
        assert_eq!(nvfp4_round_trip(&values, [2, 16], 2688.0), values);
        // weight_scale_2 = 2^-4 (amax 168) and block scales of 1 and 2^-3 relative to it.
        let small: Vec<f32> = values.iter().map(|v| v / 16.0).collect();
        assert_eq!(nvfp4_round_trip(&small, [2, 16], 168.0), small);
    }

    #[test]
    fn nvfp4_round_trip_is_close_and_on_the_scaled_grid() {
        let values = random_values(16 * 64, 5);
        let amax = weight_amax(&values);
        let back = nvfp4_round_trip(&values, [16, 64], amax);
        let (mut error, mut energy) = (0f64, 0f64);
        for (block, back_block) in values.chunks_exact(16).zip(back.chunks_exact(16)) {
            let block_amax = weight_amax(block);
            for (&v, &b) in block.iter().zip(back_block) {
                // The widest grid gap is 2 of 6 (a third of the block amax), plus the E4M3 block-scale rounding.
                assert!((b - v).abs() <= block_amax / 6.0 * 1.07 + 1e-12, "{v} → {b}");
                error += f64::from(b - v).powi(2);
                energy += f64::from(v).powi(2);
            }
        }
        assert!(error / energy < 0.02, "relative MSE {}", error / energy);
    }

    #[test]
    fn nvfp4_matches_the_reference_decoder() {
        let values = random_values(8 * 48, 7);
        let q = Nvfp4
            .quantize(&WeightInput::new("w", Dtype::F32, &[8, 48], &values).unwrap(), weight_amax(&values))
            .unwrap();
        let (packed, scales) = (&q.get("weight").unwrap().data, &q.get("weight_scale").unwrap().data);
        let scale_2 = scalar_of(&q, "weight_scale_2");
        let (_, fast) = dequantize_nvfp4("w", [8, 24], packed, scales, scale_2).unwrap();
        assert_eq!(fast, dequantize_nvfp4_reference([8, 24], packed, scales, scale_2));
    }

    #[test]
    fn nvfp4_decodes_the_low_nibble_first() {
        // Codes 0x7 (6) then 0x9 (-0.5), block scale 0x38 (1) × 0.5.
        let mut packed = vec![0u8; 8];
        packed[0] = 0x97;
        let (_, values) = dequantize_nvfp4("w", [1, 8], &packed, &[0x38], 0.5).unwrap();
        assert_eq!(&values[..3], [3.0, -0.25, 0.0]);
    }

    #[test]
    fn nvfp4_checks_its_shapes() {
        let err = dequantize_nvfp4("layer.w", [2, 8], &[0; 16], &[0x38; 3], 1.0).unwrap_err();
        assert_eq!(err.code(), "E_TENSOR_SHAPE");
        assert!(err.to_string().contains("layer.w"), "{err}");
        assert!(dequantize_nvfp4("w", [2, 4], &[0; 8], &[0x38; 2], 1.0).is_err(), "K = 8 is not a multiple of 16");
        assert!(dequantize_nvfp4("w", [2, 8], &[0; 15], &[0x38; 2], 1.0).is_err());
    }
}
