//! Quantization formats, one folder each (weight-only variants beside the format they derive from): the math that turns one 2-D weight `[N, K]` (output rows, input
//! columns) and its per-tensor amax into the tensors ModelOpt's unified HF export writes for it (SPEC §4, §5),
//! byte for byte; the way back (dequantization, to run or compare an exported checkpoint); and, as a device
//! capability, the same quantization by a CUDA kernel on a weight already on the GPU.
//!
//! A new format is a new folder implementing [`QuantFormat`] (and [`DeviceQuantize`] when it has a kernel) plus
//! one [`FormatName`] variant; nothing format-specific lives in this file. Callers choose the amax (shared over
//! gate/up or q/k/v, SPEC §4.3) and the output names (`<module>.` + each tensor's suffix).

mod fp8;
mod int4;
mod mx;
mod mxfp4;
mod mxfp8;
mod nvfp4;
mod stacked;
mod stored;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

pub use fp8::{dequantize_fp8, Fp8, Fp8Bf16Scales, Fp8Block, Fp8Granularity, Fp8PerChannel};
pub use int4::{Int4Awq, INT4_BLOCK};
pub use mx::MX_BLOCK;
pub use mxfp4::{mxfp4_code, mxfp4_exponent, Mxfp4};
pub use mxfp8::{e8m0_exponent, Mxfp8};
pub use nvfp4::{block_amax, dequantize_nvfp4, Nvfp4, Nvfp4CompressedTensors, Nvfp4Variant, NVFP4_BLOCK};
pub use stacked::{expert_matrix, stack_shape, stacked_layout, stacked_rule, StackAssembler, StackedRule};
pub use stored::{dequantize_stored, stored_format};

use crate::checkpoint::{Dtype, TensorView};
use crate::error::{Error, Result};
use crate::numerics::first_non_finite;

/// The formats by the name options use (`"fp8"`, `"nvfp4"`, `"w4a16_nvfp4"`, `"fp8_pc_pt"`, `"fp8_pb_wo"`, `"mxfp8"`,
/// `"mxfp4"`, `"int4_awq"`, `"w4a8_awq"`, `"nvfp4_awq"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ts_rs::TS)]
pub enum FormatName {
    /// FP8 E4M3, one scale per tensor, calibrated static input scales (`FP8`).
    #[serde(rename = "fp8")]
    Fp8,
    /// NVFP4 weights and calibrated static input scales (`NVFP4`).
    #[serde(rename = "nvfp4")]
    Nvfp4,
    /// NVFP4 weights, activations left in 16 bits (`W4A16_NVFP4`): no calibration.
    #[serde(rename = "w4a16_nvfp4")]
    W4a16Nvfp4,
    /// FP8 E4M3 weights with one scale per output channel, activations quantized per token at run time
    /// (`FP8_PER_CHANNEL_PER_TOKEN`): no calibration.
    #[serde(rename = "fp8_pc_pt")]
    Fp8PcPt,
    /// FP8 E4M3 weights with one scale per 128×128 block, activations left in 16 bits (`fp8_pb_wo`, ModelOpt's
    /// `FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG`): no calibration.
    #[serde(rename = "fp8_pb_wo")]
    Fp8PbWo,
    /// FP8 E4M3 weights with one power-of-two (E8M0) scale per 32 elements, activations MX-scaled by the engine
    /// (`MXFP8`): no calibration.
    #[serde(rename = "mxfp8")]
    Mxfp8,
    /// E2M1 weights with one power-of-two (E8M0) scale per 32 elements, activations MX-scaled by the engine
    /// (`mxfp4`): no calibration.
    #[serde(rename = "mxfp4")]
    Mxfp4,
    /// INT4 weights in blocks of 128 smoothed by an AWQ search, activations left in 16 bits (`W4A16_AWQ`): the
    /// calibration forward finds each linear's smoothing; no input scale is written.
    #[serde(rename = "int4_awq")]
    Int4Awq,
    /// INT4 AWQ weights with FP8 activations and a calibrated input scale (`W4A8_AWQ`).
    #[serde(rename = "w4a8_awq")]
    W4a8Awq,
    /// NVFP4 weights smoothed by an AWQ search, with calibrated input scales (`NVFP4_AWQ`).
    #[serde(rename = "nvfp4_awq")]
    Nvfp4Awq,
}

impl FormatName {
    /// Every format; the ones that read stored weights back try them in this order.
    pub const ALL: [FormatName; 10] = [
        FormatName::Fp8,
        FormatName::Nvfp4,
        FormatName::W4a16Nvfp4,
        FormatName::Fp8PcPt,
        FormatName::Fp8PbWo,
        FormatName::Mxfp8,
        FormatName::Mxfp4,
        FormatName::Int4Awq,
        FormatName::W4a8Awq,
        FormatName::Nvfp4Awq,
    ];

    /// The name options use.
    pub fn as_str(self) -> &'static str {
        match self {
            FormatName::Fp8 => "fp8",
            FormatName::Nvfp4 => "nvfp4",
            FormatName::W4a16Nvfp4 => "w4a16_nvfp4",
            FormatName::Fp8PcPt => "fp8_pc_pt",
            FormatName::Fp8PbWo => "fp8_pb_wo",
            FormatName::Mxfp8 => "mxfp8",
            FormatName::Mxfp4 => "mxfp4",
            FormatName::Int4Awq => "int4_awq",
            FormatName::W4a8Awq => "w4a8_awq",
            FormatName::Nvfp4Awq => "nvfp4_awq",
        }
    }
}

/// The format `name` with the arithmetic torch uses on the device that runs the forward: on CUDA
/// (`torch_cuda`), FP8 divides bf16 / f16 weights by their dtype's rounding of the scale (see [`Fp8`]).
pub fn format(name: FormatName, torch_cuda: bool) -> Box<dyn QuantFormat> {
    match name {
        FormatName::Fp8 => Box::new(Fp8 { torch_cuda }),
        FormatName::Nvfp4 => Box::new(Nvfp4),
        FormatName::W4a16Nvfp4 => Box::new(Nvfp4Variant { awq: false }),
        FormatName::Fp8PcPt => Box::new(Fp8PerChannel),
        FormatName::Fp8PbWo => Box::new(Fp8Block),
        FormatName::Mxfp8 => Box::new(Mxfp8),
        FormatName::Mxfp4 => Box::new(Mxfp4),
        FormatName::Int4Awq => Box::new(Int4Awq { fp8_activations: false }),
        FormatName::W4a8Awq => Box::new(Int4Awq { fp8_activations: true }),
        FormatName::Nvfp4Awq => Box::new(Nvfp4Variant { awq: true }),
    }
}

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

/// The weight quantizer an AWQ search fake-quantizes with: INT4 in blocks of 128, or NVFP4 (blocks of 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwqQuantizer {
    Int4,
    Nvfp4,
}

impl AwqQuantizer {
    /// The block along K its scales cover (the search's per-channel weight scale is taken over it).
    pub fn block(self) -> usize {
        match self {
            AwqQuantizer::Int4 => INT4_BLOCK,
            AwqQuantizer::Nvfp4 => NVFP4_BLOCK,
        }
    }
}

/// A weight quantization format. Optional abilities belong in other traits ([`DeviceQuantize`]).
pub trait QuantFormat: Send + Sync {
    fn name(&self) -> FormatName;
    /// `quant_algo` in hf_quant_config.json: `"FP8"`, `"NVFP4"`.
    fn quant_algo(&self) -> &'static str;
    /// Elements per block scale along K, for block formats.
    fn group_size(&self) -> Option<usize>;
    /// Stored bits per weight element, block scales included (0-d scalars not counted).
    fn bits_per_weight(&self) -> f64;
    /// The per-tensor scale written for a weight amax (`weight_scale` of FP8, `weight_scale_2` of NVFP4);
    /// `name` is the weight's, for errors. Formats without one (per-channel scales) refuse.
    fn weight_scale(&self, name: &str, amax: f32) -> Result<f32>;
    /// Whether activations are quantized with a static scale measured by calibration: only then is an
    /// `input_scale` written beside each weight, and only then does quantizing need a calibration forward.
    fn calibrated(&self) -> bool {
        true
    }
    /// The weight quantizer an AWQ search smooths this format's weights for, for the formats found by one
    /// (`int4_awq`, `w4a8_awq`, `nvfp4_awq`): the calibration forward then searches each linear's smoothing, the
    /// weights are quantized smoothed, and a `pre_quant_scale` is written (see `awq`).
    fn awq(&self) -> Option<AwqQuantizer> {
        None
    }
    /// The `input_scale` written for an activation amax (the max |x| calibration saw), for calibrated formats.
    fn input_scale(&self, amax: f32) -> f32;
    /// The tensor that holds [`Self::input_scale`]: `input_scale`, 0-d f32, unless the format stores it otherwise.
    fn input_scale_tensor(&self, amax: f32) -> OutputTensor {
        OutputTensor::scalar_f32("input_scale", self.input_scale(amax))
    }
    /// The suffix, dtype and shape of [`Self::input_scale_tensor`].
    fn input_scale_layout(&self) -> (&'static str, Dtype, Vec<usize>) {
        ("input_scale", Dtype::F32, Vec::new())
    }
    /// Quantizes one weight with the per-tensor weight amax to use (which may exceed the weight's own max).
    fn quantize(&self, weight: &WeightInput, amax: f32) -> Result<QuantizedWeight>;
    /// The suffix, dtype and shape of each tensor `quantize` returns for a weight `[N, K]`, in its order.
    fn output_layout(&self, shape: [usize; 2]) -> Vec<(&'static str, Dtype, Vec<usize>)>;
    /// Whether tensors of these dtypes, stored under the suffixes of `output_layout` (in its order; `None`
    /// where a tensor is absent), are a weight of this format.
    fn recognizes(&self, dtypes: &[Option<Dtype>]) -> bool;
    /// Whether tensors of these shapes (as [`Self::recognizes`] gets their dtypes; `None` where absent) fit one
    /// weight of this format: formats whose dtypes alone could be another tensor's check their shapes too.
    fn recognizes_shapes(&self, _shapes: &[Option<&[usize]>]) -> bool {
        true
    }
    /// The logical shape `[N, K]` and the f32 values (row major) of a weight of this format, from its tensors
    /// in `output_layout` order; `name` is the weight's, for errors.
    fn dequantize(&self, name: &str, parts: &[TensorView<'_>]) -> Result<([usize; 2], Vec<f32>)>;
    /// How one expert of a stack `[E, K, N]` (experts stored BMM style) is quantized, for the formats ModelOpt
    /// writes such stacks in; `None` where that form is not written.
    fn stacked_rule(&self) -> Option<StackedRule> {
        None
    }
    /// Whether the linears of a weight group (q/k/v, gate/up: they read one input) take the group's largest
    /// weight amax, `first` being the shape of the group's first weight (a routed expert's fused gate/up `[2I, H]`).
    fn shares_amax(&self, _first: [usize; 2]) -> bool {
        true
    }
    /// This format's GPU quantization, where it has one.
    fn on_device(&self) -> Option<&dyn DeviceQuantize> {
        None
    }
}

/// A format's quantization by a CUDA kernel, for weights already on the GPU (bf16, f16 or f32). Without the
/// `cuda` feature (or for a tensor on the CPU) every call fails with `E_DEVICE_UNAVAILABLE`.
pub trait DeviceQuantize: Send + Sync {
    /// Quantizes `xs` (`[.., N, K]`: one weight, or `[E, N, K]` experts) with per-tensor scales from
    /// [`QuantFormat::weight_scale`]: one for the whole tensor or one per expert. Returns the tensors `quantize`
    /// writes that are not per-tensor scalars, in `output_layout` order, stacked over the experts.
    fn quantize_on_device(&self, xs: &Tensor, weight_scales: &[f32]) -> Result<Vec<Tensor>>;

    /// The squared error of `parts` (what [`Self::quantize_on_device`] made of `xs` with `weight_scales`) against
    /// `xs`, and the squared norm of `xs`, each summed in f32 on the device: an F32 `[2]` tensor left there (to
    /// report the quantization error of weights that never leave the GPU).
    fn error_on_device(&self, xs: &Tensor, parts: &[Tensor], weight_scales: &[f32]) -> Result<Tensor>;
}

impl QuantizedWeight {
    /// The tensors as views in `output_layout` order (for [`QuantFormat::dequantize`]).
    pub fn views(&self) -> Vec<TensorView<'_>> {
        self.tensors
            .iter()
            .map(|t| TensorView { name: t.suffix, dtype: t.dtype, shape: &t.shape, data: &t.data })
            .collect()
    }
}

/// The weight amax a format divides by. NaN, infinite or negative amaxes are the caller's bug. A zero amax
/// (an all-zero weight) becomes the format's `maxbound`, as ModelOpt's `TensorQuantizer._sanitize_export_amax`
/// does for activations (its weight export would write NaN scales); one below the smallest normal f32 is
/// raised to it, as `TensorQuantizer.export_amax` does, so no scale underflows to zero.
pub(crate) fn sanitize_weight_amax(name: &str, amax: f32, maxbound: f32) -> Result<f32> {
    if !amax.is_finite() || amax < 0.0 {
        return Err(Error::internal(format!(
            "tensor {name}: the weight amax {amax} is not a finite, non-negative number"
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

/// The `E_TENSOR_SHAPE` error for tensor `name`.
pub(crate) fn shape_error(name: &str, shape: &[usize], message: String) -> Error {
    Error::ShapeInvalid { tensor: name.to_string(), shape: shape.to_vec(), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_by_name() {
        let fp8 = format(FormatName::Fp8, false);
        assert_eq!(
            (fp8.name().as_str(), fp8.quant_algo(), fp8.group_size(), fp8.bits_per_weight()),
            ("fp8", "FP8", None, 8.0)
        );
        let nvfp4 = format(FormatName::Nvfp4, false);
        assert_eq!(
            (nvfp4.name().as_str(), nvfp4.quant_algo(), nvfp4.group_size(), nvfp4.bits_per_weight()),
            ("nvfp4", "NVFP4", Some(16), 4.5)
        );
        for name in FormatName::ALL {
            assert_eq!(serde_json::to_value(name).unwrap(), name.as_str());
            assert_eq!(serde_json::from_value::<FormatName>(name.as_str().into()).unwrap(), name);
        }
        assert!(serde_json::from_value::<FormatName>("int4".into()).is_err());
        let calibrated: Vec<bool> = FormatName::ALL.iter().map(|&name| format(name, false).calibrated()).collect();
        assert_eq!(calibrated, [true, true, false, false, false, false, false, false, true, true]);
        let algos: Vec<&str> = FormatName::ALL.iter().map(|&name| format(name, false).quant_algo()).collect();
        let expected = [
            "FP8",
            "NVFP4",
            "W4A16_NVFP4",
            "FP8_PER_CHANNEL_PER_TOKEN",
            "fp8_pb_wo",
            "MXFP8",
            "mxfp4",
            "W4A16_AWQ",
            "W4A8_AWQ",
            "NVFP4_AWQ",
        ];
        assert_eq!(algos, expected);
    }

    #[test]
    fn weight_scales_are_the_ones_quantize_writes() {
        let values = [0.5f32; 16];
        let weight = WeightInput::new("w", Dtype::F32, &[1, 16], &values).unwrap();
        // Every format with a per-tensor scale (per-channel FP8 has none, and refuses).
        assert!(format(FormatName::Fp8PcPt, false).weight_scale("w", 1.0).is_err());
        assert!(format(FormatName::Mxfp8, false).weight_scale("w", 1.0).is_err());
        assert!(format(FormatName::Mxfp4, false).weight_scale("w", 1.0).is_err());
        for name in
            [FormatName::Fp8, FormatName::Nvfp4, FormatName::W4a16Nvfp4, FormatName::Fp8PbWo, FormatName::Nvfp4Awq]
        {
            let format = format(name, false);
            let scalar = format.output_layout([1, 16]).iter().rev().find(|(_, _, s)| s.is_empty()).unwrap().0;
            for amax in [0.0, 1e-45, 1e-39, 0.5, 3.7, 448.0, 1e30] {
                let q = format.quantize(&weight, amax).unwrap();
                let written = f32::from_le_bytes(q.get(scalar).unwrap().data.clone().try_into().unwrap());
                assert_eq!(format.weight_scale("w", amax).unwrap(), written, "{name:?} {amax}");
            }
            assert!(format.weight_scale("w", f32::NAN).is_err());
            assert!(format.weight_scale("w", -1.0).is_err());
        }
    }

    #[test]
    fn output_layout_is_what_quantize_returns() {
        let mut cases: Vec<(FormatName, bool)> = FormatName::ALL.iter().map(|&name| (name, false)).collect();
        cases.push((FormatName::Fp8, true));
        for (name, torch_cuda) in cases {
            let format = format(name, torch_cuda);
            for shape in [[1usize, 16], [3, 32], [48, 64], [4, 256]] {
                if format.group_size().is_some_and(|group| shape[1] % group != 0) {
                    continue;
                }
                let values: Vec<f32> = (0..shape[0] * shape[1]).map(|i| (i % 13) as f32 - 6.0).collect();
                let weight = WeightInput::new("w", Dtype::BF16, &shape, &values).unwrap();
                let quantized = format.quantize(&weight, 6.0).unwrap();
                let got: Vec<(&str, Dtype, Vec<usize>)> =
                    quantized.tensors.iter().map(|t| (t.suffix, t.dtype, t.shape.clone())).collect();
                assert_eq!(got, format.output_layout(shape), "{name:?} {shape:?}");
                for t in &quantized.tensors {
                    assert_eq!(t.data.len(), t.shape.iter().product::<usize>() * t.dtype.size(), "{name:?} {shape:?}");
                }
            }
        }
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
        for format in FormatName::ALL.map(|name| format(name, false)) {
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
