//! DeepSeek multi-head latent attention: queries through an optional low-rank bottleneck, keys and values
//! from a compressed latent plus a shared rotary key (LongCat-Flash scales the queries and the latent by constants;
//! Kimi-Linear, which has no position embedding, leaves the rotary channels unrotated); with DeepSeek sparse
//! attention, each query attends only to the keys the lightning indexer chooses (or those an earlier layer's
//! indexer chose).
//! transformers: models/deepseek_v3/modeling_deepseek_v3.py `DeepseekV3Attention`, models/deepseek_v32
//! `DeepseekV32Attention`, models/glm_moe_dsa `GlmMoeDsaAttention`, models/longcat_flash `LongcatFlashMLA`,
//! models/kimi_linear `KimiLinearAttention`.

use candle_core::Tensor;

use super::attend::{attend, attend_masked, Pattern};
use super::indexer::Indexer;
use super::key_selection::{ChosenKeys, KeySelection};
use super::linear::Linear;
use super::norm::RmsNorm;
use super::rope::Rope;
use crate::error::{Error, Result};
use crate::model::decoder::required_rope;
use crate::model::descriptor::{MlaDescriptor, MlaLoraScales, SparseAttentionDescriptor};
use crate::model::loader::WeightLoader;
use crate::model::observe::{attention_module, Observers};

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
    lora_scales: Option<MlaLoraScales>,
    /// The rope rotates the `rope_dim` channels of the queries and of the shared key.
    rotate: bool,
    sparse: Option<Sparse>,
}

/// DeepSeek sparse attention: the number of keys each query keeps, and the layer's indexer (none: the keys of the
/// last layer that has one).
struct Sparse {
    top_k: usize,
    indexer: Option<Indexer>,
}

impl Sparse {
    fn load(loader: &WeightLoader, desc: &SparseAttentionDescriptor, query: &QueryPath) -> Result<Self> {
        if desc.indexer.is_some() && matches!(query, QueryPath::Direct(_)) {
            return Err(Error::internal("the indexer of sparse attention reads the query latent: MLA needs q_a_proj"));
        }
        if desc.top_k == 0 {
            return Err(Error::internal("sparse attention keeps no key (top_k 0)"));
        }
        Ok(Sparse { top_k: desc.top_k, indexer: desc.indexer.as_ref().map(|i| Indexer::load(loader, i)).transpose()? })
    }
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
        let sparse = desc.sparse.as_ref().map(|sparse| Sparse::load(loader, sparse, &query)).transpose()?;
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
            lora_scales: desc.lora_scales,
            rotate: desc.rope,
            sparse,
        })
    }

    fn indexer(&self) -> Option<&Indexer> {
        self.sparse.as_ref().and_then(|sparse| sparse.indexer.as_ref())
    }

    /// The queries' projection `[B, T, heads·qk_head_dim]` and the normed query latent (low-rank path), recording
    /// the inputs of every linear that reads the layer's input or the latent (the indexer's included).
    fn query(&self, xs: &Tensor, observers: &mut Observers) -> Result<(Tensor, Option<Tensor>)> {
        let first = match &self.query {
            QueryPath::Direct(q) => &q.name,
            QueryPath::LowRank { a, .. } => &a.name,
        };
        let mut inputs = vec![first.as_str(), self.kv_a.name.as_str()];
        inputs.extend(self.indexer().map(Indexer::input_modules).into_iter().flatten());
        observers.record_input(&inputs, xs)?;
        match &self.query {
            QueryPath::Direct(q) => Ok((q.forward(xs)?, None)),
            QueryPath::LowRank { a, norm, b } => {
                let latent = norm.forward(&a.forward(xs)?)?;
                let mut readers = vec![b.name.as_str()];
                readers.extend(self.indexer().map(Indexer::latent_module));
                observers.record_input(&readers, &latent)?;
                Ok((b.forward(&latent)?, Some(latent)))
            }
        }
    }

    /// With sparse attention, the keys each sequence's queries attend to: chosen by this layer's indexer (and
    /// kept in `chosen` for the layers after it), or those in `chosen`.
    fn chosen_keys<'c>(
        &self,
        xs: &Tensor,
        latent: Option<&Tensor>,
        rope: Option<&Rope>,
        chosen: &'c mut ChosenKeys,
    ) -> Result<Option<&'c [KeySelection]>> {
        let Some(sparse) = &self.sparse else { return Ok(None) };
        if let Some(indexer) = &sparse.indexer {
            let latent = latent.ok_or_else(|| Error::internal("the indexer needs the MLA query latent"))?;
            let rope = rope.ok_or_else(|| Error::internal("the indexer of sparse attention rotates its keys"))?;
            chosen.replace(indexer.choose(xs, latent, rope, sparse.top_k)?);
        }
        chosen.current().map(Some)
    }

    /// `xs [B, T, H]` → `[B, T, H]`; `chosen` carries the keys an indexer chose from layer to layer; `rope` is the
    /// model's rotary embedding, which an MLA that rotates needs.
    pub fn forward(
        &self,
        xs: &Tensor,
        rope: Option<&Rope>,
        chosen: &mut ChosenKeys,
        observers: &mut Observers,
    ) -> Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        let heads = self.num_heads;
        let (mut q, latent) = self.query(xs, observers)?;
        if let Some(scales) = &self.lora_scales {
            q = (q * scales.query)?;
        }
        let q = q.reshape((b, t, heads, self.nope + self.rope_dim))?.transpose(1, 2)?;
        let q_pass = q.narrow(3, 0, self.nope)?;
        let q_rot = q.narrow(3, self.nope, self.rope_dim)?.contiguous()?;

        let compressed = self.kv_a.forward(xs)?;
        let k_latent = compressed.narrow(2, 0, self.kv_lora_rank)?.contiguous()?;
        let k_rot = compressed.narrow(2, self.kv_lora_rank, self.rope_dim)?;
        let mut k_latent = self.kv_a_norm.forward(&k_latent)?;
        if let Some(scales) = &self.lora_scales {
            k_latent = (k_latent * scales.kv_latent)?;
        }
        observers.record_input(&[&self.kv_b.name], &k_latent)?;
        let kv = self.kv_b.forward(&k_latent)?.reshape((b, t, heads, self.nope + self.v_dim))?.transpose(1, 2)?;
        let k_pass = kv.narrow(3, 0, self.nope)?;
        let value = kv.narrow(3, self.nope, self.v_dim)?.contiguous()?;
        let k_rot = k_rot.reshape((b, 1, t, self.rope_dim))?.contiguous()?;

        let (q_rot, k_rot) = if self.rotate {
            let rope = required_rope(rope)?;
            (rope.apply(&q_rot)?, rope.apply(&k_rot)?)
        } else {
            (q_rot, k_rot)
        };
        let k_rot = k_rot.expand((b, heads, t, self.rope_dim))?;
        let query = Tensor::cat(&[&q_pass, &q_rot], 3)?.contiguous()?;
        let key = Tensor::cat(&[&k_pass, &k_rot], 3)?.contiguous()?;
        observers.record_kv(&attention_module(&self.o.name), &key, &value)?;
        let out = match self.chosen_keys(xs, latent.as_ref(), rope, chosen)? {
            Some(keys) => attend_chosen(&query, &key, &value, self.scaling, keys)?,
            None => attend(&query, &key, &value, self.scaling, &Pattern::CAUSAL)?,
        };
        let out = out.transpose(1, 2)?.reshape((b, t, heads * self.v_dim))?;
        observers.record_input(&[&self.o.name], &out)?;
        self.o.forward(&out)
    }
}

/// Attention `[B, heads, T, D]` where each sequence's queries see the keys chosen for it (sequences that keep every
/// key the causal mask allows attend together).
fn attend_chosen(q: &Tensor, k: &Tensor, v: &Tensor, scaling: f64, keys: &[KeySelection]) -> Result<Tensor> {
    let (b, _, t, _) = q.dims4()?;
    if keys.len() != b {
        return Err(Error::internal(format!("keys chosen for {} sequences, attention over {b}", keys.len())));
    }
    if keys.iter().all(|chosen| *chosen == KeySelection::Causal) {
        return attend(q, k, v, scaling, &Pattern::CAUSAL);
    }
    let outputs = keys
        .iter()
        .enumerate()
        .map(|(i, chosen)| {
            let mask = chosen.mask(t, q.device())?;
            attend_masked(&q.narrow(0, i, 1)?, &k.narrow(0, i, 1)?, &v.narrow(0, i, 1)?, scaling, &mask)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&outputs, 0)?)
}
