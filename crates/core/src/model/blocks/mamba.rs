//! The Mamba (Mamba-1) token mixer: input projection into x and the gate z; causal depthwise convolution of x with
//! its bias, then SiLU; the selective projection into dt, B and C, each RMS-normalised where the mixer has those
//! norms (Jamba); the time step `softplus(dt · dt_projᵀ + dt_proj.bias)`; the selective scan
//! ([`super::selective_scan`]) in f32; `y · silu(z)`; output projection.
//! transformers: `JambaMambaMixer` (models/jamba) on its PyTorch path, without a cache.
//!
//! `dt_proj`'s weight multiplies the normalised dt directly (transformers never calls the module), so no input of
//! it is recorded.

use candle_core::{DType, Tensor};

use super::causal_conv::CausalConv;
use super::linear::Linear;
use super::norm::RmsNorm;
use super::ops::softplus_tensor;
use super::selective_scan::{selective_scan, SelectiveScanInputs};
use crate::error::{Error, Result};
use crate::model::descriptor::MambaDescriptor;
use crate::model::loader::WeightLoader;
use crate::model::observe::Observers;

/// The RMSNorms of dt, B and C.
struct ParameterNorms {
    dt: RmsNorm,
    b: RmsNorm,
    c: RmsNorm,
}

pub struct Mamba {
    desc: MambaDescriptor,
    in_proj: Linear,
    x_proj: Linear,
    /// `dt_proj`'s weight, without its bias.
    dt_proj: Linear,
    out_proj: Linear,
    conv: CausalConv,
    conv_bias: Option<Tensor>,
    norms: Option<ParameterNorms>,
    /// `[intermediate]` f32: added to the time step before the softplus.
    dt_bias: Tensor,
    /// `A = -exp(A_log)` `[intermediate, state]` and `D` `[intermediate]`, f32.
    a: Tensor,
    d: Tensor,
}

impl Mamba {
    pub fn load(loader: &WeightLoader, desc: &MambaDescriptor) -> Result<Self> {
        let (inner, state, rank, kernel) = (desc.intermediate_size, desc.state_size, desc.dt_rank, desc.conv_kernel);
        if inner == 0 || state == 0 || rank == 0 || kernel == 0 {
            return Err(Error::internal(format!(
                "{}: intermediate {inner}, state {state}, dt rank {rank}, kernel {kernel}",
                desc.in_proj
            )));
        }
        let f32_tensor = |name: &str, shape: &[usize]| -> Result<Tensor> {
            Ok(loader.tensor_shaped(name, shape)?.to_dtype(DType::F32)?)
        };
        let conv_bias =
            if desc.conv_bias { Some(loader.tensor_shaped(&format!("{}.bias", desc.conv1d), &[inner])?) } else { None };
        Ok(Mamba {
            in_proj: Linear::load(loader, &desc.in_proj, desc.proj_bias)?,
            x_proj: Linear::load(loader, &desc.x_proj, false)?,
            dt_proj: Linear::load(loader, &desc.dt_proj, false)?,
            out_proj: Linear::load(loader, &desc.out_proj, desc.proj_bias)?,
            conv: CausalConv::new(&loader.tensor_shaped(&format!("{}.weight", desc.conv1d), &[inner, 1, kernel])?)?,
            conv_bias,
            norms: parameter_norms(loader, desc)?,
            dt_bias: f32_tensor(&format!("{}.bias", desc.dt_proj), &[inner])?,
            a: f32_tensor(&desc.a_log, &[inner, state])?.exp()?.neg()?,
            d: f32_tensor(&desc.d, &[inner])?,
            desc: desc.clone(),
        })
    }

    /// `xs [B, T, H]` → `[B, T, H]`.
    pub fn forward(&self, xs: &Tensor, observers: &mut Observers) -> Result<Tensor> {
        let (inner, state, rank) = (self.desc.intermediate_size, self.desc.state_size, self.desc.dt_rank);
        observers.record_input(&[&self.in_proj.name], xs)?;
        let projected = self.in_proj.forward(xs)?;
        let gate = projected.narrow(2, inner, inner)?;
        let mut convolved = self.conv.forward(&projected.narrow(2, 0, inner)?)?;
        if let Some(bias) = &self.conv_bias {
            convolved = convolved.broadcast_add(bias)?;
        }
        let x = convolved.silu()?;
        observers.record_input(&[&self.x_proj.name], &x)?;
        let parameters = self.x_proj.forward(&x)?;
        let (mut dt, mut b, mut c) = (
            parameters.narrow(2, 0, rank)?,
            parameters.narrow(2, rank, state)?,
            parameters.narrow(2, rank + state, state)?,
        );
        if let Some(norms) = &self.norms {
            (dt, b, c) = (norms.dt.forward(&dt)?, norms.b.forward(&b)?, norms.c.forward(&c)?);
        }
        let dt = self.dt_proj.forward(&dt)?.to_dtype(DType::F32)?.broadcast_add(&self.dt_bias)?;
        let (x, dt, b, c) =
            (x.to_dtype(DType::F32)?, softplus_tensor(&dt)?, b.to_dtype(DType::F32)?, c.to_dtype(DType::F32)?);
        let inputs = SelectiveScanInputs { x: &x, dt: &dt, a: &self.a, b: &b, c: &c, d: &self.d };
        let scanned = selective_scan(&inputs)?;
        observers.check(|| format!("the output of the scan of {}", self.desc.in_proj), &scanned)?;
        let gated = scanned.mul(&gate.to_dtype(DType::F32)?.silu()?)?.to_dtype(xs.dtype())?;
        observers.record_input(&[&self.out_proj.name], &gated)?;
        self.out_proj.forward(&gated)
    }
}

/// The RMSNorms of dt `[dt_rank]`, B and C `[state]` (all three or none), plain weights, the descriptor's eps.
fn parameter_norms(loader: &WeightLoader, desc: &MambaDescriptor) -> Result<Option<ParameterNorms>> {
    let norm = |name: &str, len: usize| -> Result<RmsNorm> {
        Ok(RmsNorm::new(loader.tensor_shaped(name, &[len])?, desc.norm_eps))
    };
    match (&desc.dt_norm, &desc.b_norm, &desc.c_norm) {
        (Some(dt), Some(b), Some(c)) => Ok(Some(ParameterNorms {
            dt: norm(dt, desc.dt_rank)?,
            b: norm(b, desc.state_size)?,
            c: norm(c, desc.state_size)?,
        })),
        (None, None, None) => Ok(None),
        _ => Err(Error::internal(format!("{}: the dt, B and C norms go together", desc.in_proj))),
    }
}
