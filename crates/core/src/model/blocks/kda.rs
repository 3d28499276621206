//! Kimi Delta Attention, Kimi-Linear's linear attention: a Gated DeltaNet whose state decays per key channel. q, k
//! and v are projected from the hidden states, each through a depthwise causal convolution and SiLU; each key
//! channel's log decay is `g = −exp(A_log) · softplus(f_b(f_a(x)) + dt_bias)` (transformers' softplus, `log(1 + eˣ)`,
//! and `x` itself above 20), each head's rate `β = sigmoid(b_proj(x))`; the gated delta rule
//! ([`super::delta_rule`], f32, on the host whatever the compute device, as transformers computes it in f32) with
//! one state per head; per head an RMSNorm gated by `sigmoid(g_b(g_a(x)))`; `o_proj`.
//! transformers: models/kimi_linear `KimiLinearDeltaAttention`, `KimiLinearForgetGate` (without a cache: whole
//! sequences, no padding).

use candle_core::{DType, Tensor};

use super::causal_conv::CausalConv;
use super::delta_rule::{gated_delta_rule, Decay, DeltaInputs, DeltaShape};
use super::deltanet::host_vector;
use super::linear::Linear;
use super::norm::{GatedRmsNorm, OutputGate};
use super::ops::sigmoid;
use crate::error::{Error, Result};
use crate::model::descriptor::KimiDeltaAttentionDescriptor;
use crate::model::loader::WeightLoader;
use crate::model::observe::Observers;

pub struct KimiDeltaAttention {
    /// Module path of the mixer (messages).
    name: String,
    q: Linear,
    k: Linear,
    v: Linear,
    /// Over q, k and v `[3·heads·head_dim]`.
    conv: CausalConv,
    f_a: Linear,
    f_b: Linear,
    /// `[heads·head_dim]`, f32.
    dt_bias: Vec<f32>,
    /// `−exp(A_log)` `[heads]`, f32.
    decay_rate: Vec<f32>,
    b: Linear,
    g_a: Linear,
    g_b: Linear,
    norm: GatedRmsNorm,
    o: Linear,
    heads: usize,
    head_dim: usize,
}

/// `log(1 + eˣ)` as transformers' `KimiLinearForgetGate` writes it (not `log1p`), and `x` itself above 20.
fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        (1.0 + x.exp()).ln()
    }
}

/// The values of a tensor, in f32 on the host.
fn host(xs: &Tensor) -> Result<Vec<f32>> {
    Ok(xs.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// The convolution over q, k and v from its stored weights: one over all `channels` (transformers' `conv1d`), or
/// one per projection (the hub's `q_conv1d`, `k_conv1d`, `v_conv1d`), joined in that order.
fn load_conv(loader: &WeightLoader, names: &[String], channels: usize, kernel: usize) -> Result<CausalConv> {
    if names.is_empty() || !channels.is_multiple_of(names.len()) {
        return Err(Error::internal(format!(
            "Kimi Delta Attention: {} convolution weights over q, k and v",
            names.len()
        )));
    }
    let part = channels / names.len();
    let weights =
        names.iter().map(|name| loader.tensor_shaped(name, &[part, 1, kernel])).collect::<Result<Vec<_>>>()?;
    CausalConv::new(&Tensor::cat(&weights, 0)?)
}

impl KimiDeltaAttention {
    pub fn load(loader: &WeightLoader, desc: &KimiDeltaAttentionDescriptor, eps: f64) -> Result<Self> {
        let (heads, head_dim) = (desc.num_heads, desc.head_dim);
        let width = heads * head_dim;
        let linear = |module: &str| Linear::load(loader, module, false);
        // transformers: `-exp(A_log.float())`, A_log stored `[1, 1, heads, 1]`.
        let a_log = loader.tensor_shaped(&desc.a_log, &[1, 1, heads, 1])?;
        let decay_rate = host(&a_log)?.iter().map(|a| -a.exp()).collect();
        Ok(KimiDeltaAttention {
            name: desc.o_proj.trim_end_matches(".o_proj").to_string(),
            q: linear(&desc.q_proj)?,
            k: linear(&desc.k_proj)?,
            v: linear(&desc.v_proj)?,
            conv: load_conv(loader, &desc.conv1d, 3 * width, desc.conv_kernel)?,
            f_a: linear(&desc.f_a_proj)?,
            f_b: linear(&desc.f_b_proj)?,
            dt_bias: host_vector(loader, &desc.dt_bias, width)?,
            decay_rate,
            b: linear(&desc.b_proj)?,
            g_a: linear(&desc.g_a_proj)?,
            g_b: linear(&desc.g_b_proj)?,
            norm: GatedRmsNorm {
                weight: loader.tensor_shaped(&desc.norm, &[head_dim])?,
                eps,
                gate: OutputGate::Sigmoid,
            },
            o: linear(&desc.o_proj)?,
            heads,
            head_dim,
        })
    }

    /// `xs [B, T, H]` → `[B, T, H]`.
    pub fn forward(&self, xs: &Tensor, observers: &mut Observers) -> Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        let (heads, dim) = (self.heads, self.head_dim);
        let width = heads * dim;
        let readers = [&self.q.name, &self.k.name, &self.v.name, &self.f_a.name, &self.b.name, &self.g_a.name];
        observers.record_input(&readers.map(String::as_str), xs)?;
        let mixed = Tensor::cat(&[self.q.forward(xs)?, self.k.forward(xs)?, self.v.forward(xs)?], 2)?;
        let mixed = self.conv.forward(&mixed)?.silu()?;
        observers.check(|| format!("the output of the convolution of {}", self.name), &mixed)?;
        let q = host(&mixed.narrow(2, 0, width)?)?;
        let k = host(&mixed.narrow(2, width, width)?)?;
        let v = host(&mixed.narrow(2, 2 * width, width)?)?;
        let g = self.log_decay(xs, observers)?;
        let beta = host(&sigmoid(&self.b.forward(xs)?)?)?;
        let shape = DeltaShape { batch: b, len: t, key_heads: heads, value_heads: heads, key_dim: dim, value_dim: dim };
        let inputs = DeltaInputs { q: &q, k: &k, v: &v, g: Decay::PerKeyChannel(&g), beta: &beta };
        let core = gated_delta_rule(shape, &inputs)?;
        let core = Tensor::from_vec(core, (b, t, heads, dim), xs.device())?.to_dtype(xs.dtype())?;
        observers.check(|| format!("the output of the delta rule of {}", self.name), &core)?;
        let gate_latent = self.g_a.forward(xs)?;
        observers.record_input(&[&self.g_b.name], &gate_latent)?;
        let gate = self.g_b.forward(&gate_latent)?.reshape((b, t, heads, dim))?;
        let normed = self.norm.forward(&core, &gate)?.reshape((b, t, width))?;
        observers.record_input(&[&self.o.name], &normed)?;
        self.o.forward(&normed)
    }

    /// The log decay `g = −exp(A_log) · softplus(f_b(f_a(x)) + dt_bias)` of every token and key channel
    /// `[B·T·heads·head_dim]`, in f32 as transformers computes it.
    fn log_decay(&self, xs: &Tensor, observers: &mut Observers) -> Result<Vec<f32>> {
        let latent = self.f_a.forward(xs)?;
        observers.record_input(&[&self.f_b.name], &latent)?;
        let projected = host(&self.f_b.forward(&latent)?)?;
        let (width, dim) = (self.dt_bias.len(), self.head_dim);
        Ok(projected
            .iter()
            .enumerate()
            .map(|(i, &f)| {
                let channel = i % width;
                self.decay_rate[channel / dim] * softplus(f + self.dt_bias[channel])
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::softplus;

    #[test]
    fn softplus_is_log_of_one_plus_the_exponential_and_the_identity_above_20() {
        assert_eq!(softplus(20.5), 20.5);
        assert_eq!(softplus(0.0), 2f32.ln());
        // log(1 + eˣ) rounds 1 + eˣ first: far below 0 it is 0, where log1p would keep eˣ.
        assert_eq!(softplus(-20.0), 0.0);
    }
}
