//! The Mamba-2 token mixer: input projection, causal depthwise convolution with SiLU, the chunked selective
//! scan ([`super::ssd`]) in f32, the gated RMSNorm per group (gate first, then normalise), output projection.
//! transformers: `GraniteMoeHybridMambaLayer` (models/granitemoehybrid), `NemotronHMamba2Mixer`
//! (models/nemotron_h), both on their PyTorch path.

use candle_core::{DType, Tensor};

use super::linear::Linear;
use super::norm::normalize;
use super::ssd::{scan, ScanInputs};
use crate::error::{Error, Result};
use crate::model::descriptor::Mamba2Descriptor;
use crate::model::loader::WeightLoader;
use crate::model::observe::Observers;

pub struct Mamba2 {
    desc: Mamba2Descriptor,
    in_proj: Linear,
    out_proj: Linear,
    /// `[conv_dim, kernel]` and `[conv_dim]`, in the compute dtype.
    conv_weight: Tensor,
    conv_bias: Option<Tensor>,
    /// `A = -exp(A_log)`, `D` and the time-step bias, `[heads]` f32.
    a: Tensor,
    d: Tensor,
    dt_bias: Tensor,
    /// `[heads·head_dim]` f32.
    norm: Tensor,
}

impl Mamba2 {
    pub fn load(loader: &WeightLoader, desc: &Mamba2Descriptor) -> Result<Self> {
        let heads = desc.num_heads;
        let limits = desc.dt_max.is_none_or(|max| max >= desc.dt_min);
        if heads == 0
            || desc.n_groups == 0
            || !heads.is_multiple_of(desc.n_groups)
            || desc.chunk_size == 0
            || desc.conv_kernel == 0
            || !limits
        {
            return Err(Error::internal(format!(
                "{}: {heads} heads in {} groups, chunks of {}, time steps in [{}, {:?}]",
                desc.in_proj, desc.n_groups, desc.chunk_size, desc.dt_min, desc.dt_max
            )));
        }
        let (conv_dim, kernel) = (desc.conv_dim(), desc.conv_kernel);
        let f32_vector = |name: &str, len: usize| -> Result<Tensor> {
            Ok(loader.tensor_shaped(name, &[len])?.to_dtype(DType::F32)?)
        };
        let conv_weight = loader.tensor_shaped(&format!("{}.weight", desc.conv1d), &[conv_dim, 1, kernel])?;
        let conv_bias = if desc.conv_bias {
            Some(loader.tensor_shaped(&format!("{}.bias", desc.conv1d), &[conv_dim])?)
        } else {
            None
        };
        Ok(Mamba2 {
            in_proj: Linear::load(loader, &desc.in_proj, desc.proj_bias)?,
            out_proj: Linear::load(loader, &desc.out_proj, desc.proj_bias)?,
            conv_weight: conv_weight.reshape((conv_dim, kernel))?,
            conv_bias,
            a: f32_vector(&desc.a_log, heads)?.exp()?.neg()?,
            d: f32_vector(&desc.d, heads)?,
            dt_bias: f32_vector(&desc.dt_bias, heads)?,
            norm: f32_vector(&desc.norm, heads * desc.head_dim)?,
            desc: desc.clone(),
        })
    }

    /// `xs [B, T, H]` → `[B, T, H]`.
    pub fn forward(&self, xs: &Tensor, observers: &mut Observers) -> Result<Tensor> {
        let (batch, len, _) = xs.dims3()?;
        let desc = &self.desc;
        let (heads, head_dim, groups, state) = (desc.num_heads, desc.head_dim, desc.n_groups, desc.state_size);
        let inner = heads * head_dim;
        observers.record_input(&[&self.in_proj.name], xs)?;
        let projected = self.in_proj.forward(xs)?;
        let gate = projected.narrow(2, 0, inner)?;
        let x_b_c = self.convolve(&projected.narrow(2, inner, desc.conv_dim())?)?.silu()?.to_dtype(DType::F32)?;
        let x = x_b_c.narrow(2, 0, inner)?.reshape((batch, len, heads, head_dim))?;
        let b = x_b_c.narrow(2, inner, groups * state)?.reshape((batch, len, groups, state))?;
        let c = x_b_c.narrow(2, inner + groups * state, groups * state)?.reshape((batch, len, groups, state))?;
        let dt = self.time_steps(&projected.narrow(2, inner + desc.conv_dim(), heads)?)?;
        let inputs = ScanInputs { x: &x, dt: &dt, a: &self.a, b: &b, c: &c, d: &self.d };
        let scanned = scan(&inputs, desc.chunk_size)?.reshape((batch, len, inner))?;
        observers.check(|| format!("the output of the scan of {}", desc.in_proj), &scanned)?;
        let normed = self.gated_norm(&scanned, &gate)?.to_dtype(xs.dtype())?;
        observers.record_input(&[&self.out_proj.name], &normed)?;
        self.out_proj.forward(&normed)
    }

    /// The causal depthwise convolution over positions, with its bias: `[B, T, C]` → `[B, T, C]`. Output t of
    /// channel c is `Σ_k w[c, k] · x[c, t − (kernel − 1) + k]`, positions before the first being zero.
    fn convolve(&self, xs: &Tensor) -> Result<Tensor> {
        let (_, len, _) = xs.dims3()?;
        let kernel = self.desc.conv_kernel;
        let padded = xs.pad_with_zeros(1, kernel - 1, 0)?;
        let mut out = match &self.conv_bias {
            Some(bias) => bias.broadcast_as(xs.shape())?.contiguous()?,
            None => xs.zeros_like()?,
        };
        for k in 0..kernel {
            let tap = self.conv_weight.narrow(1, k, 1)?.squeeze(1)?;
            out = (out + padded.narrow(1, k, len)?.broadcast_mul(&tap)?)?;
        }
        Ok(out)
    }

    /// `clamp(softplus(dt + dt_bias), dt_min, dt_max)` in f32 (`[B, T, heads]`), softplus as torch computes it
    /// (`log1p(exp(x))`, and `x` itself above 20).
    fn time_steps(&self, dt: &Tensor) -> Result<Tensor> {
        let dt = dt.to_dtype(DType::F32)?.broadcast_add(&self.dt_bias)?;
        let (min, max) = (self.desc.dt_min as f32, self.desc.dt_max.map_or(f32::INFINITY, |m| m as f32));
        let values: Vec<f32> = dt
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(|x| if x > 20.0 { x } else { x.exp().ln_1p() })
            .map(|x| x.clamp(min, max))
            .collect();
        Ok(Tensor::from_vec(values, dt.shape(), dt.device())?)
    }

    /// `y · silu(z)` RMS-normalised over each group of channels, times the norm weight, in f32 (`[B, T, I]`).
    fn gated_norm(&self, ys: &Tensor, gate: &Tensor) -> Result<Tensor> {
        let (batch, len, inner) = ys.dims3()?;
        let groups = self.desc.n_groups;
        let gated = ys.mul(&gate.to_dtype(DType::F32)?.silu()?)?;
        let grouped = gated.reshape((batch, len, groups, inner / groups))?;
        let normed = normalize(&grouped, self.desc.norm_eps)?.reshape((batch, len, inner))?;
        Ok(normed.broadcast_mul(&self.norm)?)
    }
}
