//! The lightning indexer of DeepSeek sparse attention: its own small projections score every key a query sees,
//! `score(s, t) = Σ_h w_h(s) · relu(q_h(s) · k(t) · head_dim^-½)`, and the scores choose the keys the query attends
//! to ([`super::key_selection`]). q comes from the MLA query latent, one key per position from the layer's input
//! through a LayerNorm, both rotated on their leading `rope_dim` dimensions; the head weights `w` come from an f32
//! projection of the input scaled by `heads^-½`. Scores in f32, as transformers computes them.
//! transformers: models/deepseek_v32 `DeepseekV32Indexer`, models/glm_moe_dsa `GlmMoeDsaIndexer`.

use candle_core::{DType, Tensor};

use super::key_selection::{KeyChooser, KeySelection};
use super::linear::Linear;
use super::norm::HiddenNorm;
use super::rope::Rope;
use crate::error::{Error, Result};
use crate::model::descriptor::IndexerDescriptor;
use crate::model::loader::WeightLoader;

/// Bytes of f32 per-head scores computed at once: a sequence's queries are scored a block of rows at a time.
const SCORES_BYTES_PER_BLOCK: usize = 64 << 20;

pub struct Indexer {
    wq_b: Linear,
    wk: Linear,
    /// In f32, as transformers keeps it (`_keep_in_fp32_modules`), fed the input in f32.
    weights_proj: Linear,
    k_norm: HiddenNorm,
    num_heads: usize,
    head_dim: usize,
    rope_dim: usize,
    rope_interleaved: bool,
}

impl Indexer {
    pub fn load(loader: &WeightLoader, desc: &IndexerDescriptor) -> Result<Self> {
        let weights = Linear::load(loader, &desc.weights_proj, false)?;
        let k_norm_bias = format!("{}.bias", desc.k_norm.strip_suffix(".weight").unwrap_or(&desc.k_norm));
        let k_norm = HiddenNorm::Layer {
            weight: loader.tensor_shaped(&desc.k_norm, &[desc.head_dim])?,
            bias: loader.tensor_shaped(&k_norm_bias, &[desc.head_dim])?,
            eps: desc.k_norm_eps,
        };
        if desc.rope_dim > desc.head_dim {
            return Err(Error::internal(format!(
                "indexer: rope on {} dimensions of heads of {}",
                desc.rope_dim, desc.head_dim
            )));
        }
        Ok(Indexer {
            wq_b: Linear::load(loader, &desc.wq_b, false)?,
            wk: Linear::load(loader, &desc.wk, false)?,
            weights_proj: Linear::from_weight(&weights.name, weights.weight.to_dtype(DType::F32)?, None),
            k_norm,
            num_heads: desc.num_heads,
            head_dim: desc.head_dim,
            rope_dim: desc.rope_dim,
            rope_interleaved: desc.rope_interleaved,
        })
    }

    /// The linears that read the layer's input (what observers record them under).
    pub fn input_modules(&self) -> [&str; 2] {
        [&self.wk.name, &self.weights_proj.name]
    }

    /// The linear that reads the MLA query latent.
    pub fn latent_module(&self) -> &str {
        &self.wq_b.name
    }

    /// The keys each sequence's queries attend to: `xs [B, T, H]` the layer's input, `latent [B, T, q_lora_rank]`
    /// the normed query latent. A sequence of no more than `top_k` positions keeps every key the causal mask lets
    /// each query see, whatever the scores, so none are computed for it.
    pub fn choose(&self, xs: &Tensor, latent: &Tensor, rope: &Rope, top_k: usize) -> Result<Vec<KeySelection>> {
        let (b, t, _) = xs.dims3()?;
        if t <= top_k {
            return Ok(vec![KeySelection::Causal; b]);
        }
        if rope.rotary_dim() != self.rope_dim {
            return Err(Error::internal(format!(
                "indexer: rope on {} dimensions, but the model's rope rotates {}",
                self.rope_dim,
                rope.rotary_dim()
            )));
        }
        let (heads, dim) = (self.num_heads, self.head_dim);
        let q = self.wq_b.forward(latent)?.reshape((b, t, heads, dim))?.transpose(1, 2)?.contiguous()?;
        let q = rope.rotate(&q, self.rope_interleaved)?;
        let k = self.k_norm.forward(&self.wk.forward(xs)?)?.reshape((b, 1, t, dim))?;
        let k = rope.rotate(&k, self.rope_interleaved)?;
        let weights = (self.weights_proj.forward(&xs.to_dtype(DType::F32)?)? * (heads as f64).powf(-0.5))?;
        (0..b)
            .map(|sequence| {
                let q = q.get(sequence)?.to_dtype(DType::F32)?; // [heads, T, dim]
                let k = k.get(sequence)?.get(0)?.to_dtype(DType::F32)?; // [T, dim]
                let weights = weights.get(sequence)?.t()?.contiguous()?; // [heads, T]
                self.choose_in_sequence(&q, &k, &weights, top_k)
            })
            .collect()
    }

    /// One sequence's choice, from its rotated `q [heads, T, dim]` and `k [T, dim]` and its head weights
    /// `[heads, T]`, all f32; its queries are scored a block of rows at a time.
    fn choose_in_sequence(&self, q: &Tensor, k: &Tensor, weights: &Tensor, top_k: usize) -> Result<KeySelection> {
        let (heads, t, dim) = q.dims3()?;
        let rows_per_block = (SCORES_BYTES_PER_BLOCK / (heads * t * std::mem::size_of::<f32>())).max(1);
        let keys = k.t()?.contiguous()?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let mut chooser = KeyChooser::new(t, top_k);
        for first in (0..t).step_by(rows_per_block) {
            let rows = rows_per_block.min(t - first);
            let queries = q.narrow(1, first, rows)?.reshape((heads * rows, dim))?;
            let per_head = (queries.matmul(&keys)? * scale)?.relu()?.reshape((heads, rows, t))?;
            let weights = weights.narrow(1, first, rows)?.unsqueeze(2)?;
            let scores = per_head.broadcast_mul(&weights)?.sum(0)?; // [rows, T]
            chooser.add_rows(first, &scores.to_vec2::<f32>()?)?;
        }
        Ok(chooser.finish())
    }
}
