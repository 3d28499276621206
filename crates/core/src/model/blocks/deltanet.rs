//! The Gated DeltaNet token mixer of Qwen3-Next and Qwen3.5: q, k, v, the output gate z, the rate input b and
//! the decay input a projected from the hidden states (grouped by key head in one projection on Qwen3-Next,
//! in four on Qwen3.5); q, k, v through a depthwise causal convolution and SiLU; `β = sigmoid(b)`,
//! `g = −exp(A_log) · softplus(a + dt_bias)`; the gated delta rule ([`super::delta_rule`], f32); per value head
//! an RMSNorm gated by `silu(z)`; the output projection. The delta rule runs on the host CPU in f32 whatever the
//! compute device (its inputs are copied there and its output back), as transformers computes it in f32.
//! transformers: models/qwen3_next `Qwen3NextGatedDeltaNet`, models/qwen3_5_moe `Qwen3_5MoeGatedDeltaNet`
//! (without a cache: whole sequences, no padding).

use candle_core::{DType, Tensor};

use super::causal_conv::CausalConv;
use super::delta_rule::{gated_delta_rule, Decay, DeltaInputs, DeltaShape};
use super::linear::Linear;
use super::norm::{GatedRmsNorm, OutputGate};
use super::ops::softplus;
use crate::error::Result;
use crate::model::descriptor::{DeltaNetProjections, GatedDeltaNetDescriptor};
use crate::model::loader::WeightLoader;
use crate::model::observe::Observers;

enum Projections {
    /// `in_proj_qkvz`, `in_proj_ba`, grouped by key head.
    Grouped { qkvz: Linear, ba: Linear },
    /// `in_proj_qkv`, `in_proj_z`, `in_proj_b`, `in_proj_a`.
    Split { qkv: Linear, z: Linear, b: Linear, a: Linear },
}

/// The projections' outputs: the convolution's input `[B, T, 2·key_dim + value_dim]` (q, k, v), z
/// `[B, T, value_heads, value_dim]`, b and a `[B, T, value_heads]`.
struct Projected {
    mixed: Tensor,
    z: Tensor,
    b: Tensor,
    a: Tensor,
}

#[derive(Clone, Copy)]
struct Dims {
    key_heads: usize,
    value_heads: usize,
    key_dim: usize,
    value_dim: usize,
}

pub struct GatedDeltaNet {
    /// Module path of the mixer (messages).
    name: String,
    projections: Projections,
    conv: CausalConv,
    /// `[value_heads]`, f32.
    dt_bias: Vec<f32>,
    /// `−exp(A_log)` `[value_heads]`, f32.
    decay_rate: Vec<f32>,
    norm: GatedRmsNorm,
    out_proj: Linear,
    dims: Dims,
}

/// The values of a small `[n]` tensor, in f32.
pub(super) fn host_vector(loader: &WeightLoader, name: &str, n: usize) -> Result<Vec<f32>> {
    Ok(loader.tensor_shaped(name, &[n])?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

impl GatedDeltaNet {
    pub fn load(loader: &WeightLoader, desc: &GatedDeltaNetDescriptor, eps: f64) -> Result<Self> {
        let dims = Dims {
            key_heads: desc.num_key_heads,
            value_heads: desc.num_value_heads,
            key_dim: desc.key_head_dim,
            value_dim: desc.value_head_dim,
        };
        let linear = |module: &str| Linear::load(loader, module, false);
        let projections = match &desc.projections {
            DeltaNetProjections::Grouped { qkvz, ba } => Projections::Grouped { qkvz: linear(qkvz)?, ba: linear(ba)? },
            DeltaNetProjections::Split { qkv, z, b, a } => {
                Projections::Split { qkv: linear(qkv)?, z: linear(z)?, b: linear(b)?, a: linear(a)? }
            }
        };
        let channels = 2 * dims.key_heads * dims.key_dim + dims.value_heads * dims.value_dim;
        let conv = CausalConv::new(&loader.tensor_shaped(&desc.conv1d, &[channels, 1, desc.conv_kernel])?)?;
        // transformers: `-self.A_log.float().exp()`.
        let decay_rate = host_vector(loader, &desc.a_log, dims.value_heads)?.iter().map(|a| -a.exp()).collect();
        Ok(GatedDeltaNet {
            name: desc.out_proj.trim_end_matches(".out_proj").to_string(),
            projections,
            conv,
            dt_bias: host_vector(loader, &desc.dt_bias, dims.value_heads)?,
            decay_rate,
            norm: GatedRmsNorm {
                weight: loader.tensor_shaped(&desc.norm, &[dims.value_dim])?,
                eps,
                gate: OutputGate::Silu,
            },
            out_proj: linear(&desc.out_proj)?,
            dims,
        })
    }

    /// The projections of `xs [B, T, H]`, recording their input.
    fn project(&self, xs: &Tensor, observers: &mut Observers) -> Result<Projected> {
        let (b, t, _) = xs.dims3()?;
        let Dims { key_heads, value_heads, key_dim, value_dim } = self.dims;
        match &self.projections {
            Projections::Grouped { qkvz, ba } => {
                observers.record_input(&[&qkvz.name, &ba.name], xs)?;
                let group = value_heads / key_heads;
                let qkvz = qkvz.forward(xs)?.reshape((b, t, key_heads, 2 * key_dim + 2 * group * value_dim))?;
                let part = |from: usize, size: usize| qkvz.narrow(3, from, size)?.reshape((b, t, ()));
                let mixed = Tensor::cat(
                    &[part(0, key_dim)?, part(key_dim, key_dim)?, part(2 * key_dim, group * value_dim)?],
                    2,
                )?;
                let z = part(2 * key_dim + group * value_dim, group * value_dim)?.reshape((
                    b,
                    t,
                    value_heads,
                    value_dim,
                ))?;
                let ba = ba.forward(xs)?.reshape((b, t, key_heads, 2 * group))?;
                let rates = ba.narrow(3, 0, group)?.reshape((b, t, value_heads))?;
                let decays = ba.narrow(3, group, group)?.reshape((b, t, value_heads))?;
                Ok(Projected { mixed, z, b: rates, a: decays })
            }
            Projections::Split { qkv, z, b: rate, a: decay } => {
                observers.record_input(&[&qkv.name, &z.name, &rate.name, &decay.name], xs)?;
                Ok(Projected {
                    mixed: qkv.forward(xs)?,
                    z: z.forward(xs)?.reshape((b, t, value_heads, value_dim))?,
                    b: rate.forward(xs)?,
                    a: decay.forward(xs)?,
                })
            }
        }
    }

    /// `xs [B, T, H]` → `[B, T, H]`.
    pub fn forward(&self, xs: &Tensor, observers: &mut Observers) -> Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        let Dims { key_heads, value_heads, key_dim, value_dim } = self.dims;
        let projected = self.project(xs, observers)?;
        let mixed = self.conv.forward(&projected.mixed)?.silu()?;
        observers.check(|| format!("the output of the convolution of {}", self.name), &mixed)?;
        let host = |xs: Tensor| -> Result<Vec<f32>> { Ok(xs.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?) };
        let keys = key_heads * key_dim;
        let q = host(mixed.narrow(2, 0, keys)?)?;
        let k = host(mixed.narrow(2, keys, keys)?)?;
        let v = host(mixed.narrow(2, 2 * keys, value_heads * value_dim)?)?;
        let (g, beta) = self.gates(host(projected.a)?, host(projected.b)?);
        let shape = DeltaShape { batch: b, len: t, key_heads, value_heads, key_dim, value_dim };
        let core = gated_delta_rule(shape, &DeltaInputs { q: &q, k: &k, v: &v, g: Decay::PerHead(&g), beta: &beta })?;
        let core = Tensor::from_vec(core, (b, t, value_heads, value_dim), xs.device())?.to_dtype(xs.dtype())?;
        observers.check(|| format!("the output of the delta rule of {}", self.name), &core)?;
        let normed = self.norm.forward(&core, &projected.z)?.reshape((b, t, value_heads * value_dim))?;
        observers.record_input(&[&self.out_proj.name], &normed)?;
        self.out_proj.forward(&normed)
    }

    /// The log decay `g = −exp(A_log) · softplus(a + dt_bias)` and the rate `β = sigmoid(b)` of every token and
    /// value head, from `a` and `b` `[B·T·value_heads]` (f32, as transformers computes them).
    fn gates(&self, a: Vec<f32>, b: Vec<f32>) -> (Vec<f32>, Vec<f32>) {
        let heads = self.dims.value_heads;
        let g = a
            .iter()
            .enumerate()
            .map(|(i, &a)| self.decay_rate[i % heads] * softplus(a + self.dt_bias[i % heads]))
            .collect();
        let beta = b.iter().map(|&b| 1.0 / (1.0 + (-b).exp())).collect();
        (g, beta)
    }
}
