//! DeepSeek multi-head latent attention: queries through an optional low-rank bottleneck, keys and values
//! from a compressed latent plus a shared rotary key.
//! transformers: models/deepseek_v3/modeling_deepseek_v3.py `DeepseekV3Attention`.

use candle_core::Tensor;

use super::attention::{attend, Pattern};
use super::linear::Linear;
use super::norm::RmsNorm;
use super::rope::Rope;
use crate::error::{Error, Result};
use crate::model::descriptor::MlaDescriptor;
use crate::model::loader::WeightLoader;
use crate::model::observe::Observers;

enum QueryPath {
    Direct(Linear),
    LowRank { a: Linear, norm: RmsNorm, b: Linear },
}

pub struct Mla {
    query: QueryPath,
    kv_a: Linear,
    kv_a_norm: RmsNorm,
    kv_b: Linear,
    o: Linear,
    num_heads: usize,
    kv_lora_rank: usize,
    nope: usize,
    rope_dim: usize,
    v_dim: usize,
    scaling: f64,
}

impl Mla {
    pub fn load(loader: &WeightLoader, desc: &MlaDescriptor) -> Result<Self> {
        let eps = desc.lora_norm_eps;
        let query = match (&desc.q_proj, &desc.q_a_proj, &desc.q_a_norm, &desc.q_b_proj) {
            (Some(q), _, _, _) => QueryPath::Direct(Linear::load(loader, q, false)?),
            (None, Some(a), Some(norm), Some(b)) => QueryPath::LowRank {
                a: Linear::load(loader, a, false)?,
                norm: RmsNorm::new(loader.tensor(norm)?, eps),
                b: Linear::load(loader, b, false)?,
            },
            _ => return Err(Error::internal("MLA needs q_proj or q_a_proj + q_a_norm + q_b_proj")),
        };
        Ok(Mla {
            query,
            kv_a: Linear::load(loader, &desc.kv_a_proj, false)?,
            kv_a_norm: RmsNorm::new(loader.tensor(&desc.kv_a_norm)?, eps),
            kv_b: Linear::load(loader, &desc.kv_b_proj, false)?,
            o: Linear::load(loader, &desc.o_proj, false)?,
            num_heads: desc.num_heads,
            kv_lora_rank: desc.kv_lora_rank,
            nope: desc.qk_nope_head_dim,
            rope_dim: desc.qk_rope_head_dim,
            v_dim: desc.v_head_dim,
            scaling: desc.scaling,
        })
    }

    pub fn forward(&self, xs: &Tensor, rope: &Rope, observers: &mut Observers) -> Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        let heads = self.num_heads;
        let q = match &self.query {
            QueryPath::Direct(q) => {
                observers.record_input(&[&q.name, &self.kv_a.name], xs)?;
                q.forward(xs)?
            }
            QueryPath::LowRank { a, norm, b } => {
                observers.record_input(&[&a.name, &self.kv_a.name], xs)?;
                let latent = norm.forward(&a.forward(xs)?)?;
                observers.record_input(&[&b.name], &latent)?;
                b.forward(&latent)?
            }
        };
        let q = q.reshape((b, t, heads, self.nope + self.rope_dim))?.transpose(1, 2)?;
        let q_pass = q.narrow(3, 0, self.nope)?;
        let q_rot = q.narrow(3, self.nope, self.rope_dim)?.contiguous()?;

        let compressed = self.kv_a.forward(xs)?;
        let k_latent = compressed.narrow(2, 0, self.kv_lora_rank)?.contiguous()?;
        let k_rot = compressed.narrow(2, self.kv_lora_rank, self.rope_dim)?;
        let k_latent = self.kv_a_norm.forward(&k_latent)?;
        observers.record_input(&[&self.kv_b.name], &k_latent)?;
        let kv = self.kv_b.forward(&k_latent)?.reshape((b, t, heads, self.nope + self.v_dim))?.transpose(1, 2)?;
        let k_pass = kv.narrow(3, 0, self.nope)?;
        let value = kv.narrow(3, self.nope, self.v_dim)?.contiguous()?;
        let k_rot = k_rot.reshape((b, 1, t, self.rope_dim))?.contiguous()?;

        let q_rot = rope.apply(&q_rot)?;
        let k_rot = rope.apply(&k_rot)?.expand((b, heads, t, self.rope_dim))?;
        let query = Tensor::cat(&[&q_pass, &q_rot], 3)?.contiguous()?;
        let key = Tensor::cat(&[&k_pass, &k_rot], 3)?.contiguous()?;
        let out = attend(&query, &key, &value, self.scaling, &Pattern::CAUSAL)?;
        let out = out.transpose(1, 2)?.reshape((b, t, heads * self.v_dim))?;
        observers.record_input(&[&self.o.name], &out)?;
        self.o.forward(&out)
    }
}
