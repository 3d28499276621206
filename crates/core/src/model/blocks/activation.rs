//! The activation of gated MLPs and experts, `act(gate) · up`, under the names transformers' `ACT2FN` gives
//! them: `silu`; `gelu`, exact (with erf); `gelu_pytorch_tanh` and `gelu_new`, its tanh approximation
//! `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`. The GELUs are computed in f32 whatever the compute dtype and
//! rounded once, as torch's `gelu` kernels compute them in their f32 "opmath" for bf16 and f16 (transformers'
//! `gelu_new` is a Python formula, rounded at each step in bf16: the same values in f32, within a few bf16 ulps
//! in bf16).
//! transformers: activations.py `GELUActivation`, `GELUTanh`, `NewGELUActivation`.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::model::descriptor::ExpertActivation;

/// `act(gate) · up` for a gated activation (`silu`, `gelu`, `gelu_tanh`), in `gate`'s dtype.
pub fn gated(activation: ExpertActivation, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    Ok((gate_activation(activation, gate)? * up)?)
}

/// `act(gate)` for a gated activation.
pub fn gate_activation(activation: ExpertActivation, gate: &Tensor) -> Result<Tensor> {
    let in_f32 = |f: fn(&Tensor) -> candle_core::Result<Tensor>| -> Result<Tensor> {
        Ok(f(&gate.to_dtype(DType::F32)?)?.to_dtype(gate.dtype())?)
    };
    match activation {
        ExpertActivation::Silu => Ok(gate.silu()?),
        ExpertActivation::Gelu => in_f32(Tensor::gelu_erf),
        ExpertActivation::GeluTanh => in_f32(Tensor::gelu),
        ExpertActivation::GptOss | ExpertActivation::Relu2 => {
            Err(Error::internal(format!("{activation:?} is not the activation of a gate")))
        }
    }
}

/// Whether `activation` multiplies `act(gate)` by `up` (and so needs both projections).
pub fn is_gated(activation: ExpertActivation) -> bool {
    matches!(activation, ExpertActivation::Silu | ExpertActivation::Gelu | ExpertActivation::GeluTanh)
}
