//! Grouped-query self-attention with optional biases and q/k RMSNorm (per head as in Qwen3, or over the
//! whole projection as in OLMoE), causal, no KV cache (calibration runs whole sequences).
//! transformers: models/qwen3_moe/modeling_qwen3_moe.py `Qwen3MoeAttention`, models/olmoe `OlmoeAttention`.

use candle_core::Tensor;

use super::linear::Linear;
use super::norm::RmsNorm;
use super::ops::{causal_mask, softmax_last};
use super::rope::Rope;
use crate::calib::observers::Observers;
use crate::error::Result;
use crate::model::descriptor::GqaDescriptor;
use crate::model::weights::WeightLoader;

pub struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    scaling: f64,
}

impl Attention {
    pub fn load(loader: &WeightLoader, desc: &GqaDescriptor, eps: f64) -> Result<Self> {
        let norm = |name: &Option<String>| -> Result<Option<RmsNorm>> {
            name.as_ref().map(|n| Ok(RmsNorm::new(loader.tensor(n)?, eps))).transpose()
        };
        Ok(Attention {
            q: Linear::load(loader, &desc.q, desc.qkv_bias)?,
            k: Linear::load(loader, &desc.k, desc.qkv_bias)?,
            v: Linear::load(loader, &desc.v, desc.qkv_bias)?,
            o: Linear::load(loader, &desc.o, desc.o_bias)?,
            q_norm: norm(&desc.q_norm)?,
            k_norm: norm(&desc.k_norm)?,
            num_heads: desc.num_heads,
            num_kv_heads: desc.num_kv_heads,
            head_dim: desc.head_dim,
            scaling: desc.scaling,
        })
    }

    /// Projects and splits into heads `[B, heads, T, head_dim]`, applying the q/k norm where present.
    fn heads(&self, proj: &Linear, norm: Option<&RmsNorm>, xs: &Tensor, heads: usize) -> Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        let mut ys = proj.forward(xs)?;
        let whole = norm.map(|n| n.weight.elem_count() != self.head_dim).unwrap_or(false);
        if let (Some(norm), true) = (norm, whole) {
            ys = norm.forward(&ys)?;
        }
        let mut ys = ys.reshape((b, t, heads, self.head_dim))?;
        if let (Some(norm), false) = (norm, whole) {
            ys = norm.forward(&ys)?;
        }
        Ok(ys.transpose(1, 2)?.contiguous()?)
    }

    pub fn forward(&self, xs: &Tensor, rope: &Rope, observers: &mut Observers) -> Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        observers.record_input(&[&self.q.name, &self.k.name, &self.v.name], xs)?;
        let q = rope.apply(&self.heads(&self.q, self.q_norm.as_ref(), xs, self.num_heads)?)?;
        let k = rope.apply(&self.heads(&self.k, self.k_norm.as_ref(), xs, self.num_kv_heads)?)?;
        let v = self.heads(&self.v, None, xs, self.num_kv_heads)?;
        let k = repeat_kv(&k, self.num_heads / self.num_kv_heads)?;
        let v = repeat_kv(&v, self.num_heads / self.num_kv_heads)?;
        let out = attend(&q, &k, &v, self.scaling)?;
        let out = out.transpose(1, 2)?.reshape((b, t, self.num_heads * self.head_dim))?;
        observers.record_input(&[&self.o.name], &out)?;
        self.o.forward(&out)
    }
}

/// `[B, kv, T, D]` → `[B, kv·groups, T, D]`, each kv head repeated for its query group.
pub fn repeat_kv(xs: &Tensor, groups: usize) -> Result<Tensor> {
    if groups == 1 {
        return Ok(xs.clone());
    }
    let (b, kv, t, d) = xs.dims4()?;
    Ok(xs.unsqueeze(2)?.expand((b, kv, groups, t, d))?.reshape((b, kv * groups, t, d))?)
}

/// Causal scaled dot-product attention: `softmax(q·kᵀ·scaling + mask)·v`, `[B, H, T, D]`.
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, scaling: f64) -> Result<Tensor> {
    let t = q.dim(2)?;
    // Scores and softmax in f32; the product with v in the compute dtype, as transformers' eager attention.
    let scores = (q.matmul(&k.t()?)?.to_dtype(candle_core::DType::F32)? * scaling)?;
    let scores = scores.broadcast_add(&causal_mask(t, q.device())?)?;
    Ok(softmax_last(&scores)?.to_dtype(q.dtype())?.matmul(&v.contiguous()?)?)
}
