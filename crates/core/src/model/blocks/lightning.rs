//! Lightning attention (MiniMax-Text-01's linear attention): `[q | k | v] = silu(qkv_proj(x))` per head; with a
//! decay rate `λ` per head and layer, `o_t = Σ_{s≤t} exp(−λ (t − s)) (q_t · k_s) v_s` (no scaling, no softmax, no
//! rope), computed block by block as transformers does (within a block through the decayed `q kᵀ`, across blocks
//! through the decayed state `kᵀ v`); then an RMSNorm over all heads, the gate `sigmoid(output_gate(x))` and
//! `out_proj`. transformers: models/minimax `MiniMaxLightningAttention` without a cache.

use candle_core::{DType, Device, Tensor};

use super::linear::Linear;
use super::norm::RmsNorm;
use super::ops::sigmoid;
use crate::error::{Error, Result};
use crate::model::descriptor::LightningAttentionDescriptor;
use crate::model::loader::WeightLoader;
use crate::model::observe::Observers;

pub struct LightningAttention {
    qkv_proj: Linear,
    output_gate: Linear,
    out_proj: Linear,
    norm: RmsNorm,
    heads: usize,
    head_dim: usize,
    block_size: usize,
    decays: Decays,
}

/// The decay rate of each head: `(2^(−8/heads))^(h+1) · (1 − layer / (layers − 1 + 1e-5) + 1e-5)`, in f32 as
/// transformers' `get_slope_rate` (the base and the layer factor in f64, the rates in f32).
pub fn slope_rates(heads: usize, layer: usize, layers: usize) -> Vec<f32> {
    let base = 1.0 / 2f64.powf(8.0 / heads as f64);
    let factor = 1.0 - layer as f64 / (layers as f64 - 1.0 + 1e-5) + 1e-5;
    (0..heads).map(|h| (base.powi(h as i32 + 1) as f32) * factor as f32).collect()
}

/// The decays of a block of `block_size` positions, `[heads, …]` each, in f32: transformers' buffers
/// (`slope_rate`, `query_decay`, `key_decay`, `diagonal_decay`), which a checkpoint may store (and transformers then
/// uses as stored) or which follow from the rates.
pub struct Decays {
    /// `λ`, `[heads, 1, 1]`.
    slope: Tensor,
    /// `exp(−λ (i + 1))`, `[heads, block, 1]`: the state's decay up to query `i`.
    query: Tensor,
    /// `exp(−λ (block − 1 − j))`, `[heads, block, 1]`: key `j`'s decay up to the block's end.
    key: Tensor,
    /// `exp(−λ (i − j))` for `i ≥ j`, else 0, `[heads, block, block]`.
    diagonal: Tensor,
}

impl Decays {
    /// The decays of the rates `slopes` (transformers' `decay_factors`, in f32).
    pub fn computed(slopes: &[f32], block: usize, device: &Device) -> Result<Self> {
        let heads = slopes.len();
        let table = |len: usize, f: &dyn Fn(f32, usize) -> f32| -> Vec<f32> {
            slopes.iter().flat_map(|&s| (0..len).map(move |i| f(s, i))).collect()
        };
        let query = table(block, &|s, i| (-(s * (i + 1) as f32)).exp());
        let key = table(block, &|s, j| (-(s * (block - 1 - j) as f32)).exp());
        let diagonal = table(block * block, &|s, ij| {
            let (i, j) = (ij / block, ij % block);
            if i >= j {
                (-(s * (i - j) as f32)).exp()
            } else {
                0.0
            }
        });
        Ok(Decays {
            slope: Tensor::from_vec(slopes.to_vec(), (heads, 1, 1), device)?,
            query: Tensor::from_vec(query, (heads, block, 1), device)?,
            key: Tensor::from_vec(key, (heads, block, 1), device)?,
            diagonal: Tensor::from_vec(diagonal, (heads, block, block), device)?,
        })
    }

    /// The buffers of module `module` as the checkpoint stores them.
    fn stored(loader: &WeightLoader, module: &str, heads: usize, block: usize) -> Result<Self> {
        let read = |name: &str, shape: &[usize]| -> Result<Tensor> {
            Ok(loader.tensor_shaped(&format!("{module}.{name}"), shape)?.to_dtype(DType::F32)?)
        };
        Ok(Decays {
            slope: read("slope_rate", &[heads, 1, 1])?,
            query: read("query_decay", &[heads, block, 1])?,
            key: read("key_decay", &[heads, block, 1])?,
            diagonal: read("diagonal_decay", &[1, heads, block, block])?.squeeze(0)?,
        })
    }

    /// The decays of a block of `n ≤ block` positions in `dtype`: query, key, diagonal and the whole block's
    /// `exp(−λ n)`.
    fn block(&self, n: usize, dtype: DType) -> Result<[Tensor; 4]> {
        let block = self.query.dim(1)?;
        let whole = (self.slope.clone() * -(n as f64))?.exp()?;
        let parts = [
            self.query.narrow(1, 0, n)?,
            self.key.narrow(1, block - n, n)?,
            self.diagonal.narrow(1, 0, n)?.narrow(2, 0, n)?,
            whole,
        ];
        let cast = |t: &Tensor| -> Result<Tensor> { Ok(t.contiguous()?.to_dtype(dtype)?) };
        Ok([cast(&parts[0])?, cast(&parts[1])?, cast(&parts[2])?, cast(&parts[3])?])
    }
}

impl LightningAttention {
    pub fn load(loader: &WeightLoader, desc: &LightningAttentionDescriptor) -> Result<Self> {
        let width = desc.num_heads * desc.head_dim;
        if width == 0 || desc.block_size == 0 || desc.layer_index >= desc.num_layers {
            return Err(Error::internal(format!(
                "{}: {} heads of {}, block size {}, layer {} of {}",
                desc.qkv_proj, desc.num_heads, desc.head_dim, desc.block_size, desc.layer_index, desc.num_layers
            )));
        }
        let qkv_proj = Linear::load(loader, &desc.qkv_proj, false)?;
        let hidden = qkv_proj.weight.dim(1)?;
        loader.tensor_shaped(&format!("{}.weight", desc.qkv_proj), &[3 * width, hidden])?;
        loader.tensor_shaped(&format!("{}.weight", desc.output_gate), &[width, hidden])?;
        loader.tensor_shaped(&format!("{}.weight", desc.out_proj), &[hidden, width])?;
        let decays = match &desc.stored_decays {
            Some(module) => Decays::stored(loader, module, desc.num_heads, desc.block_size)?,
            None => Decays::computed(
                &slope_rates(desc.num_heads, desc.layer_index, desc.num_layers),
                desc.block_size,
                qkv_proj.weight.device(),
            )?,
        };
        Ok(LightningAttention {
            qkv_proj,
            output_gate: Linear::load(loader, &desc.output_gate, false)?,
            out_proj: Linear::load(loader, &desc.out_proj, false)?,
            norm: RmsNorm::new(loader.tensor_shaped(&desc.norm, &[width])?, desc.norm_eps),
            heads: desc.num_heads,
            head_dim: desc.head_dim,
            block_size: desc.block_size,
            decays,
        })
    }

    /// `xs [B, T, H]` → `[B, T, H]`.
    pub fn forward(&self, xs: &Tensor, observers: &mut Observers) -> Result<Tensor> {
        let (b, t, _) = xs.dims3()?;
        let (heads, d) = (self.heads, self.head_dim);
        observers.record_input(&[&self.qkv_proj.name, &self.output_gate.name], xs)?;
        let qkv = self.qkv_proj.forward(xs)?.silu()?.reshape((b, t, heads, 3 * d))?;
        let split = |i: usize| -> Result<Tensor> { Ok(qkv.narrow(3, i * d, d)?.transpose(1, 2)?.contiguous()?) };
        let mixed = lightning(&split(0)?, &split(1)?, &split(2)?, &self.decays, self.block_size)?;
        let mixed = mixed.transpose(1, 2)?.reshape((b, t, heads * d))?;
        let gated = sigmoid(&self.output_gate.forward(xs)?)?.mul(&self.norm.forward(&mixed)?)?;
        observers.record_input(&[&self.out_proj.name], &gated)?;
        self.out_proj.forward(&gated)
    }
}

/// `q`, `k`, `v` `[B, heads, T, d]` → `o [B, heads, T, d]`, block by block: within a block
/// `((q kᵀ) ⊙ diagonal) v`, from the earlier blocks `(q ⊙ query decay) S`, then
/// `S ← exp(−λ n) S + (k ⊙ key decay)ᵀ v`.
pub fn lightning(q: &Tensor, k: &Tensor, v: &Tensor, decays: &Decays, block_size: usize) -> Result<Tensor> {
    let (b, heads, t, d) = q.dims4()?;
    let mut state = Tensor::zeros((b, heads, d, d), q.dtype(), q.device())?;
    let mut outputs = Vec::with_capacity(t.div_ceil(block_size));
    let mut start = 0;
    while start < t {
        let n = block_size.min(t - start);
        let [query, key, diagonal, whole] = decays.block(n, q.dtype())?;
        let (qb, kb, vb) = (q.narrow(2, start, n)?, k.narrow(2, start, n)?, v.narrow(2, start, n)?);
        let scores = qb.matmul(&kb.transpose(2, 3)?.contiguous()?)?;
        let intra = scores.broadcast_mul(&diagonal)?.matmul(&vb)?;
        let inter = qb.broadcast_mul(&query)?.matmul(&state)?;
        outputs.push((inter + intra)?);
        let keyed = kb.broadcast_mul(&key)?.transpose(2, 3)?.contiguous()?;
        state = (state.broadcast_mul(&whole)? + keyed.matmul(&vb)?)?;
        start += n;
    }
    Ok(Tensor::cat(&outputs, 2)?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    fn values(xs: &Tensor) -> Vec<f32> {
        xs.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    #[test]
    fn slope_rates_match_transformers() {
        // MiniMaxLightningAttention(config with 4 heads, 3 layers, layer_idx 1).slope_rate (f32)
        let got = slope_rates(4, 1, 3);
        let want = [0.1250031292438507f32, 0.03125078231096268, 0.00781269557774067, 0.0019531738944351673];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-7 * w.abs(), "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn the_blocks_equal_the_recurrence_and_transformers() {
        let device = Device::Cpu;
        let (heads, t, d) = (2, 7, 3);
        let ramp = |offset: f32| -> Tensor {
            let data: Vec<f32> = (0..heads * t * d).map(|i| ((i as f32 * 0.37 + offset).sin()) * 0.8).collect();
            Tensor::from_vec(data, (1, heads, t, d), &device).unwrap()
        };
        let (q, k, v) = (ramp(0.0), ramp(1.0), ramp(2.0));
        let slopes = [0.5f32, 0.125];
        let (qv, kv, vv) = (values(&q), values(&k), values(&v));
        let at = |m: &[f32], h: usize, s: usize, i: usize| m[(h * t + s) * d + i];
        let mut want = vec![0f32; heads * t * d];
        for h in 0..heads {
            for s in 0..t {
                for j in 0..=s {
                    let dot: f32 = (0..d).map(|i| at(&qv, h, s, i) * at(&kv, h, j, i)).sum();
                    let w = (-slopes[h] * (s - j) as f32).exp() * dot;
                    for i in 0..d {
                        want[(h * t + s) * d + i] += w * at(&vv, h, j, i);
                    }
                }
            }
        }
        for block in [1, 3, 4, 7, 16] {
            let decays = Decays::computed(&slopes, block, &device).unwrap();
            let got = values(&lightning(&q, &k, &v, &decays, block).unwrap());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-5, "block {block}: {g} vs {w}");
            }
        }
        // The same q, k, v and slopes through transformers' block loop (block_size 3), position 6 of head 1.
        let decays = Decays::computed(&slopes, 3, &device).unwrap();
        let got = values(&lightning(&q, &k, &v, &decays, 3).unwrap());
        let tail = &got[(t + 6) * d..(t + 7) * d];
        let reference = TRANSFORMERS_HEAD1_POS6;
        for (g, w) in tail.iter().zip(reference) {
            assert!((g - w).abs() <= 1e-5, "{tail:?} vs {reference:?}");
        }
    }

    const TRANSFORMERS_HEAD1_POS6: [f32; 3] = [1.661_061_2, 0.963_639_5, 0.135_794_31];
}
