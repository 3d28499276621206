//! A quantized weight as a checkpoint stores it (an export of ours or ModelOpt's): recognised by the tensors
//! beside `<module>.weight` (each format's `output_layout` suffixes and [`QuantFormat::recognizes`]), read and
//! dequantized through its format, so that an exported checkpoint can be run (and compared with its original)
//! by the same f32 forward. compressed-tensors' NVFP4 stores the codes as `<module>.weight_packed` beside
//! `weight_scale` and `weight_global_scale`; it is read for `<module>.weight` too (FP8 in that form keeps the name
//! `weight`, and its bf16 scales are read as FP8's). An AWQ weight's `pre_quant_scale` (the smoothing its input is
//! multiplied by) is applied to its columns.

use super::{format, FormatName, Nvfp4CompressedTensors, QuantFormat};
use crate::checkpoint::{Checkpoint, TensorData};
use crate::error::Result;

/// The format `name` is stored in when it is a quantized weight of `checkpoint`; `None` for anything else (no
/// `.weight` suffix, no scales beside it, other dtypes): the tensor is then read as stored.
pub fn stored_format(checkpoint: &Checkpoint, name: &str) -> Result<Option<Box<dyn QuantFormat>>> {
    let Some(module) = name.strip_suffix(".weight") else { return Ok(None) };
    if !checkpoint.contains(&format!("{module}.weight_scale")) {
        return Ok(None);
    }
    if packed_nvfp4(checkpoint, module) {
        return Ok(Some(Box::new(Nvfp4CompressedTensors { weight_only: false })));
    }
    for candidate in FormatName::ALL.map(|name| format(name, false)) {
        let mut infos = Vec::new();
        for (suffix, _, _) in candidate.output_layout([1, 1]) {
            let tensor = format!("{module}.{suffix}");
            infos.push(if checkpoint.contains(&tensor) { Some(checkpoint.info(&tensor)?) } else { None });
        }
        let dtypes: Vec<_> = infos.iter().map(|info| info.map(|i| i.dtype)).collect();
        let shapes: Vec<_> = infos.iter().map(|info| info.map(|i| i.shape.as_slice())).collect();
        if candidate.recognizes(&dtypes) && candidate.recognizes_shapes(&shapes) {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

/// Reads and dequantizes the weight `name` when it is stored quantized: its logical shape `[N, K]` and values.
/// `None` when the tensor is not a quantized weight (see [`stored_format`]).
pub fn dequantize_stored(checkpoint: &Checkpoint, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
    let Some(format) = stored_format(checkpoint, name)? else { return Ok(None) };
    let module = name.strip_suffix(".weight").unwrap_or(name);
    let packed = packed_nvfp4(checkpoint, module);
    let parts = format
        .output_layout([1, 1])
        .iter()
        .map(|&(suffix, _, _)| {
            let suffix = if packed && suffix == "weight" { "weight_packed" } else { suffix };
            checkpoint.read(&format!("{module}.{suffix}"))
        })
        .collect::<Result<Vec<TensorData>>>()?;
    let views: Vec<_> = parts.iter().map(TensorData::view).collect();
    let (shape, mut values) = format.dequantize(name, &views)?;
    // An AWQ weight multiplies inputs scaled by its `pre_quant_scale`: the same product as the weight's columns
    // scaled by it.
    let smoothing = format!("{module}.pre_quant_scale");
    if checkpoint.contains(&smoothing) {
        let scale = checkpoint.read(&smoothing)?.to_f32();
        if scale.len() != shape[1] {
            return Err(crate::error::Error::ShapeInvalid {
                tensor: smoothing,
                shape: vec![scale.len()],
                message: format!("one value per input channel of {name} {shape:?} expected"),
            });
        }
        for row in values.chunks_exact_mut(shape[1]) {
            row.iter_mut().zip(&scale).for_each(|(w, s)| *w *= s);
        }
    }
    Ok(Some((shape.to_vec(), values)))
}

/// Whether `module` is stored as compressed-tensors' NVFP4: `weight_packed` and `weight_global_scale`, no `weight`.
fn packed_nvfp4(checkpoint: &Checkpoint, module: &str) -> bool {
    !checkpoint.contains(&format!("{module}.weight"))
        && checkpoint.contains(&format!("{module}.weight_packed"))
        && checkpoint.contains(&format!("{module}.weight_global_scale"))
}

#[cfg(test)]
mod tests {
    use super::super::nvfp4::{dequantize_nvfp4, NVFP4_BLOCK};
    use super::super::{dequantize_fp8, Fp8, Nvfp4, QuantFormat, QuantizedWeight, WeightInput};
    use crate::checkpoint::Dtype;
    use crate::numerics::e2m1::{e2m1_to_f32, unpack_pair, E2M1_GRID};
    use crate::numerics::e4m3::e4m3_to_f32;
    use crate::numerics::weight_amax;

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
