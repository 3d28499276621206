//! The export plan as TS sends it (`ts/export/plan.ts` builds it). Names are full tensor or module names;
//! per-expert output names contain `{e}`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::formats::FormatName;
use crate::model::descriptor::ExpertTensors;

#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct ExportPlan {
    pub format: FormatName,
    /// Tensors written unchanged: input name → output name.
    pub keep: Vec<KeptTensor>,
    /// Linears quantized outside the routed experts.
    pub linears: Vec<LinearPlan>,
    /// Routed experts, one entry per MoE layer.
    pub experts: Vec<ExpertPlan>,
    /// Files written with the given text (config.json, hf_quant_config.json).
    pub files: BTreeMap<String, String>,
    /// Files of the input directory copied unchanged (tokenizer, generation config …).
    pub copy: Vec<String>,
    pub max_shard_bytes: u64,
    pub overwrite: bool,
}

#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct KeptTensor {
    pub input: String,
    pub output: String,
}

/// One linear (`[out, in]` weight) to quantize.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct LinearPlan {
    /// The decoder layer it belongs to; quantized right after that layer's calibration.
    pub layer: usize,
    /// Input module name (`<module>.weight` is read).
    pub module: String,
    /// Output module name (`<output>.weight`, `.weight_scale`, … are written).
    pub output: String,
    /// Modules sharing one weight amax with this one (NVFP4 q/k/v, gate/up); empty when its own.
    #[serde(default)]
    pub weight_group: Vec<String>,
    /// Modules whose input amax is shared with this one (they read the same input); empty when its own.
    #[serde(default)]
    pub input_group: Vec<String>,
}

/// The routed experts of one MoE layer.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct ExpertPlan {
    pub layer: usize,
    /// The MoE block (as in the model descriptor), whose observers hold the shared input amaxes.
    pub block: String,
    /// Where the experts are read from.
    pub source: ExpertTensors,
    /// Output module names with `{e}`: `…experts.{e}.gate_proj` (or `w1`), `up_proj` (`w3`), `down_proj` (`w2`).
    pub gate: String,
    pub up: String,
    pub down: String,
}

impl ExportPlan {
    /// The decoder layers with something to quantize, in order.
    pub fn layers(&self) -> Vec<usize> {
        let layers: std::collections::BTreeSet<usize> =
            self.linears.iter().map(|l| l.layer).chain(self.experts.iter().map(|x| x.layer)).collect();
        layers.into_iter().collect()
    }
}
