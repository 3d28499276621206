//! What a router reads, where it is not the MoE block's input as it is: Gemma 4 scales it,
//! `rmsnorm(x) · scale · hidden^-0.5`, the RMSNorm without a weight (normalised in f32, cast back), the products
//! in the compute dtype in transformers' order.
//! transformers: models/gemma4 `Gemma4TextRouter`.

use candle_core::Tensor;

use super::norm::normalize;
use crate::error::Result;
use crate::model::descriptor::RouterInputScale;
use crate::model::loader::WeightLoader;

pub struct RouterInput {
    /// `[H]`.
    scale: Tensor,
    eps: f64,
    /// `hidden^-0.5`.
    root: f64,
}

impl RouterInput {
    pub fn load(loader: &WeightLoader, desc: &RouterInputScale, hidden: usize) -> Result<Self> {
        Ok(RouterInput {
            scale: loader.tensor_shaped(&desc.scale, &[hidden])?,
            eps: desc.eps,
            root: (hidden as f64).powf(-0.5),
        })
    }

    /// `xs [T, H]` → the router's input `[T, H]`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok((normalize(xs, self.eps)?.broadcast_mul(&self.scale)? * self.root)?)
    }
}
