//! W4A16 NVFP4 (`quant_algo: "W4A16_NVFP4"`, group size 16), as ModelOpt 0.47's unified HF export writes it:
//! the weights exactly as [`Nvfp4`] quantizes them (`weight`, `weight_scale`, `weight_scale_2`, gate/up and
//! q/k/v sharing `weight_scale_2`), and no `input_scale`: activations stay in 16 bits, so nothing is
//! calibrated and no forward is needed.

use super::Nvfp4;
use crate::checkpoint::{Dtype, TensorView};
use crate::error::Result;
use crate::formats::{FormatName, QuantFormat, QuantizedWeight, WeightInput};

/// NVFP4 weights with 16-bit activations.
#[derive(Debug, Clone, Copy, Default)]
pub struct W4a16Nvfp4;

impl QuantFormat for W4a16Nvfp4 {
    fn name(&self) -> FormatName {
        FormatName::W4a16Nvfp4
    }

    fn quant_algo(&self) -> &'static str {
        "W4A16_NVFP4"
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

    fn calibrated(&self) -> bool {
        false
    }

    /// Never written; NVFP4's rule, for callers that ask anyway.
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

    fn stacked_rule(&self) -> Option<crate::formats::StackedRule> {
        Nvfp4.stacked_rule()
    }

    fn on_device(&self) -> Option<&dyn crate::formats::DeviceQuantize> {
        Some(&Nvfp4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_weights_as_nvfp4_without_calibration() {
        let values: Vec<f32> = (0..3 * 32).map(|i| ((i * 7) % 23) as f32 * 0.25 - 2.5).collect();
        let weight = WeightInput::new("w", Dtype::BF16, &[3, 32], &values).unwrap();
        assert_eq!(W4a16Nvfp4.quantize(&weight, 3.0).unwrap(), Nvfp4.quantize(&weight, 3.0).unwrap());
        assert_eq!((W4a16Nvfp4.quant_algo(), W4a16Nvfp4.group_size()), ("W4A16_NVFP4", Some(16)));
        assert!(!W4a16Nvfp4.calibrated() && Nvfp4.calibrated());
    }
}
