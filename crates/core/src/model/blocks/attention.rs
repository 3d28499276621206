//! Grouped-query self-attention with optional biases and q/k RMSNorm (per head as in Qwen3, or over the
//! whole projection as in OLMoE), causal, no KV cache (calibration runs whole sequences).
//! transformers: models/qwen3_moe/modeling_qwen3_moe.py `Qwen3MoeAttention`, models/olmoe `OlmoeAttention`.

use candle_core::Tensor;

use super::linear::Linear;
use super::norm::RmsNorm;
use super::ops::{causal_mask, softmax_last};
use super::rope::Rope;
use crate::error::Result;
use crate::model::descriptor::GqaDescriptor;
use crate::model::loader::WeightLoader;
use crate::model::observe::Observers;

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

/// Bytes of f32 attention scores computed at once: sequences are attended in chunks of at most this much (the
/// softmax holds a few temporaries of that size), which bounds the forward's memory for long batches.
const SCORES_BYTES_PER_CHUNK: usize = 128 << 20;

/// Causal scaled dot-product attention: `softmax(q·kᵀ·scaling + mask)·v`, `[B, H, T, D]` (v's head size may
/// differ from q's and k's).
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, scaling: f64) -> Result<Tensor> {
    let (_, heads, t, _) = q.dims4()?;
    let per_sequence = heads * t * t * std::mem::size_of::<f32>();
    attend_in_chunks(q, k, v, scaling, (SCORES_BYTES_PER_CHUNK / per_sequence.max(1)).max(1))
}

/// [`attend`] over `chunk` sequences at a time.
fn attend_in_chunks(q: &Tensor, k: &Tensor, v: &Tensor, scaling: f64, chunk: usize) -> Result<Tensor> {
    let (b, _, t, _) = q.dims4()?;
    let mask = causal_mask(t, q.device())?;
    if chunk >= b {
        return attend_sequences(q, k, v, &mask, scaling);
    }
    let mut outputs = Vec::with_capacity(b.div_ceil(chunk));
    for start in (0..b).step_by(chunk) {
        let len = chunk.min(b - start);
        let rows = |xs: &Tensor| xs.narrow(0, start, len);
        outputs.push(attend_sequences(&rows(q)?, &rows(k)?, &rows(v)?, &mask, scaling)?);
    }
    Ok(Tensor::cat(&outputs, 0)?)
}

fn attend_sequences(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scaling: f64) -> Result<Tensor> {
    // Scores and softmax in f32; the product with v in the compute dtype, as transformers' eager attention.
    let scores = (q.matmul(&k.t()?)?.to_dtype(candle_core::DType::F32)? * scaling)?;
    let scores = scores.broadcast_add(mask)?;
    Ok(softmax_last(&scores)?.to_dtype(q.dtype())?.matmul(&v.contiguous()?)?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    #[test]
    fn chunked_attention_equals_attention_over_the_whole_batch() {
        let device = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (5, 4, 7, 8), &device).unwrap();
        let k = Tensor::randn(0f32, 1.0, (5, 4, 7, 8), &device).unwrap();
        let v = Tensor::randn(0f32, 1.0, (5, 4, 7, 6), &device).unwrap();
        let whole = attend_in_chunks(&q, &k, &v, 0.35, 5).unwrap();
        assert_eq!(whole.dims(), [5, 4, 7, 6]);
        for chunk in [1, 2, 3] {
            let chunked = attend_in_chunks(&q, &k, &v, 0.35, chunk).unwrap();
            let difference = (&chunked - &whole).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(difference.to_scalar::<f32>().unwrap(), 0.0, "chunks of {chunk}");
        }
    }
}
