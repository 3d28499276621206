//! The dense gated MLP `down(silu(gate(x)) · up(x))`, used for dense layers and shared experts.

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
        Ok(Mlp {
            gate: Linear::load(loader, &desc.gate, false)?,
            up: Linear::load(loader, &desc.up, false)?,
            down: Linear::load(loader, &desc.down, false)?,
        })
    }

    pub fn forward(&self, xs: &Tensor, observers: &mut Observers) -> Result<Tensor> {
        observers.record_input(&[&self.gate.name, &self.up.name], xs)?;
        let hidden = (self.gate.forward(xs)?.silu()? * self.up.forward(xs)?)?;
        observers.record_input(&[&self.down.name], &hidden)?;
        self.down.forward(&hidden)
    }
}
