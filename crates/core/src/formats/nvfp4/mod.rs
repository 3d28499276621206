//! NVFP4 (`quant_algo: "NVFP4"`, group size 16, SPEC §4.2), as ModelOpt 0.47's unified HF export writes it
//! (`NVFP4QTensor.get_weights_scaling_factor` then `NVFP4QTensor.quantize`):
//!
//! - `weight_scale_2 = amax / (6·448)`, F32 0-d;
//! - per block of 16 along K: `s = block_amax / f32(6·weight_scale_2)`, `s = 1` where `s == 0`,
//!   `weight_scale = e4m3(clamp(s, 2^-9, 448))`, F8_E4M3 `[N, K/16]`;
//! - `y = W / f32(f32(weight_scale) · weight_scale_2)` in f32 whatever the weight's dtype (torch promotes a
//!   bf16 weight divided by an f32 block tensor to f32), then E2M1 codes packed two per byte, U8 `[N, K/2]`.

mod compressed_tensors;
mod cuda;
mod variant;

pub use compressed_tensors::Nvfp4CompressedTensors;
pub use cuda::block_amax;
pub use variant::Nvfp4Variant;

use super::{
    sanitize_input_amax, sanitize_weight_amax, shape_error, FormatName, OutputTensor, QuantFormat, QuantizedWeight,
    StackedRule, WeightInput,
};
use crate::checkpoint::{Dtype, TensorView};
use crate::error::{Error, Result};
use crate::numerics::e2m1::{e2m1_code, pack_pair, E2M1_GRID, E2M1_MAX};
use crate::numerics::e4m3::{e4m3_to_f32, f32_to_e4m3, E4M3_MAX, E4M3_MIN_SUBNORMAL};

/// Elements per block scale.
pub const NVFP4_BLOCK: usize = 16;

/// FP4 (E2M1) weights with an E4M3 scale per 16 elements and an f32 scale per tensor.
#[derive(Debug, Clone, Copy, Default)]
pub struct Nvfp4;

impl QuantFormat for Nvfp4 {
    fn name(&self) -> FormatName {
        FormatName::Nvfp4
    }

    fn quant_algo(&self) -> &'static str {
        "NVFP4"
    }

    fn group_size(&self) -> Option<usize> {
        Some(NVFP4_BLOCK)
    }

    fn bits_per_weight(&self) -> f64 {
        4.0 + 8.0 / NVFP4_BLOCK as f64
    }

    /// `amax / (6·448)` after ModelOpt's `_sanitize_export_amax` (0 or NaN → 6). Where ModelOpt refuses because
    /// the quotient is not positive (an amax below ~4e-42), the smallest positive f32, so the scale stays usable.
    fn input_scale(&self, amax: f32) -> f32 {
        let scale = sanitize_input_amax(amax, E2M1_MAX) / (E2M1_MAX * E4M3_MAX);
        scale.max(f32::from_bits(1))
    }

    /// `weight_scale_2 = amax / (6·448)`, with a zero amax read as 6 and one below the smallest normal f32
    /// raised to it.
    fn weight_scale(&self, name: &str, amax: f32) -> Result<f32> {
        Ok(sanitize_weight_amax(name, amax, E2M1_MAX)? / (E2M1_MAX * E4M3_MAX))
    }

    fn quantize(&self, weight: &WeightInput, amax: f32) -> Result<QuantizedWeight> {
        weight.validate()?;
        let [rows, cols] = weight.shape;
        if cols % NVFP4_BLOCK != 0 {
            return Err(Error::ShapeInvalid {
                tensor: weight.name.to_string(),
                shape: weight.shape.to_vec(),
                message: format!(
                    "NVFP4 quantizes blocks of {NVFP4_BLOCK} along the input dimension, and K = {cols} is not a \
                     multiple of {NVFP4_BLOCK}; leave this tensor unquantized"
                ),
            });
        }
        let scale_2 = self.weight_scale(weight.name, amax)?;
        let mut scales = crate::memory::try_zeroed(weight.values.len() / NVFP4_BLOCK, || {
            format!("the NVFP4 scales of {}", weight.name)
        })?;
        let mut packed =
            crate::memory::try_zeroed(weight.values.len() / 2, || format!("the NVFP4 codes of {}", weight.name))?;
        quantize_blocks(weight.values, scale_2, &mut scales, &mut packed);
        Ok(nvfp4_weight([rows, cols], packed, scales, OutputTensor::scalar_f32("weight_scale_2", scale_2)))
    }

    fn output_layout(&self, [rows, cols]: [usize; 2]) -> Vec<(&'static str, Dtype, Vec<usize>)> {
        vec![
            ("weight", Dtype::U8, vec![rows, cols / 2]),
            ("weight_scale", Dtype::F8E4M3, vec![rows, cols / NVFP4_BLOCK]),
            ("weight_scale_2", Dtype::F32, Vec::new()),
        ]
    }

    /// ModelOpt's one weight quantizer over the whole stack, blocks along each expert's input axis.
    fn stacked_rule(&self) -> Option<StackedRule> {
        Some(StackedRule::Transposed)
    }

    /// A U8 weight with an F8_E4M3 `weight_scale` and a `weight_scale_2` beside it.
    fn recognizes(&self, dtypes: &[Option<Dtype>]) -> bool {
        matches!(dtypes, [Some(Dtype::U8), Some(Dtype::F8E4M3), Some(_)])
    }

    fn dequantize(&self, name: &str, parts: &[TensorView<'_>]) -> Result<([usize; 2], Vec<f32>)> {
        let [weight, block_scales, scale_2] = parts else {
            return Err(Error::internal(format!("{name}: NVFP4 dequantizes a weight and its two scales")));
        };
        let packed_shape = super::matrix_shape(weight.name, weight.shape)?;
        let expected = [packed_shape[0], packed_shape[1] * 2 / NVFP4_BLOCK];
        if block_scales.shape != expected {
            return Err(shape_error(
                block_scales.name,
                block_scales.shape,
                format!("expected {expected:?} for {name}"),
            ));
        }
        let scale_2 = match scale_2.to_f32().as_slice() {
            [value] if scale_2.dtype.is_float() => *value,
            _ => {
                return Err(shape_error(
                    scale_2.name,
                    scale_2.shape,
                    format!("expected one floating-point value, found {} {}", scale_2.numel(), scale_2.dtype),
                ))
            }
        };
        dequantize_nvfp4(name, packed_shape, weight.data, block_scales.data, scale_2)
    }

    fn on_device(&self) -> Option<&dyn super::DeviceQuantize> {
        Some(self)
    }
}

/// An NVFP4 weight `[N, K]`: its packed codes (`weight` U8 `[N, K/2]`), its block scales (`weight_scale` F8_E4M3
/// `[N, K/16]`) and its per-tensor scale, in that order.
pub(super) fn nvfp4_weight(
    [rows, cols]: [usize; 2],
    packed: Vec<u8>,
    scales: Vec<u8>,
    global: OutputTensor,
) -> QuantizedWeight {
    QuantizedWeight {
        tensors: vec![
            OutputTensor { suffix: "weight", dtype: Dtype::U8, shape: vec![rows, cols / 2], data: packed },
            OutputTensor {
                suffix: "weight_scale",
                dtype: Dtype::F8E4M3,
                shape: vec![rows, cols / NVFP4_BLOCK],
                data: scales,
            },
            global,
        ],
    }
}

/// The values of every E2M1 code (bit 3 is the sign), for decoding by table.
const E2M1_VALUES: [f32; 16] = {
    let grid = E2M1_GRID;
    let mut values = [0f32; 16];
    let mut i = 0;
    while i < 8 {
        values[i] = grid[i];
        values[i + 8] = -grid[i];
        i += 1;
    }
    values
};

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

/// Quantizes consecutive blocks of 16 values (K is a multiple of 16, so no block straddles two rows):
/// one scale byte and 8 packed bytes per block.
fn quantize_blocks(values: &[f32], scale_2: f32, scales: &mut [u8], packed: &mut [u8]) {
    // ModelOpt computes `E2M1_MAX * weights_scaling_factor_2` as an f32 product first.
    let block_divisor = E2M1_MAX * scale_2;
    let blocks = values.chunks_exact(NVFP4_BLOCK).zip(scales.iter_mut()).zip(packed.chunks_exact_mut(NVFP4_BLOCK / 2));
    for ((block, scale_byte), out) in blocks {
        let block_amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let mut s = block_amax / block_divisor;
        if s == 0.0 {
            s = 1.0;
        }
        *scale_byte = f32_to_e4m3(s.clamp(E4M3_MIN_SUBNORMAL, E4M3_MAX));
        let divisor = e4m3_to_f32(*scale_byte) * scale_2;
        // Codes first, then packing: two simple fixed-length loops the compiler vectorizes.
        let mut codes = [0u8; NVFP4_BLOCK];
        for (code, &value) in codes.iter_mut().zip(block) {
            *code = e2m1_code(value / divisor);
        }
        for (byte, pair) in out.iter_mut().zip(codes.chunks_exact(2)) {
            *byte = pack_pair(pair[0], pair[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numerics::e2m1::{e2m1_code_reference, e2m1_to_f32, pack_codes, unpack_pair};
    use crate::numerics::e4m3::{f32_to_e4m3_reference, round_to_bf16};
    use crate::numerics::weight_amax;

    /// The obviously correct path: element by element with explicit (row, block) indexing and the search-based
    /// encoders. Returns (packed weight, block scales, weight_scale_2).
    fn quantize_reference(weight: &WeightInput, amax: f32) -> (Vec<u8>, Vec<u8>, f32) {
        let [rows, cols] = weight.shape;
        let amax = if amax == 0.0 { 6.0 } else { amax.max(f32::MIN_POSITIVE) };
        let scale_2 = amax / 2688.0;
        let mut scales = Vec::new();
        let mut codes = Vec::new();
        for row in 0..rows {
            for block in 0..cols / 16 {
                let start = row * cols + block * 16;
                let values = &weight.values[start..start + 16];
                let block_amax = values.iter().map(|v| v.abs()).fold(0.0, f32::max);
                let s = block_amax / (6.0 * scale_2);
                let s = if s == 0.0 { 1.0 } else { s };
                let scale_byte = f32_to_e4m3_reference(s.clamp(2f32.powi(-9), 448.0));
                scales.push(scale_byte);
                let divisor = e4m3_to_f32(scale_byte) * scale_2;
                codes.extend(values.iter().map(|v| e2m1_code_reference(v / divisor)));
            }
        }
        let mut packed = vec![0u8; codes.len() / 2];
        pack_codes(&codes, &mut packed);
        (packed, scales, scale_2)
    }

    fn parts(q: &QuantizedWeight) -> (Vec<u8>, Vec<u8>, f32) {
        let scale_2 = q.get("weight_scale_2").unwrap();
        assert_eq!((scale_2.dtype, scale_2.shape.len()), (Dtype::F32, 0));
        let scale_2 = f32::from_le_bytes(scale_2.data.clone().try_into().unwrap());
        (q.get("weight").unwrap().data.clone(), q.get("weight_scale").unwrap().data.clone(), scale_2)
    }

    fn random_values(count: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..count)
            .map(|i| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                let unit = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                // Block magnitudes over several decades, so some block scales are subnormal E4M3.
                unit * 10f32.powi(((i / 16) % 6) as i32 - 4)
            })
            .collect()
    }

    #[test]
    fn writes_the_tensors_of_spec_section_5() {
        let values = vec![0.25f32; 3 * 32];
        let weight = WeightInput::new("w", Dtype::BF16, &[3, 32], &values).unwrap();
        let q = Nvfp4.quantize(&weight, 0.25).unwrap();
        let layout: Vec<_> = q.tensors.iter().map(|t| (t.suffix, t.dtype, t.shape.clone(), t.data.len())).collect();
        assert_eq!(
            layout,
            [
                ("weight", Dtype::U8, vec![3, 16], 48),
                ("weight_scale", Dtype::F8E4M3, vec![3, 2], 6),
                ("weight_scale_2", Dtype::F32, vec![], 4),
            ]
        );
    }

    #[test]
    fn k_not_a_multiple_of_16_names_the_tensor_and_shape() {
        let values = vec![1.0f32; 2 * 24];
        let weight = WeightInput::new("model.layers.0.mlp.down_proj.weight", Dtype::F32, &[2, 24], &values).unwrap();
        let err = Nvfp4.quantize(&weight, 1.0).unwrap_err();
        assert_eq!(err.code(), "E_TENSOR_SHAPE");
        let message = err.to_string();
        assert!(message.contains("model.layers.0.mlp.down_proj.weight") && message.contains("[2, 24]"), "{message}");
    }

    #[test]
    fn packs_the_even_element_in_the_low_nibble() {
        // amax 2688 makes weight_scale_2 1; the block's max 6 makes its scale 1 (0x38), so codes index W directly.
        let values = [6.0f32, 0.5, -1.0, 1.5, 2.0, -3.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -0.0, -6.0];
        let weight = WeightInput::new("w", Dtype::F32, &[1, 16], &values).unwrap();
        let (packed, scales, scale_2) = parts(&Nvfp4.quantize(&weight, 2688.0).unwrap());
        assert_eq!((scales.as_slice(), scale_2), (&[0x38u8][..], 1.0));
        assert_eq!(packed, [0x17, 0x3A, 0xD4, 0x06, 0x00, 0x00, 0x00, 0xF0]);
        assert_eq!(unpack_pair(packed[0]), (0x7, 0x1));
    }

    #[test]
    fn ties_on_the_grid_go_to_even() {
        let values =
            [6.0f32, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25, -0.75, -1.25, -1.75, -2.5, -3.5, -5.0, -0.1];
        let weight = WeightInput::new("w", Dtype::F32, &[1, 16], &values).unwrap();
        let (packed, _, _) = parts(&Nvfp4.quantize(&weight, 2688.0).unwrap());
        let codes: Vec<u8> = packed.iter().flat_map(|&b| [b & 0xF, b >> 4]).collect();
        assert_eq!(codes, [7, 0, 2, 2, 4, 4, 6, 6, 8, 10, 10, 12, 12, 14, 14, 8]);
    }

    #[test]
    fn all_zero_block_gets_scale_one() {
        let mut values = vec![0.0f32; 48];
        values[3] = 1.5;
        values[40] = -0.75;
        values[20] = -0.0;
        let weight = WeightInput::new("w", Dtype::F32, &[1, 48], &values).unwrap();
        let (packed, scales, _) = parts(&Nvfp4.quantize(&weight, 1.5).unwrap());
        assert_eq!(scales[1], 0x38, "block_amax 0 → s = 1 → E4M3 1.0");
        assert!(packed[8..16].iter().all(|&b| b == 0));
        assert_ne!(scales[0], 0x38);
    }

    #[test]
    fn all_zero_weight_gets_a_usable_scale() {
        let values = [0.0f32, -0.0].repeat(16);
        let weight = WeightInput::new("w", Dtype::BF16, &[2, 16], &values).unwrap();
        let (packed, scales, scale_2) = parts(&Nvfp4.quantize(&weight, 0.0).unwrap());
        assert_eq!(scale_2, 6.0 / 2688.0);
        assert_eq!(scales, [0x38, 0x38]);
        assert!(packed.iter().all(|&b| b == 0));
    }

    #[test]
    fn block_scales_reach_the_subnormal_range_and_clamp() {
        // weight_scale_2 = 1, so s = block_amax / 6.
        let mut values = vec![0.0f32; 64];
        values[0] = 6.0 * 2f32.powi(-8); // s = 2^-8: subnormal E4M3, code 2
        values[16] = 6.0 * 3.0 * 2f32.powi(-10); // s = 1.5·2^-9: tie between codes 1 and 2 → 2
        values[32] = 6.0 * 2f32.powi(-12); // s = 2^-12: clamped up to 2^-9, code 1
        values[48] = 6.0 * 1000.0; // s = 1000: clamped down to 448
        let weight = WeightInput::new("w", Dtype::F32, &[1, 64], &values).unwrap();
        let (packed, scales, _) = parts(&Nvfp4.quantize(&weight, 2688.0).unwrap());
        assert_eq!(scales, [0x02, 0x02, 0x01, 0x7E]);
        // 6·2^-12 / 2^-9 = 0.75 → tie → 1.0 (code 2); 6000 / 448 = 13.4 → saturates at code 7.
        assert_eq!(packed[16] & 0xF, 2);
        assert_eq!(packed[24] & 0xF, 7);
    }

    #[test]
    fn matches_the_reference_path() {
        for (seed, bf16) in [(11, false), (12, true)] {
            let mut values = random_values(32 * 64, seed);
            if bf16 {
                values.iter_mut().for_each(|v| *v = round_to_bf16(*v));
            }
            values[100..116].fill(0.0);
            let dtype = if bf16 { Dtype::BF16 } else { Dtype::F32 };
            let weight = WeightInput::new("w", dtype, &[32, 64], &values).unwrap();
            let amax = weight_amax(&values);
            for amax in [amax, amax * 1.37, amax * 0.3, amax * 1e-4, 0.0] {
                let got = parts(&Nvfp4.quantize(&weight, amax).unwrap());
                assert_eq!(got, quantize_reference(&weight, amax), "amax {amax}");
            }
        }
    }

    #[test]
    fn dequantized_values_are_close() {
        let values = random_values(16 * 32, 21);
        let weight = WeightInput::new("w", Dtype::F32, &[16, 32], &values).unwrap();
        let (packed, scales, scale_2) = parts(&Nvfp4.quantize(&weight, weight_amax(&values)).unwrap());
        for (i, &v) in values.iter().enumerate() {
            let code = if i % 2 == 0 { packed[i / 2] & 0xF } else { packed[i / 2] >> 4 };
            let block_scale = e4m3_to_f32(scales[i / 16]) * scale_2;
            let back = e2m1_to_f32(code) * block_scale;
            // The widest grid gap is 2 (between 4 and 6), and the E4M3 block scale adds up to 1/16 relative.
            assert!((back - v).abs() <= block_scale * 1.0 + v.abs() / 8.0, "{v} → {back}");
        }
    }

    #[test]
    fn input_scale_follows_modelopt() {
        assert_eq!(Nvfp4.input_scale(2688.0), 1.0);
        assert_eq!(Nvfp4.input_scale(0.0), 6.0 / 2688.0);
        assert_eq!(Nvfp4.input_scale(f32::NAN), 6.0 / 2688.0);
        assert_eq!(Nvfp4.input_scale(f32::INFINITY), f32::MAX / 2688.0);
        assert_eq!(Nvfp4.input_scale(1e-45), f32::from_bits(1));
        assert!(Nvfp4.input_scale(1e-40) > 0.0);
    }
}
