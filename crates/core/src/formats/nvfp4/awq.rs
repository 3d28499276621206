//! NVFP4 smoothed by an AWQ search (`quant_algo: "NVFP4_AWQ"`, group size 16), as ModelOpt 0.47's unified HF
//! export writes it: the weights exactly as [`Nvfp4`] quantizes them once smoothed (`weight`, `weight_scale`,
//! `weight_scale_2`, shared by q/k/v and gate/up), the calibrated `input_scale`, and a `pre_quant_scale` the caller
//! writes beside them where no norm or preceding linear absorbs it.

use super::Nvfp4;
use crate::checkpoint::{Dtype, TensorView};
use crate::error::Result;
use crate::formats::{AwqQuantizer, FormatName, QuantFormat, QuantizedWeight, WeightInput};

/// NVFP4 weights found by an AWQ search.
#[derive(Debug, Clone, Copy, Default)]
pub struct Nvfp4Awq;

impl QuantFormat for Nvfp4Awq {
    fn name(&self) -> FormatName {
        FormatName::Nvfp4Awq
    }

    fn quant_algo(&self) -> &'static str {
        "NVFP4_AWQ"
    }

    fn group_size(&self) -> Option<usize> {
        Nvfp4.group_size()
    }

    fn bits_per_weight(&self) -> f64 {
        Nvfp4.bits_per_weight()
    }

    fn weight_scale(&self, name: &str, amax: f32) -> Result<f32> {
        Nvfp4.weight_scale(name, amax)
    }

    fn awq(&self) -> Option<AwqQuantizer> {
        Some(AwqQuantizer::Nvfp4)
    }

    fn input_scale(&self, amax: f32) -> f32 {
        Nvfp4.input_scale(amax)
    }

    fn quantize(&self, weight: &WeightInput, amax: f32) -> Result<QuantizedWeight> {
        Nvfp4.quantize(weight, amax)
    }

    fn output_layout(&self, shape: [usize; 2]) -> Vec<(&'static str, Dtype, Vec<usize>)> {
        Nvfp4.output_layout(shape)
    }

    fn recognizes(&self, dtypes: &[Option<Dtype>]) -> bool {
        Nvfp4.recognizes(dtypes)
    }

    fn dequantize(&self, name: &str, parts: &[TensorView<'_>]) -> Result<([usize; 2], Vec<f32>)> {
        Nvfp4.dequantize(name, parts)
    }
}
