//! Observers: what the calibration forward records. The absolute maximum of the input of every linear that
//! will be quantized (one value per module); per MoE block, one input maximum for gate/up and one for down
//! shared by all experts (serving engines use one activation scale per layer), routed token counts per
//! expert, and each expert's weight maxima.

use std::collections::BTreeMap;

use candle_core::Tensor;
use serde::Serialize;

use crate::error::Result;
use crate::model::blocks::ops::abs_max;

/// Statistics of one MoE block.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExpertStats {
    /// max |x| over the tokens entering the experts (input of gate/up).
    pub gate_up_input_amax: f32,
    /// max |act(gate)·up| over every (token, expert) routing (input of down).
    pub down_input_amax: f32,
    /// (token, expert) routings per expert.
    pub tokens: Vec<u64>,
    /// max |W| of each expert's gate, up and down weights.
    pub gate_amax: Vec<f32>,
    pub up_amax: Vec<f32>,
    pub down_amax: Vec<f32>,
}

impl ExpertStats {
    pub fn new(experts: usize) -> Self {
        ExpertStats {
            gate_up_input_amax: 0.0,
            down_input_amax: 0.0,
            tokens: vec![0; experts],
            gate_amax: vec![0.0; experts],
            up_amax: vec![0.0; experts],
            down_amax: vec![0.0; experts],
        }
    }
}

/// Everything recorded during one calibration forward.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Observers {
    /// Module name (no `.weight`) → max |input|.
    pub input_amax: BTreeMap<String, f32>,
    /// MoE block path (e.g. `model.layers.1.mlp`) → statistics of its routed experts.
    pub experts: BTreeMap<String, ExpertStats>,
}

impl Observers {
    /// Records `max |xs|` as the input of each of `modules` (linears reading the same input).
    pub fn record_input(&mut self, modules: &[&str], xs: &Tensor) -> Result<()> {
        let amax = abs_max(xs)?;
        for module in modules {
            let entry = self.input_amax.entry((*module).to_string()).or_insert(0.0);
            *entry = entry.max(amax);
        }
        Ok(())
    }

    /// The statistics of one MoE block, created on first use.
    pub fn experts_mut(&mut self, block: &str, experts: usize) -> &mut ExpertStats {
        self.experts.entry(block.to_string()).or_insert_with(|| ExpertStats::new(experts))
    }
}
