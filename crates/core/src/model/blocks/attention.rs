//! Grouped-query self-attention, no KV cache (calibration runs whole sequences), with the variants families
//! declare: biases; q/k RMSNorm before the rope, per head (Qwen3) or over the whole projection (OLMoE), or
//! weightless after it (Llama4); causal, sliding-window or chunked masks; attention sinks (GPT-OSS); layers
//! without rope, with temperature tuning (Llama4) or not (Granite-4.0-H, Nemotron-H); an output gate projected
//! with the queries (Qwen3-Next, Qwen3.5); q, k and v projected by one module (Param2 / Sarvam-MoE hub
//! `query_key_value`); k's projection used as the values too, and a weightless norm of the values (Gemma 4).
//! transformers: models/qwen3_moe `Qwen3MoeAttention`, models/olmoe `OlmoeAttention`, models/gpt_oss
//! `GptOssAttention`, models/llama4 `Llama4TextAttention`, models/qwen3_next `Qwen3NextAttention`, models/gemma4
//! `Gemma4TextAttention`.

use candle_core::{DType, Tensor};

use super::attend::{attend, Pattern};
use super::linear::Linear;
use super::norm::{normalize, NormStyle, RmsNorm};
use super::ops::sigmoid;
use super::rope::Rope;
use crate::error::Result;
use crate::model::decoder::required_rope;
use crate::model::descriptor::{AttentionTemperature, GqaDescriptor};
use crate::model::loader::WeightLoader;
use crate::model::observe::{attention_module, Observers};
use crate::model::profile;

/// The projections of q, k and v: three modules, one whose output stacks them, or q and k with k's output as
/// the values too (Gemma 4's `attention_k_eq_v`).
enum Projections {
    Separate { q: Linear, k: Linear, v: Linear },
    Fused(Linear),
    KeysAsValues { q: Linear, k: Linear },
}

pub struct Attention {
    /// The attention module, under which the maxima of its keys and values are recorded.
    name: String,
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
            name: attention_module(&desc.o),
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
    fn input_linears(&self) -> Vec<&Linear> {
        match &self.qkv {
            Projections::Separate { q, k, v } => vec![q, k, v],
            Projections::KeysAsValues { q, k } => vec![q, k],
            Projections::Fused(qkv) => vec![qkv],
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
        profile::section(device, "observers", || observers.record_linears(&self.input_linears(), xs))?;
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
        // k and v `[B, kv heads, T, D]` as both the fused kernels on a GPU and the general path leave them.
        profile::section(device, "observers", || observers.record_kv(&self.name, &k, &v))?;
        let mut out = profile::section(device, "attention scores, softmax, values", || {
            let attended = attend(&q, &k, &v, self.scaling, &self.pattern)?;
            let out = attended.transpose(1, 2)?.reshape((b, t, self.num_heads * self.head_dim))?;
            crate::cuda::known_max::carry(&attended, &out);
            Ok(out)
        })?;
        if let Some(gate) = gate {
            out = (out * sigmoid(&gate)?)?;
        }
        profile::section(device, "observers", || observers.record_linears(&[&self.o], &out))?;
        profile::section(device, "attention projections", || self.o.forward(&out))
    }
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
            name: "attention".into(),
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
            let mut separate_observed = Observers::default();
            separate.forward(&xs, None, &mut separate_observed).unwrap();
            let (fused_kv, separate_kv) = (observed.kv_amax["attention"], separate_observed.kv_amax["attention"]);
            for (a, b) in [(fused_kv.key, separate_kv.key), (fused_kv.value, separate_kv.value)] {
                assert!(a > 0.0 && (a - b).abs() <= 1e-6 * b, "output gate {output_gate}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn the_keys_are_recorded_after_their_norm_and_the_values_as_projected() {
        let device = Device::Cpu;
        let xs = Tensor::randn(0f32, 1.0, (2, 5, 16), &device).unwrap();
        let weight = |rows: usize| Tensor::randn(0f32, 0.3, (rows, 16), &device).unwrap();
        let (q, k, v) = (weight(32), weight(16), weight(16));
        let attention = attention_with(
            Projections::Separate {
                q: Linear::from_weight("q", q, None),
                k: Linear::from_weight("k", k.clone(), None),
                v: Linear::from_weight("v", v.clone(), None),
            },
            false,
        );
        let mut observed = Observers::default();
        attention.forward(&xs, None, &mut observed).unwrap();
        // By hand: each key head (8 channels) RMS-normalised with k_norm's weight 0.1·i + 0.8, eps 1e-6.
        let rows =
            |w: &Tensor| xs.reshape((10, 16)).unwrap().matmul(&w.t().unwrap()).unwrap().to_vec2::<f32>().unwrap();
        let mut key = 0f32;
        for row in rows(&k) {
            for head in row.chunks(8) {
                let rms = (head.iter().map(|x| x * x).sum::<f32>() / 8.0 + 1e-6).sqrt();
                for (i, x) in head.iter().enumerate() {
                    key = key.max((x / rms * (0.1 * i as f32 + 0.8)).abs());
                }
            }
        }
        let value = rows(&v).iter().flatten().fold(0f32, |m, x| m.max(x.abs()));
        let recorded = observed.kv_amax["attention"];
        assert!((recorded.key - key).abs() <= 1e-5 * key, "{} vs {key}", recorded.key);
        assert!((recorded.value - value).abs() <= 1e-6 * value, "{} vs {value}", recorded.value);
    }
}
