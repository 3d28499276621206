//! Quantization formats: pure CPU math that turns one 2-D weight `[N, K]` (output rows, input columns) and its
//! per-tensor amax into the tensors ModelOpt's unified HF export writes for it (SPEC §4, §5), byte for byte.
//!
//! One trait, one file per format. Callers choose the amax (shared over gate/up or q/k/v, SPEC §4.3) and the
//! output names (`<module>.` + each tensor's suffix).

mod dequant;
pub mod e2m1;
pub mod e4m3;
mod fp8;
mod nvfp4;

pub use dequant::{
    dequantize, dequantize_fp8, dequantize_nvfp4, dequantize_stored, stored_quantization, StoredQuantization,
};
pub use fp8::Fp8;
pub use nvfp4::Nvfp4;

use crate::checkpoint::Dtype;
use crate::error::{Error, Result};

/// One weight to quantize: row-major values `[N, K]` converted to f32, and the dtype they were stored in
/// (FP8 divides in that dtype: a bf16 weight's `W / scale` is rounded to bf16 before the E4M3 cast).
#[derive(Debug, Clone, Copy)]
pub struct WeightInput<'a> {
    /// The tensor's name, for errors.
    pub name: &'a str,
    /// The dtype of the stored weight: F32, BF16 or F16 (every value must be exactly representable in it).
    pub source_dtype: Dtype,
    /// `[N, K]`.
    pub shape: [usize; 2],
    /// `N·K` values, row major.
    pub values: &'a [f32],
}

impl<'a> WeightInput<'a> {
    /// Checks that `shape` is 2-D and matches the number of values.
    pub fn new(name: &'a str, source_dtype: Dtype, shape: &[usize], values: &'a [f32]) -> Result<Self> {
        let [rows, cols] = matrix_shape(name, shape)?;
        if rows.checked_mul(cols) != Some(values.len()) {
            return Err(Error::ShapeInvalid {
                tensor: name.to_string(),
                shape: shape.to_vec(),
                message: format!("{} values were given for this shape", values.len()),
            });
        }
        Ok(WeightInput { name, source_dtype, shape: [rows, cols], values })
    }

    /// `N`, the output features.
    pub fn rows(&self) -> usize {
        self.shape[0]
    }

    /// `K`, the input features.
    pub fn cols(&self) -> usize {
        self.shape[1]
    }

    /// Errors unless the values fit the shape, the dtype is one the formats divide in, and every value is finite.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.shape[0].checked_mul(self.shape[1]) != Some(self.values.len()) {
            return Err(Error::ShapeInvalid {
                tensor: self.name.to_string(),
                shape: self.shape.to_vec(),
                message: format!("{} values were given for this shape", self.values.len()),
            });
        }
        if !matches!(self.source_dtype, Dtype::F32 | Dtype::BF16 | Dtype::F16) {
            return Err(Error::internal(format!(
                "tensor {}: cannot quantize a weight stored as {} (F32, BF16 or F16 expected)",
                self.name, self.source_dtype
            )));
        }
        if let Some(index) = first_non_finite(self.values) {
            return Err(Error::NonFinite {
                tensor: self.name.to_string(),
                index,
                context: ", which cannot be quantized".into(),
            });
        }
        Ok(())
    }
}

/// One output tensor of a quantized linear: `<module>.<suffix>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputTensor {
    /// `weight`, `weight_scale` or `weight_scale_2`.
    pub suffix: &'static str,
    pub dtype: Dtype,
    /// Empty for a 0-d scalar.
    pub shape: Vec<usize>,
    /// Little-endian bytes, row major.
    pub data: Vec<u8>,
}

impl OutputTensor {
    /// A 0-d f32 scalar.
    pub fn scalar_f32(suffix: &'static str, value: f32) -> Self {
        OutputTensor { suffix, dtype: Dtype::F32, shape: Vec::new(), data: value.to_le_bytes().to_vec() }
    }
}

/// The tensors that replace one linear's weight, in the order SPEC §5's table lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantizedWeight {
    pub tensors: Vec<OutputTensor>,
}

impl QuantizedWeight {
    /// The tensor with this suffix.
    pub fn get(&self, suffix: &str) -> Option<&OutputTensor> {
        self.tensors.iter().find(|t| t.suffix == suffix)
    }
}

/// The `[out_features, in_features]` of a weight `name` to quantize; `E_TENSOR_SHAPE` unless it is 2-D.
pub fn matrix_shape(name: &str, shape: &[usize]) -> Result<[usize; 2]> {
    match *shape {
        [rows, cols] => Ok([rows, cols]),
        _ => Err(Error::ShapeInvalid {
            tensor: name.to_string(),
            shape: shape.to_vec(),
            message: "a quantized weight must be 2-D [out_features, in_features]".into(),
        }),
    }
}

/// A weight quantization format. Optional abilities (calibration searches, GPU kernels) belong in other traits.
pub trait QuantFormat: Send + Sync {
    /// Short name used in options: `"fp8"`, `"nvfp4"`.
    fn name(&self) -> &'static str;
    /// `quant_algo` in hf_quant_config.json: `"FP8"`, `"NVFP4"`.
    fn quant_algo(&self) -> &'static str;
    /// Elements per block scale along K, for block formats.
    fn group_size(&self) -> Option<usize>;
    /// Stored bits per weight element, block scales included (0-d scalars not counted).
    fn bits_per_weight(&self) -> f64;
    /// The `input_scale` written for an activation amax (the max |x| calibration saw).
    fn input_scale(&self, amax: f32) -> f32;
    /// Quantizes one weight with the per-tensor weight amax to use (which may exceed the weight's own max).
    fn quantize(&self, weight: &WeightInput, amax: f32) -> Result<QuantizedWeight>;
    /// The suffix, dtype and shape of each tensor `quantize` returns for a weight `[N, K]`, in its order.
    fn output_layout(&self, shape: [usize; 2]) -> Vec<(&'static str, Dtype, Vec<usize>)>;
}

/// The format with this name (`"fp8"`, `"nvfp4"`; ASCII case ignored).
pub fn format_by_name(name: &str) -> Option<Box<dyn QuantFormat>> {
    format_for_device(name, false)
}

/// The format named `name` with the arithmetic torch uses on the device that runs the forward: on CUDA
/// (`torch_cuda`), FP8 divides bf16 / f16 weights by their dtype's rounding of the scale (see [`Fp8`]).
pub fn format_for_device(name: &str, torch_cuda: bool) -> Option<Box<dyn QuantFormat>> {
    match name.to_ascii_lowercase().as_str() {
        "fp8" => Some(Box::new(Fp8 { torch_cuda })),
        "nvfp4" => Some(Box::new(Nvfp4)),
        _ => None,
    }
}

/// max |v| over the values (0 for none; NaN values are skipped, callers reject them separately).
pub fn weight_amax(values: &[f32]) -> f32 {
    // Eight independent lanes let the compiler vectorize the reduction.
    let mut lanes = [0f32; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(v.abs());
        }
    }
    let tail = chunks.remainder().iter().fold(0f32, |m, v| m.max(v.abs()));
    lanes.iter().fold(tail, |m, &v| m.max(v))
}

/// Index of the first NaN or infinite value.
pub(crate) fn first_non_finite(values: &[f32]) -> Option<usize> {
    const CHUNK: usize = 1024;
    for (c, chunk) in values.chunks(CHUNK).enumerate() {
        // A branch-free pass over the chunk; the position is looked up only when something was found.
        let all_finite = chunk.iter().fold(true, |ok, v| ok & v.is_finite());
        if !all_finite {
            let within = chunk.iter().position(|v| !v.is_finite()).unwrap_or(0);
            return Some(c * CHUNK + within);
        }
    }
    None
}

/// The weight amax a format divides by. NaN, infinite or negative amaxes are the caller's bug. A zero amax
/// (an all-zero weight) becomes the format's `maxbound`, as ModelOpt's `TensorQuantizer._sanitize_export_amax`
/// does for activations (its weight export would write NaN scales); one below the smallest normal f32 is
/// raised to it, as `TensorQuantizer.export_amax` does, so no scale underflows to zero.
pub(crate) fn sanitize_weight_amax(weight: &WeightInput, amax: f32, maxbound: f32) -> Result<f32> {
    if !amax.is_finite() || amax < 0.0 {
        return Err(Error::internal(format!(
            "tensor {}: the weight amax {amax} is not a finite, non-negative number",
            weight.name
        )));
    }
    Ok(if amax == 0.0 { maxbound } else { amax.max(f32::MIN_POSITIVE) })
}

/// ModelOpt's `_sanitize_export_amax` for an activation amax: 0 and NaN become `maxbound`, ±∞ the largest
/// finite f32 (`torch.nan_to_num`).
pub(crate) fn sanitize_input_amax(amax: f32, maxbound: f32) -> f32 {
    if amax == 0.0 || amax.is_nan() {
        maxbound
    } else {
        amax.clamp(f32::MIN, f32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_name() {
        let fp8 = format_by_name("fp8").unwrap();
        assert_eq!((fp8.name(), fp8.quant_algo(), fp8.group_size(), fp8.bits_per_weight()), ("fp8", "FP8", None, 8.0));
        let nvfp4 = format_by_name("NVFP4").unwrap();
        assert_eq!(
            (nvfp4.name(), nvfp4.quant_algo(), nvfp4.group_size(), nvfp4.bits_per_weight()),
            ("nvfp4", "NVFP4", Some(16), 4.5)
        );
        assert!(format_by_name("int4").is_none());
    }

    #[test]
    fn output_layout_is_what_quantize_returns() {
        for (name, torch_cuda) in [("fp8", false), ("fp8", true), ("nvfp4", false)] {
            let format = format_for_device(name, torch_cuda).unwrap();
            for shape in [[1usize, 16], [3, 32], [48, 64]] {
                let values: Vec<f32> = (0..shape[0] * shape[1]).map(|i| (i % 13) as f32 - 6.0).collect();
                let weight = WeightInput::new("w", Dtype::BF16, &shape, &values).unwrap();
                let quantized = format.quantize(&weight, 6.0).unwrap();
                let got: Vec<(&str, Dtype, Vec<usize>)> =
                    quantized.tensors.iter().map(|t| (t.suffix, t.dtype, t.shape.clone())).collect();
                assert_eq!(got, format.output_layout(shape), "{name} {shape:?}");
                for t in &quantized.tensors {
                    assert_eq!(t.data.len(), t.shape.iter().product::<usize>() * t.dtype.size(), "{name} {shape:?}");
                }
            }
        }
    }

    #[test]
    fn amax_is_the_largest_magnitude() {
        assert_eq!(weight_amax(&[]), 0.0);
        assert_eq!(weight_amax(&[-0.0]), 0.0);
        let values: Vec<f32> = (0..37).map(|i| (i as f32 - 20.0) * 0.5).collect();
        assert_eq!(weight_amax(&values), 10.0);
        assert_eq!(weight_amax(&[1.0, -3.0, 2.0]), 3.0);
    }

    #[test]
    fn finds_the_first_non_finite_value() {
        let mut values = vec![1.0f32; 3000];
        assert_eq!(first_non_finite(&values), None);
        values[2500] = f32::NAN;
        values[2900] = f32::INFINITY;
        assert_eq!(first_non_finite(&values), Some(2500));
        values[7] = f32::NEG_INFINITY;
        assert_eq!(first_non_finite(&values), Some(7));
    }

    #[test]
    fn weight_input_checks_its_shape() {
        let values = [0.0f32; 6];
        let ok = WeightInput::new("w", Dtype::F32, &[2, 3], &values).unwrap();
        assert_eq!((ok.rows(), ok.cols()), (2, 3));
        for shape in [&[6][..], &[1, 2, 3], &[4, 2]] {
            let err = WeightInput::new("w", Dtype::F32, shape, &values).unwrap_err();
            assert_eq!(err.code(), "E_TENSOR_SHAPE");
            assert!(err.to_string().contains("tensor w"), "{err}");
        }
    }

    #[test]
    fn rejects_non_finite_weights_naming_the_tensor() {
        let mut values = vec![0.5f32; 32];
        values[17] = f32::NAN;
        for format in [format_by_name("fp8").unwrap(), format_by_name("nvfp4").unwrap()] {
            let weight =
                WeightInput::new("layers.0.mlp.experts.3.up_proj.weight", Dtype::BF16, &[2, 16], &values).unwrap();
            let err = format.quantize(&weight, 1.0).unwrap_err();
            assert_eq!(err.code(), "E_TENSOR_NON_FINITE");
            assert!(err.to_string().contains("experts.3.up_proj.weight"), "{err}");
            assert!(matches!(err, Error::NonFinite { index: 17, .. }));
        }
        values[17] = f32::NEG_INFINITY;
        let weight = WeightInput::new("w", Dtype::F32, &[2, 16], &values).unwrap();
        assert_eq!(Fp8::default().quantize(&weight, 1.0).unwrap_err().code(), "E_TENSOR_NON_FINITE");
    }

    #[test]
    fn rejects_bad_amax_and_dtypes() {
        let values = vec![0.5f32; 32];
        let weight = WeightInput::new("w", Dtype::F32, &[2, 16], &values).unwrap();
        for amax in [f32::NAN, f32::INFINITY, -1.0] {
            assert!(Fp8::default().quantize(&weight, amax).is_err());
            assert!(Nvfp4.quantize(&weight, amax).is_err());
        }
        let weight = WeightInput { source_dtype: Dtype::I32, ..weight };
        assert_eq!(Fp8::default().quantize(&weight, 1.0).unwrap_err().code(), "E_INTERNAL");
    }
}
