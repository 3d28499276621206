//! NVFP4's weights under two other `quant_algo`s (group size 16), as ModelOpt 0.47's unified HF export writes them:
//! the weights exactly as [`Nvfp4`] quantizes them (`weight`, `weight_scale`, `weight_scale_2`, q/k/v and gate/up
//! sharing `weight_scale_2`), with
//! - `W4A16_NVFP4`: no `input_scale`. Activations stay in 16 bits, so nothing is calibrated and no forward is needed.
//! - `NVFP4_AWQ`: the weights smoothed by an AWQ search before they are quantized, the calibrated `input_scale`, and a
//!   `pre_quant_scale` the caller writes beside them where no norm or preceding linear absorbs it. Its experts are
//!   quantized on the host once smoothed, not on the device while resident.

use super::Nvfp4;
use crate::checkpoint::{Dtype, TensorView};
use crate::error::Result;
use crate::formats::{
    AwqQuantizer, DeviceQuantize, FormatName, QuantFormat, QuantizedWeight, StackedRule, WeightInput,
};

/// NVFP4 weights with 16-bit activations (`awq: false`, `W4A16_NVFP4`), or smoothed by an AWQ search with calibrated
/// activations (`awq: true`, `NVFP4_AWQ`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Nvfp4Variant {
    pub awq: bool,
}

impl QuantFormat for Nvfp4Variant {
    fn name(&self) -> FormatName {
        if self.awq {
            FormatName::Nvfp4Awq
        } else {
            FormatName::W4a16Nvfp4
        }
    }

    fn quant_algo(&self) -> &'static str {
        if self.awq {
            "NVFP4_AWQ"
        } else {
            "W4A16_NVFP4"
        }
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
        self.awq
    }

    fn awq(&self) -> Option<AwqQuantizer> {
        self.awq.then_some(AwqQuantizer::Nvfp4)
    }

    /// NVFP4's rule (never written for `W4A16_NVFP4`, for callers that ask anyway).
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

    fn stacked_rule(&self) -> Option<StackedRule> {
        if self.awq {
            None
        } else {
            Nvfp4.stacked_rule()
        }
    }

    fn on_device(&self) -> Option<&dyn DeviceQuantize> {
        (!self.awq).then_some(&Nvfp4 as &dyn DeviceQuantize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_weights_as_nvfp4_with_their_own_activations() {
        let values: Vec<f32> = (0..3 * 32).map(|i| ((i * 7) % 23) as f32 * 0.25 - 2.5).collect();
        let weight = WeightInput::new("w", Dtype::BF16, &[3, 32], &values).unwrap();
        let (w4a16, awq) = (Nvfp4Variant { awq: false }, Nvfp4Variant { awq: true });
        for variant in [w4a16, awq] {
            assert_eq!(variant.quantize(&weight, 3.0).unwrap(), Nvfp4.quantize(&weight, 3.0).unwrap());
            assert_eq!(variant.group_size(), Some(16));
        }
        assert_eq!((w4a16.quant_algo(), awq.quant_algo()), ("W4A16_NVFP4", "NVFP4_AWQ"));
        assert!(!w4a16.calibrated() && awq.calibrated() && Nvfp4.calibrated());
        assert_eq!((w4a16.awq(), awq.awq()), (None, Some(AwqQuantizer::Nvfp4)));
        assert!(w4a16.on_device().is_some() && awq.on_device().is_none() && awq.stacked_rule().is_none());
    }
}
