//! The dense MLP, used for dense layers and shared experts: gated `down(silu(gate(x)) · up(x))`, with gate and
//! up as two linears or as one (`[2I, H]`, gate rows first: Granite's `input_linear`), or ungated
//! `down(relu(up(x))²)` (Nemotron-H).

use candle_core::Tensor;

use super::linear::Linear;
use crate::error::{Error, Result};
use crate::model::descriptor::{DenseMlpDescriptor, ExpertActivation};
use crate::model::loader::WeightLoader;
use crate::model::observe::Observers;

/// What reads the MLP's input.
enum Input {
    /// `silu(gate(x)) · up(x)`.
    Gated { gate: Linear, up: Linear },
    /// `silu(g) · u` where `[g | u] = gate_up(x)`.
    Fused(Linear),
    /// `relu(up(x))²`.
    Relu2(Linear),
}

pub struct Mlp {
    input: Input,
    down: Linear,
}

impl Mlp {
    pub fn load(loader: &WeightLoader, desc: &DenseMlpDescriptor) -> Result<Self> {
        let linear = |module: &str| Linear::load(loader, module, false);
        let input = match (desc.activation, &desc.gate, &desc.up, &desc.gate_up) {
            (ExpertActivation::Silu, Some(gate), Some(up), None) => {
                Input::Gated { gate: linear(gate)?, up: linear(up)? }
            }
            (ExpertActivation::Silu, None, None, Some(gate_up)) => Input::Fused(linear(gate_up)?),
            (ExpertActivation::Relu2, None, Some(up), None) => Input::Relu2(linear(up)?),
            _ => {
                return Err(Error::internal(format!(
                    "the MLP of {}: a {:?} MLP needs gate and up, or gate_up (silu), or up alone (relu2)",
                    desc.down, desc.activation
                )))
            }
        };
        Ok(Mlp { input, down: linear(&desc.down)? })
    }

    pub fn forward(&self, xs: &Tensor, observers: &mut Observers) -> Result<Tensor> {
        let hidden = match &self.input {
            Input::Gated { gate, up } => {
                observers.record_input(&[&gate.name, &up.name], xs)?;
                (gate.forward(xs)?.silu()? * up.forward(xs)?)?
            }
            Input::Fused(gate_up) => {
                observers.record_input(&[&gate_up.name], xs)?;
                let both = gate_up.forward(xs)?;
                let half = both.dim(candle_core::D::Minus1)? / 2;
                let gate = both.narrow(candle_core::D::Minus1, 0, half)?;
                (gate.silu()? * both.narrow(candle_core::D::Minus1, half, half)?)?
            }
            Input::Relu2(up) => {
                observers.record_input(&[&up.name], xs)?;
                up.forward(xs)?.relu()?.sqr()?
            }
        };
        observers.record_input(&[&self.down.name], &hidden)?;
        self.down.forward(&hidden)
    }
}
