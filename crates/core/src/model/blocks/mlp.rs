//! The dense gated MLP `down(silu(gate(x)) · up(x))`, used for dense layers and shared experts (gate and up
//! stored apart, or as the two halves of one module).

use candle_core::Tensor;

use super::linear::Linear;
use crate::error::Result;
use crate::model::descriptor::DenseMlpDescriptor;
use crate::model::loader::WeightLoader;
use crate::model::observe::Observers;

pub struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    pub fn load(loader: &WeightLoader, desc: &DenseMlpDescriptor) -> Result<Self> {
        let (gate, up) = if desc.gate_up_fused {
            // One module's `[2I, H]` weight: gate rows, then up rows, both named by the module.
            let weight = loader.weight(&desc.gate)?;
            let half = weight.dim(0)? / 2;
            (
                Linear::from_weight(&desc.gate, weight.narrow(0, 0, half)?, None),
                Linear::from_weight(&desc.up, weight.narrow(0, half, half)?, None),
            )
        } else {
            (Linear::load(loader, &desc.gate, false)?, Linear::load(loader, &desc.up, false)?)
        };
        Ok(Mlp { gate, up, down: Linear::load(loader, &desc.down, false)? })
    }

    pub fn forward(&self, xs: &Tensor, observers: &mut Observers) -> Result<Tensor> {
        observers.record_input(&[&self.gate.name, &self.up.name], xs)?;
        let hidden = (self.gate.forward(xs)?.silu()? * self.up.forward(xs)?)?;
        observers.record_input(&[&self.down.name], &hidden)?;
        self.down.forward(&hidden)
    }
}
