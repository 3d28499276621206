//! Grouped-query self-attention, no KV cache (calibration runs whole sequences), with the variants families
//! declare: biases; q/k RMSNorm before the rope, per head (Qwen3) or over the whole projection (OLMoE), or
//! weightless after it (Llama4); causal, sliding-window or chunked masks; attention sinks (GPT-OSS); layers
//! without rope, with temperature tuning (Llama4) or not (Granite-4.0-H, Nemotron-H); an output gate projected
//! with the queries (Qwen3-Next, Qwen3.5); q, k and v projected by one module (Param2 / Sarvam-MoE hub
//! `query_key_value`); k's projection used as the values too, and a weightless norm of the values (Gemma 4).
//! transformers: models/qwen3_moe `Qwen3MoeAttention`, models/olmoe `OlmoeAttention`, models/gpt_oss
//! `GptOssAttention`, models/llama4 `Llama4TextAttention`, models/qwen3_next `Qwen3NextAttention`, models/gemma4
//! `Gemma4TextAttention`.

use candle_core::{DType, Device, Tensor};

use super::linear::Linear;
use super::norm::{normalize, NormStyle, RmsNorm};
use super::ops::{attention_mask, sigmoid, softmax_last};
use super::rope::Rope;
use crate::error::Result;
use crate::model::decoder::required_rope;
use crate::model::descriptor::{AttentionMask, AttentionTemperature, GqaDescriptor};
use crate::model::loader::WeightLoader;
use crate::model::observe::Observers;
use crate::model::profile;

/// The projections of q, k and v: three modules, one whose output stacks them, or q and k with k's output as
/// the values too (Gemma 4's `attention_k_eq_v`).
enum Projections {
    Separate { q: Linear, k: Linear, v: Linear },
    Fused(Linear),
    KeysAsValues { q: Linear, k: Linear },
}

pub struct Attention {
    qkv: Projections,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    scaling: f64,
    pattern: Pattern,
    rope: bool,
    qk_norm_after_rope: bool,
    /// eps of the weightless q/k norm after the rope.
    weightless_norm: Option<f64>,
    temperature: Option<AttentionTemperature>,
    /// q's projection carries an output gate after each head's query.
    output_gate: bool,
    /// eps of the weightless norm of the value heads.
    v_norm: Option<f64>,
}

/// Which keys each query sees, and the sink logits joined to its softmax.
pub struct Pattern {
    pub mask: AttentionMask,
    /// `[heads]`.
    pub sinks: Option<Tensor>,
}

impl Pattern {
    pub const CAUSAL: Pattern = Pattern { mask: AttentionMask::Causal, sinks: None };
}

impl Attention {
    pub fn load(loader: &WeightLoader, desc: &GqaDescriptor, style: NormStyle) -> Result<Self> {
        let norm = |name: &Option<String>| -> Result<Option<RmsNorm>> {
            name.as_ref().map(|n| style.norm(loader.tensor(n)?)).transpose()
        };
        let qkv = match &desc.qkv {
            Some(fused) => Projections::Fused(Linear::load(loader, fused, desc.qkv_bias)?),
            None if desc.values_from_keys => Projections::KeysAsValues {
                q: Linear::load(loader, &desc.q, desc.qkv_bias)?,
                k: Linear::load(loader, &desc.k, desc.qkv_bias)?,
            },
            None => Projections::Separate {
                q: Linear::load(loader, &desc.q, desc.qkv_bias)?,
                k: Linear::load(loader, &desc.k, desc.qkv_bias)?,
                v: Linear::load(loader, &desc.v, desc.qkv_bias)?,
            },
        };
        Ok(Attention {
            qkv,
            o: Linear::load(loader, &desc.o, desc.o_bias)?,
            q_norm: norm(&desc.q_norm)?,
            k_norm: norm(&desc.k_norm)?,
            num_heads: desc.num_heads,
            num_kv_heads: desc.num_kv_heads,
            head_dim: desc.head_dim,
            scaling: desc.scaling,
            pattern: Pattern {
                mask: desc.mask,
                sinks: desc.sinks.as_ref().map(|name| loader.tensor_shaped(name, &[desc.num_heads])).transpose()?,
            },
            rope: desc.rope,
            qk_norm_after_rope: desc.qk_norm_after_rope,
            weightless_norm: desc.qk_weightless_norm.then_some(style.eps),
            temperature: desc.temperature,
            output_gate: desc.output_gate,
            v_norm: desc.v_norm.then_some(style.eps),
        })
    }

    /// The rope (where the layer has one), then the q/k norm declared after it or the weightless norm.
    fn position(&self, xs: Tensor, rope: Option<&Rope>, norm: Option<&RmsNorm>) -> Result<Tensor> {
        let xs = if self.rope { required_rope(rope)?.apply(&xs)? } else { xs };
        let xs = match norm.filter(|_| self.qk_norm_after_rope) {
            Some(norm) => norm.forward(&xs)?,
            None => xs,
        };
        match self.weightless_norm {
            Some(eps) => normalize(&xs, eps),
            None => Ok(xs),
        }
    }

    /// The q or k norm to apply before the rope (none when declared after it).
    fn norm_before_rope<'n>(&self, norm: &'n Option<RmsNorm>) -> Option<&'n RmsNorm> {
        norm.as_ref().filter(|_| !self.qk_norm_after_rope)
    }

    /// Multiplies `q [B, heads, T, D]` by the temperature of each position.
    fn tune_temperature(&self, q: Tensor) -> Result<Tensor> {
        let Some(AttentionTemperature { scale, floor_scale }) = self.temperature else { return Ok(q) };
        let (_, _, t, _) = q.dims4()?;
        // transformers: positions and the floor in f32, then log1p, times attn_scale, plus 1.
        let factors: Vec<f32> =
            (0..t).map(|p| (((p as f32 + 1.0) / floor_scale as f32).floor()).ln_1p() * scale as f32 + 1.0).collect();
        let factors = Tensor::from_vec(factors, (1, 1, t, 1), q.device())?;
        Ok(q.to_dtype(DType::F32)?.broadcast_mul(&factors)?.to_dtype(q.dtype())?)
    }

    /// The projections of `xs` by q, k and v, `[B, T, rows]` each: a fused projection's output split in its
    /// rows' order (q's, k's, v's), as transformers splits its weight.
    fn project(&self, xs: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        match &self.qkv {
            Projections::Separate { q, k, v } => Ok((q.forward(xs)?, k.forward(xs)?, v.forward(xs)?)),
            Projections::KeysAsValues { q, k } => {
                let keys = k.forward(xs)?;
                Ok((q.forward(xs)?, keys.clone(), keys))
            }
            Projections::Fused(qkv) => {
                let ys = qkv.forward(xs)?;
                let kv_rows = self.num_kv_heads * self.head_dim;
                let q_rows = ys.dim(2)? - 2 * kv_rows;
                let part = |start: usize, len: usize| ys.narrow(2, start, len)?.contiguous();
                Ok((part(0, q_rows)?, part(q_rows, kv_rows)?, part(q_rows + kv_rows, kv_rows)?))
            }
        }
    }

    /// The module names whose input is the layer's hidden states.
    fn input_names(&self) -> Vec<&str> {
        match &self.qkv {
            Projections::Separate { q, k, v } => vec![&q.name, &k.name, &v.name],
            Projections::KeysAsValues { q, k } => vec![&q.name, &k.name],
            Projections::Fused(qkv) => vec![&qkv.name],
        }
    }

    /// q's projection `ys` as the query `[B, T, heads·head_dim]`, and the output gate `[B, T, heads·head_dim]`
    /// when q's projection carries one (per head, the query's `head_dim` columns then the gate's).
    fn query(&self, ys: Tensor) -> Result<(Tensor, Option<Tensor>)> {
        if !self.output_gate {
            return Ok((ys, None));
        }
        let (b, t, _) = ys.dims3()?;
        let pairs = ys.reshape((b, t, self.num_heads, 2, self.head_dim))?;
        let half = |i: usize| pairs.narrow(3, i, 1)?.reshape((b, t, self.num_heads * self.head_dim));
        Ok((half(0)?, Some(half(1)?)))
    }

    /// On a GPU, [`Self::heads`] then [`Self::position`] as one kernel (`cuda::head_norm_rope`), for the common
    /// form: a per-head norm (or none) before a rope by halves (or none). None where another form applies.
    fn heads_on_device(
        &self,
        ys: &Tensor,
        norm: Option<&RmsNorm>,
        heads: usize,
        rope: Option<&Rope>,
    ) -> Result<Option<Tensor>> {
        if !ys.device().is_cuda() || self.qk_norm_after_rope || self.weightless_norm.is_some() {
            return Ok(None);
        }
        let norm = match norm {
            None => None,
            Some(norm) => match norm.plain() {
                Some((weight, eps)) if weight.elem_count() == self.head_dim => Some((weight, eps as f32)),
                _ => return Ok(None),
            },
        };
        let (b, t, _) = ys.dims3()?;
        let tables = if self.rope {
            match required_rope(rope)?.halves_tables(t)? {
                Some(tables) => Some(tables),
                None => return Ok(None),
            }
        } else {
            None
        };
        let heads_view = ys.reshape((b, t, heads, self.head_dim))?;
        let rope = tables.as_ref().map(|(cos, sin)| (cos, sin));
        Ok(Some(crate::cuda::head_norm_rope(&heads_view, norm, rope)?))
    }

    /// A projection `ys [B, T, heads·head_dim]` split into heads `[B, heads, T, head_dim]`, applying the q/k norm
    /// where present.
    fn heads(&self, mut ys: Tensor, norm: Option<&RmsNorm>, heads: usize) -> Result<Tensor> {
        let (b, t, _) = ys.dims3()?;
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

    pub fn forward(&self, xs: &Tensor, rope: Option<&Rope>, observers: &mut Observers) -> Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        let device = xs.device();
        profile::section(device, "observers", || observers.record_input(&self.input_names(), xs))?;
        let (q, k, v) = profile::section(device, "attention projections", || self.project(xs))?;
        let (q, k, v, gate) = profile::section(device, "attention heads, norms and rope", || {
            let (q, gate) = self.query(q)?;
            let q = match self.heads_on_device(&q, self.q_norm.as_ref(), self.num_heads, rope)? {
                Some(q) => q,
                None => {
                    let q = self.heads(q, self.norm_before_rope(&self.q_norm), self.num_heads)?;
                    self.position(q, rope, self.q_norm.as_ref())?
                }
            };
            let q = self.tune_temperature(q)?;
            let k = match self.heads_on_device(&k, self.k_norm.as_ref(), self.num_kv_heads, rope)? {
                Some(k) => k,
                None => {
                    let k = self.heads(k, self.norm_before_rope(&self.k_norm), self.num_kv_heads)?;
                    self.position(k, rope, self.k_norm.as_ref())?
                }
            };
            let v = self.heads(v, None, self.num_kv_heads)?;
            let v = match self.v_norm {
                Some(eps) => normalize(&v, eps)?,
                None => v,
            };
            Ok((q, k, v, gate))
        })?;
        let mut out = profile::section(device, "attention scores, softmax, values", || {
            let out = attend(&q, &k, &v, self.scaling, &self.pattern)?;
            Ok(out.transpose(1, 2)?.reshape((b, t, self.num_heads * self.head_dim))?)
        })?;
        if let Some(gate) = gate {
            out = (out * sigmoid(&gate)?)?;
        }
        profile::section(device, "observers", || observers.record_input(&[&self.o.name], &out))?;
        profile::section(device, "attention projections", || self.o.forward(&out))
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

/// Scaled dot-product attention: `softmax(q·kᵀ·scaling + mask)·v`, `q [B, H, T, D]`, `k` and `v` with H heads or
/// fewer (each kv head serving a group of H / kv query heads; v's head size may differ from q's and k's); with
/// sinks, each row's softmax also counts its head's sink logit, whose share is dropped.
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, scaling: f64, pattern: &Pattern) -> Result<Tensor> {
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

    /// An attention of 4 heads of 8 over 2 kv heads with q/k norms, its projections as given.
    fn attention_with(qkv: Projections, output_gate: bool) -> Attention {
        let device = Device::Cpu;
        let norm = |seed: f32| {
            RmsNorm::new(Tensor::arange(0f32, 8.0, &device).unwrap().affine(0.1, seed as f64).unwrap(), 1e-6)
        };
        Attention {
            qkv,
            o: Linear::from_weight("o", Tensor::randn(0f32, 0.2, (16, 32), &device).unwrap(), None),
            q_norm: Some(norm(0.5)),
            k_norm: Some(norm(0.8)),
            num_heads: 4,
            num_kv_heads: 2,
            head_dim: 8,
            scaling: 8f64.powf(-0.5),
            pattern: Pattern::CAUSAL,
            rope: false,
            qk_norm_after_rope: false,
            weightless_norm: None,
            temperature: None,
            output_gate,
            v_norm: None,
        }
    }

    #[test]
    fn a_fused_qkv_projection_is_split_in_q_k_v_row_order() {
        let device = Device::Cpu;
        let xs = Tensor::randn(0f32, 1.0, (2, 5, 16), &device).unwrap();
        for output_gate in [false, true] {
            let q_rows = 32 * if output_gate { 2 } else { 1 };
            let weight = Tensor::randn(0f32, 0.3, (q_rows + 32, 16), &device).unwrap();
            let bias = Tensor::randn(0f32, 0.1, q_rows + 32, &device).unwrap();
            let rows = |start: usize, len: usize| {
                let linear = |xs: &Tensor| xs.narrow(0, start, len).unwrap().contiguous().unwrap();
                (linear(&weight), linear(&bias))
            };
            let (q, k, v) = (rows(0, q_rows), rows(q_rows, 16), rows(q_rows + 16, 16));
            let separate = attention_with(
                Projections::Separate {
                    q: Linear::from_weight("q", q.0, Some(q.1)),
                    k: Linear::from_weight("k", k.0, Some(k.1)),
                    v: Linear::from_weight("v", v.0, Some(v.1)),
                },
                output_gate,
            );
            let mut fused =
                attention_with(Projections::Fused(Linear::from_weight("qkv", weight, Some(bias))), output_gate);
            fused.o = Linear::from_weight("o", separate.o.weight.clone(), None);
            let mut observed = Observers::default();
            let want = separate.forward(&xs, None, &mut Observers::default()).unwrap();
            let got = fused.forward(&xs, None, &mut observed).unwrap();
            let difference = (&got - &want).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(difference < 1e-5, "output gate {output_gate}: {difference}");
            // The fused module's input is recorded under its own name, once.
            assert_eq!(observed.input_amax.keys().collect::<Vec<_>>(), ["o", "qkv"]);
        }
    }

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
