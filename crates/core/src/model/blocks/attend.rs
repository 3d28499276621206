//! Scaled dot-product attention over whole sequences (calibration keeps no KV cache): the causal,
//! sliding-window and chunked masks, attention sinks, key/value heads shared by groups of query heads, sequences
//! attended in chunks to bound the scores' memory; on a GPU, one fused kernel for the common head sizes
//! (`cuda::fused_attention`), else the grouped product with the fused softmax.
//! transformers: `eager_attention_forward` of models/llama, models/gpt_oss (sinks).

use candle_core::{DType, Device, Tensor};

use super::ops::{attention_mask, softmax_last};
use crate::cuda::KeyMask;
use crate::error::Result;
use crate::model::descriptor::AttentionMask;

/// Which keys each query sees, and the sink logits joined to its softmax.
pub struct Pattern {
    pub mask: AttentionMask,
    /// `[heads]`.
    pub sinks: Option<Tensor>,
}

impl Pattern {
    pub const CAUSAL: Pattern = Pattern { mask: AttentionMask::Causal, sinks: None };
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

/// Scaled dot-product attention: `softmax(q·kᵀ·scaling + mask)·v`, `q [B, H, T, D]`, `k` and `v` with H heads or
/// fewer (each kv head serving a group of H / kv query heads; v's head size may differ from q's and k's); with
/// sinks, each row's softmax also counts its head's sink logit, whose share is dropped.
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, scaling: f64, pattern: &Pattern) -> Result<Tensor> {
    if crate::cuda::fused_attention_fits(q, k, v) {
        let mask = match pattern.mask {
            AttentionMask::Causal => KeyMask::Causal,
            AttentionMask::SlidingWindow { window } => KeyMask::Window(window),
            AttentionMask::Chunked { size } => KeyMask::Chunks(size),
        };
        return crate::cuda::fused_attention(q, k, v, scaling as f32, mask, pattern.sinks.as_ref());
    }
    let (_, heads, t, _) = q.dims4()?;
    let per_sequence = heads * t * (t + 1) * std::mem::size_of::<f32>();
    attend_in_chunks(q, k, v, scaling, pattern, (SCORES_BYTES_PER_CHUNK / per_sequence.max(1)).max(1))
}

/// Scaled dot-product attention as [`attend`], over sequences whose queries see the keys `mask` says: an additive
/// f32 mask `[T, T]` (or `[B, 1, T, T]`), 0 where a query sees a key and -inf elsewhere.
pub fn attend_masked(q: &Tensor, k: &Tensor, v: &Tensor, scaling: f64, mask: &Tensor) -> Result<Tensor> {
    attend_sequences(q, k, v, &Scores { mask: mask.clone(), sinks: None }, scaling)
}

/// [`attend`] over `chunk` sequences at a time.
fn attend_in_chunks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scaling: f64,
    pattern: &Pattern,
    chunk: usize,
) -> Result<Tensor> {
    let (b, heads, t, _) = q.dims4()?;
    let scores = Scores {
        mask: attention_mask(t, pattern.mask, q.device())?,
        sinks: sink_column(pattern, heads, t, q.device())?,
    };
    if chunk >= b {
        return attend_sequences(q, k, v, &scores, scaling);
    }
    let mut outputs = Vec::with_capacity(b.div_ceil(chunk));
    for start in (0..b).step_by(chunk) {
        let len = chunk.min(b - start);
        let rows = |xs: &Tensor| xs.narrow(0, start, len);
        outputs.push(attend_sequences(&rows(q)?, &rows(k)?, &rows(v)?, &scores, scaling)?);
    }
    Ok(Tensor::cat(&outputs, 0)?)
}

/// The additive mask `[T, T]` and the sink logits as one extra key column `[1, H, T, 1]` (f32).
struct Scores {
    mask: Tensor,
    sinks: Option<Tensor>,
}

fn sink_column(pattern: &Pattern, heads: usize, t: usize, device: &Device) -> Result<Option<Tensor>> {
    let Some(sinks) = &pattern.sinks else { return Ok(None) };
    let column = sinks.to_device(device)?.to_dtype(DType::F32)?.reshape((1, heads, 1, 1))?;
    Ok(Some(column.broadcast_as((1, heads, t, 1))?.contiguous()?))
}

fn attend_sequences(q: &Tensor, k: &Tensor, v: &Tensor, extra: &Scores, scaling: f64) -> Result<Tensor> {
    if q.device().is_cuda() && extra.mask.rank() == 2 {
        return attend_grouped(q, k, v, extra, scaling);
    }
    let heads = q.dim(1)?;
    let k = repeat_kv(k, heads / k.dim(1)?)?;
    let v = repeat_kv(v, heads / v.dim(1)?)?;
    // Scores and softmax in f32; the product with v in the compute dtype, as transformers' eager attention.
    let scores = (q.matmul(&k.t()?)?.to_dtype(DType::F32)? * scaling)?;
    let scores = scores.broadcast_add(&extra.mask)?;
    let probabilities = match &extra.sinks {
        None => softmax_last(&scores)?,
        Some(column) => {
            let (b, heads, t, keys) = scores.dims4()?;
            let column = column.broadcast_as((b, heads, t, 1))?.contiguous()?;
            softmax_last(&Tensor::cat(&[&scores, &column], 3)?)?.narrow(3, 0, keys)?
        }
    };
    Ok(probabilities.to_dtype(q.dtype())?.matmul(&v.contiguous()?)?)
}

/// [`attend_sequences`] on the GPU, the same values with fewer passes: the queries of each kv head's group
/// multiplied as one matrix (no copy of k and v per query head), and scaling, mask and softmax as one kernel.
fn attend_grouped(q: &Tensor, k: &Tensor, v: &Tensor, extra: &Scores, scaling: f64) -> Result<Tensor> {
    let (b, heads, t, d) = q.dims4()?;
    let (kv_heads, keys) = (k.dim(1)?, k.dim(2)?);
    let groups = heads / kv_heads;
    // Query head h = kv · groups + g, so [B, H, T, D] is [B, kv, groups · T, D] as it lies.
    let scores = q.contiguous()?.reshape((b, kv_heads, groups * t, d))?.matmul(&k.t()?)?;
    let sinks = extra.sinks.as_ref().map(|column| column.reshape((heads, t))).transpose()?;
    let probabilities = crate::cuda::softmax_scores(
        &scores.reshape((b, heads, t, keys))?,
        &extra.mask,
        sinks.as_ref(),
        scaling as f32,
    )?;
    let out = probabilities.reshape((b, kv_heads, groups * t, keys))?.matmul(&v.contiguous()?)?;
    Ok(out.reshape((b, heads, t, v.dim(3)?))?)
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
        let sinks = Tensor::randn(0f32, 1.0, 4, &device).unwrap();
        let pattern = Pattern { mask: AttentionMask::SlidingWindow { window: 3 }, sinks: Some(sinks) };
        let whole = attend_in_chunks(&q, &k, &v, 0.35, &pattern, 5).unwrap();
        assert_eq!(whole.dims(), [5, 4, 7, 6]);
        for chunk in [1, 2, 3] {
            let chunked = attend_in_chunks(&q, &k, &v, 0.35, &pattern, chunk).unwrap();
            let difference = (&chunked - &whole).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(difference.to_scalar::<f32>().unwrap(), 0.0, "chunks of {chunk}");
        }
    }

    /// One head's attention computed row by row with scalars: what transformers' eager attention computes.
    fn by_hand(
        q: &[Vec<f32>],
        k: &[Vec<f32>],
        v: &[Vec<f32>],
        scaling: f32,
        sees: impl Fn(usize, usize) -> bool,
        sink: Option<f32>,
    ) -> Vec<Vec<f32>> {
        (0..q.len())
            .map(|i| {
                let logits: Vec<Option<f32>> = (0..k.len())
                    .map(|j| sees(i, j).then(|| q[i].iter().zip(&k[j]).map(|(a, b)| a * b).sum::<f32>() * scaling))
                    .collect();
                let max = logits.iter().flatten().copied().chain(sink).fold(f32::NEG_INFINITY, f32::max);
                let weights: Vec<f32> = logits.iter().map(|l| l.map_or(0.0, |l| (l - max).exp())).collect();
                let total: f32 = weights.iter().sum::<f32>() + sink.map_or(0.0, |s| (s - max).exp());
                (0..v[0].len()).map(|d| weights.iter().zip(v).map(|(w, row)| w * row[d]).sum::<f32>() / total).collect()
            })
            .collect()
    }

    #[test]
    fn masks_and_sinks_match_attention_computed_by_hand() {
        let device = Device::Cpu;
        let (t, d) = (9, 4);
        let q = Tensor::randn(0f32, 1.0, (1, 2, t, d), &device).unwrap();
        let k = Tensor::randn(0f32, 1.0, (1, 2, t, d), &device).unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, 2, t, d), &device).unwrap();
        let rows = |xs: &Tensor, head: usize| xs.get(0).unwrap().get(head).unwrap().to_vec2::<f32>().unwrap();
        let sinks = [0.7f32, -1.3];
        type Sees = Box<dyn Fn(usize, usize) -> bool>;
        let cases: [(AttentionMask, Sees); 3] = [
            (AttentionMask::Causal, Box::new(|i, j| j <= i)),
            (AttentionMask::SlidingWindow { window: 3 }, Box::new(|i, j| j <= i && i - j < 3)),
            (AttentionMask::Chunked { size: 4 }, Box::new(|i, j| j <= i && i / 4 == j / 4)),
        ];
        for (mask, sees) in &cases {
            for with_sinks in [false, true] {
                let pattern = Pattern { mask: *mask, sinks: with_sinks.then(|| Tensor::new(&sinks, &device).unwrap()) };
                let out = attend(&q, &k, &v, 0.5, &pattern).unwrap();
                for (head, &sink) in sinks.iter().enumerate() {
                    let sink = with_sinks.then_some(sink);
                    let want = by_hand(&rows(&q, head), &rows(&k, head), &rows(&v, head), 0.5, sees, sink);
                    for (got, want) in rows(&out, head).iter().flatten().zip(want.iter().flatten()) {
                        assert!((got - want).abs() < 1e-5, "{mask:?} sinks {with_sinks}: {got} vs {want}");
                    }
                }
            }
        }
    }
}
