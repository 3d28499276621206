//! The KV cache's calibrated scales (`kvCache: 'fp8'`), as ModelOpt 0.47's unified HF export writes them from its
//! attention's key and value quantizers (`k_bmm_quantizer`, `v_bmm_quantizer`; `postprocess_state_dict`): for each
//! attention, `<attention>.k_proj.k_scale` and `<attention>.v_proj.v_scale`, 0-d f32, the amax over 448 whatever the
//! weights' format (FP8 attention math in the engines). The constant-scale cast (`fp8_cast`) writes none.
//!
//! In compressed-tensors' form the same maxima are written as llm-compressor names and stores them,
//! `<attention>.k_scale` and `<attention>.v_scale`, BF16 `[1]`, the f32 quotient rounded to bf16.

use super::plan::ExportPlan;
use super::Encoding;
use crate::error::{Error, Result};
use crate::model::observe::Observers;
use crate::numerics::e4m3::E4M3_MAX;

/// The names of the KV cache's scales of the attention module `attention`: `[k_scale, v_scale]`, after the key and
/// value projections (also where the attention has no module of that name, as MLA); on the attention itself in
/// compressed-tensors' form.
pub fn kv_scale_names(attention: &str, encoding: Encoding) -> [String; 2] {
    match encoding {
        Encoding::ModelOpt => [format!("{attention}.k_proj.k_scale"), format!("{attention}.v_proj.v_scale")],
        Encoding::CompressedTensors => [format!("{attention}.k_scale"), format!("{attention}.v_scale")],
    }
}

/// The scale of keys (or values) whose maximum is `amax`: `amax / 448` in f32, as ModelOpt divides its f32 amax.
pub fn kv_scale(amax: f32) -> f32 {
    amax / E4M3_MAX
}

/// The KV cache scales of the attentions of `layer` (0-d f32 tensors by name) from what its calibration recorded.
pub fn kv_scales(layer: usize, plan: &ExportPlan, observers: Option<&Observers>) -> Result<Vec<(String, f32)>> {
    let mut scales = Vec::new();
    for kv in plan.kv_scales.iter().filter(|kv| kv.layer == layer) {
        let amax = observers.and_then(|o| o.kv_amax.get(&kv.attention)).ok_or_else(|| {
            Error::internal(format!("no keys or values were recorded for {}; is it part of the forward?", kv.attention))
        })?;
        let [k_scale, v_scale] = kv_scale_names(&kv.output, plan.encoding);
        scales.push((k_scale, kv_scale(amax.key)));
        scales.push((v_scale, kv_scale(amax.value)));
    }
    Ok(scales)
}
