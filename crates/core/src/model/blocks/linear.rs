//! `nn.Linear`: `y = x·Wᵀ + b`, weight `[out, in]`.

use candle_core::Tensor;

use crate::error::Result;
use crate::model::loader::WeightLoader;

pub struct Linear {
    /// Module name (what observers record under).
    pub name: String,
    /// `[out, in]`.
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn load(loader: &WeightLoader, module: &str, bias: bool) -> Result<Self> {
        Ok(Linear { name: module.to_string(), weight: loader.weight(module)?, bias: loader.bias(module, bias)? })
    }

    pub fn from_weight(name: &str, weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear { name: name.to_string(), weight, bias }
    }

    /// `xs [..., in]` → `[..., out]`.
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dims = xs.dims().to_vec();
        let (rows, features) = (dims[..dims.len() - 1].iter().product::<usize>(), dims[dims.len() - 1]);
        let flat = xs.reshape((rows, features))?;
        let mut ys = flat.matmul(&self.weight.t()?)?;
        if let Some(bias) = &self.bias {
            ys = ys.broadcast_add(bias)?;
        }
        let mut out_dims = dims;
        let last = out_dims.len() - 1;
        out_dims[last] = self.weight.dim(0)?;
        Ok(ys.reshape(out_dims)?)
    }
}
