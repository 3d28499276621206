//! The dense MLP, used for dense layers and shared experts: gated `down(act(gate(x)) · up(x))` (`act` silu or a
//! GELU), with gate and up as two linears or as one (`[2I, H]`, gate rows first: Granite's `input_linear`), or
//! ungated `down(relu(up(x))²)` (Nemotron-H).

use candle_core::Tensor;

use super::activation::{gated, is_gated};
use super::linear::Linear;
use crate::error::{Error, Result};
use crate::model::descriptor::{DenseMlpDescriptor, ExpertActivation};
use crate::model::loader::WeightLoader;
use crate::model::observe::Observers;

/// What reads the MLP's input.
enum Input {
    /// `act(gate(x)) · up(x)`.
    Gated { gate: Linear, up: Linear },
    /// `act(g) · u` where `[g | u] = gate_up(x)`.
    Fused(Linear),
    /// `relu(up(x))²`.
    Relu2(Linear),
}

pub struct Mlp {
    input: Input,
    activation: ExpertActivation,
    down: Linear,
}

impl Mlp {
    pub fn load(loader: &WeightLoader, desc: &DenseMlpDescriptor) -> Result<Self> {
        let linear = |module: &str| Linear::load(loader, module, false);
        let input = match (is_gated(desc.activation), desc.activation, &desc.gate, &desc.up, &desc.gate_up) {
            (true, _, Some(gate), Some(up), None) => Input::Gated { gate: linear(gate)?, up: linear(up)? },
            (true, _, None, None, Some(gate_up)) => Input::Fused(linear(gate_up)?),
            (false, ExpertActivation::Relu2, None, Some(up), None) => Input::Relu2(linear(up)?),
            _ => {
                return Err(Error::internal(format!(
                    "the MLP of {}: a {:?} MLP needs gate and up, or gate_up (gated), or up alone (relu2)",
                    desc.down, desc.activation
                )))
            }
        };
        Ok(Mlp { input, activation: desc.activation, down: linear(&desc.down)? })
    }

    pub fn forward(&self, xs: &Tensor, observers: &mut Observers) -> Result<Tensor> {
        let hidden = match &self.input {
            Input::Gated { gate, up } => {
                observers.record_linears(&[gate, up], xs)?;
                gated(self.activation, &gate.forward(xs)?, &up.forward(xs)?)?
            }
            Input::Fused(gate_up) => {
                observers.record_linears(&[gate_up], xs)?;
                let both = gate_up.forward(xs)?;
                let half = both.dim(candle_core::D::Minus1)? / 2;
                let gate = both.narrow(candle_core::D::Minus1, 0, half)?;
                gated(self.activation, &gate, &both.narrow(candle_core::D::Minus1, half, half)?)?
            }
            Input::Relu2(up) => {
                observers.record_linears(&[up], xs)?;
                up.forward(xs)?.relu()?.sqr()?
            }
        };
        observers.record_linears(&[&self.down], &hidden)?;
        self.down.forward(&hidden)
    }
}
