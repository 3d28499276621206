//! The gated delta rule of Gated DeltaNet, in its recurrent form, in f32 on the host. Per value head, a state
//! `S [key_dim, value_dim]` starts at 0 and, token after token:
//!
//! ```text
//! S = S · exp(g_t);   m = Sᵀ k_t;   δ = (v_t − m) · β_t;   S = S + k_t δᵀ;   o_t = Sᵀ q_t
//! ```
//!
//! with q and k L2-normalised (`x · rsqrt(Σx² + 1e-6)`) and q scaled by `key_dim^-0.5`; key head `h / r` serves
//! value heads `h` (`r = value_heads / key_heads`, transformers' `repeat_interleave`). transformers computes the
//! same recurrence re-associated in chunks of 64 tokens for whole sequences (`torch_chunk_gated_delta_rule`) and
//! this form for single tokens (`torch_recurrent_gated_delta_rule`); the two agree to f32 rounding (the tests
//! below compare them).
//! transformers: models/qwen3_next/modeling_qwen3_next.py.

use crate::error::{Error, Result};

/// The sizes of one call: `batch` sequences of `len` tokens.
#[derive(Debug, Clone, Copy)]
pub struct DeltaShape {
    pub batch: usize,
    pub len: usize,
    pub key_heads: usize,
    pub value_heads: usize,
    pub key_dim: usize,
    pub value_dim: usize,
}

impl DeltaShape {
    fn check(&self, inputs: &DeltaInputs) -> Result<()> {
        let tokens = self.batch * self.len;
        let sizes = [
            ("q", inputs.q.len(), tokens * self.key_heads * self.key_dim),
            ("k", inputs.k.len(), tokens * self.key_heads * self.key_dim),
            ("v", inputs.v.len(), tokens * self.value_heads * self.value_dim),
            ("g", inputs.g.len(), tokens * self.value_heads),
            ("beta", inputs.beta.len(), tokens * self.value_heads),
        ];
        for (what, got, want) in sizes {
            if got != want {
                return Err(Error::internal(format!("gated delta rule: {what} has {got} values, expected {want}")));
            }
        }
        if self.key_heads == 0 || !self.value_heads.is_multiple_of(self.key_heads) {
            return Err(Error::internal(format!(
                "gated delta rule: {} value heads are not a multiple of {} key heads",
                self.value_heads, self.key_heads
            )));
        }
        Ok(())
    }
}

/// Row-major f32 inputs: q, k `[B, T, key_heads, key_dim]`, v `[B, T, value_heads, value_dim]`, the log decay g and
/// the rate β `[B, T, value_heads]`.
pub struct DeltaInputs<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub g: &'a [f32],
    pub beta: &'a [f32],
}

/// `x · rsqrt(Σx² + 1e-6)` of every row of `dim` values, times `scale`.
fn l2_normalized(xs: &[f32], dim: usize, scale: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(xs.len());
    for row in xs.chunks_exact(dim) {
        let inverse = 1.0 / (row.iter().map(|x| x * x).sum::<f32>() + 1e-6).sqrt();
        out.extend(row.iter().map(|x| x * inverse * scale));
    }
    out
}

/// The output `[B, T, value_heads, value_dim]` of the gated delta rule (see the module header).
pub fn gated_delta_rule(shape: DeltaShape, inputs: &DeltaInputs) -> Result<Vec<f32>> {
    shape.check(inputs)?;
    let q = l2_normalized(inputs.q, shape.key_dim, (shape.key_dim as f32).powf(-0.5));
    let k = l2_normalized(inputs.k, shape.key_dim, 1.0);
    let normalized = DeltaInputs { q: &q, k: &k, v: inputs.v, g: inputs.g, beta: inputs.beta };
    // One unit per (sequence, value head), each independent: spread over the cores.
    let units = shape.batch * shape.value_heads;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, units.max(1));
    let per_thread = units.div_ceil(threads).max(1);
    let outputs: Vec<Vec<f32>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..units)
            .step_by(per_thread)
            .map(|first| {
                let normalized = &normalized;
                scope.spawn(move || {
                    (first..(first + per_thread).min(units))
                        .map(|unit| run_unit(shape, normalized, unit))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect::<Vec<Vec<f32>>>()
    });
    if outputs.len() != units {
        return Err(Error::internal("gated delta rule: a worker thread failed"));
    }
    let (heads, dim) = (shape.value_heads, shape.value_dim);
    let mut out = vec![0f32; shape.batch * shape.len * heads * dim];
    for (unit, values) in outputs.iter().enumerate() {
        let (b, h) = (unit / heads, unit % heads);
        for (t, row) in values.chunks_exact(dim).enumerate() {
            let at = ((b * shape.len + t) * heads + h) * dim;
            out[at..at + dim].copy_from_slice(row);
        }
    }
    Ok(out)
}

/// The recurrence of one (sequence, value head) unit: its outputs `[T, value_dim]`. q is normalised and scaled,
/// k normalised.
fn run_unit(shape: DeltaShape, inputs: &DeltaInputs, unit: usize) -> Vec<f32> {
    let DeltaShape { len, key_heads, value_heads, key_dim, value_dim, .. } = shape;
    let (b, h) = (unit / value_heads, unit % value_heads);
    let key_head = h / (value_heads / key_heads);
    let mut state = vec![0f32; key_dim * value_dim];
    let mut memory = vec![0f32; value_dim];
    let mut out = vec![0f32; len * value_dim];
    for t in 0..len {
        let token = b * len + t;
        let kq = (token * key_heads + key_head) * key_dim;
        let (q, k) = (&inputs.q[kq..kq + key_dim], &inputs.k[kq..kq + key_dim]);
        let at = (token * value_heads + h) * value_dim;
        let v = &inputs.v[at..at + value_dim];
        let (decay, beta) = (inputs.g[token * value_heads + h].exp(), inputs.beta[token * value_heads + h]);
        // Decay the state and read what it holds for k: m = Sᵀ k.
        memory.fill(0.0);
        for (row, &ki) in state.chunks_exact_mut(value_dim).zip(k) {
            for (m, s) in memory.iter_mut().zip(row.iter_mut()) {
                *s *= decay;
                *m += *s * ki;
            }
        }
        // δ = (v − m) β, written over m.
        for (m, &vi) in memory.iter_mut().zip(v) {
            *m = (vi - *m) * beta;
        }
        // S += k δᵀ, and the output o = Sᵀ q of the updated state.
        let o = &mut out[t * value_dim..(t + 1) * value_dim];
        for ((row, &ki), &qi) in state.chunks_exact_mut(value_dim).zip(k).zip(q) {
            for ((s, &d), o) in row.iter_mut().zip(memory.iter()).zip(o.iter_mut()) {
                *s += ki * d;
                *o += *s * qi;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunked form transformers runs on whole sequences (`torch_chunk_gated_delta_rule`), for one unit, from
    /// normalised inputs: within each chunk of `size` tokens (the sequence padded with zeros), `γ` the cumulative
    /// log decay, `A[i][j] = (β_i k_i · k_j) e^{γ_i − γ_j}` below the diagonal, `U = (I + A)⁻¹ (β v)`,
    /// `W = (I + A)⁻¹ (β k e^{γ})` (forward substitution), then `v' = U − W S`,
    /// `o_i = e^{γ_i} q_i S + Σ_{j ≤ i} (q_i · k_j) e^{γ_i − γ_j} v'_j`, `S = e^{γ_C} S + Σ_j e^{γ_C − γ_j} k_j v'_jᵀ`.
    fn chunked_unit(shape: DeltaShape, inputs: &DeltaInputs, unit: usize, size: usize) -> Vec<f32> {
        let DeltaShape { len, key_heads, value_heads, key_dim: dk, value_dim: dv, .. } = shape;
        let (b, h) = (unit / value_heads, unit % value_heads);
        let key_head = h / (value_heads / key_heads);
        let padded = len.div_ceil(size) * size;
        let token = |t: usize| b * len + t;
        let row = |xs: &[f32], t: usize, heads: usize, head: usize, dim: usize| -> Vec<f32> {
            if t >= len {
                return vec![0.0; dim];
            }
            let at = (token(t) * heads + head) * dim;
            xs[at..at + dim].to_vec()
        };
        let scalar = |xs: &[f32], t: usize| if t < len { xs[token(t) * value_heads + h] } else { 0.0 };
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let mut state = vec![vec![0f32; dv]; dk];
        let mut out = Vec::with_capacity(padded * dv);
        for start in (0..padded).step_by(size) {
            let ts: Vec<usize> = (start..start + size).collect();
            let q: Vec<Vec<f32>> = ts.iter().map(|&t| row(inputs.q, t, key_heads, key_head, dk)).collect();
            let k: Vec<Vec<f32>> = ts.iter().map(|&t| row(inputs.k, t, key_heads, key_head, dk)).collect();
            let v: Vec<Vec<f32>> = ts.iter().map(|&t| row(inputs.v, t, value_heads, h, dv)).collect();
            let beta: Vec<f32> = ts.iter().map(|&t| scalar(inputs.beta, t)).collect();
            let gamma: Vec<f32> = ts
                .iter()
                .scan(0f32, |sum, &t| {
                    *sum += scalar(inputs.g, t);
                    Some(*sum)
                })
                .collect();
            let decay = |i: usize, j: usize| (gamma[i] - gamma[j]).exp();
            let a = |i: usize, j: usize| dot(&k[i], &k[j]) * beta[i] * decay(i, j);
            let mut u: Vec<Vec<f32>> = Vec::with_capacity(size);
            let mut w: Vec<Vec<f32>> = Vec::with_capacity(size);
            for i in 0..size {
                let mut ui: Vec<f32> = v[i].iter().map(|x| x * beta[i]).collect();
                let mut wi: Vec<f32> = k[i].iter().map(|x| x * beta[i] * gamma[i].exp()).collect();
                for j in 0..i {
                    let aij = a(i, j);
                    ui.iter_mut().zip(&u[j]).for_each(|(x, y)| *x -= aij * y);
                    wi.iter_mut().zip(&w[j]).for_each(|(x, y)| *x -= aij * y);
                }
                u.push(ui);
                w.push(wi);
            }
            let read = |x: &[f32], state: &[Vec<f32>]| -> Vec<f32> {
                (0..dv).map(|c| x.iter().zip(state).map(|(xi, s)| xi * s[c]).sum()).collect()
            };
            let fresh: Vec<Vec<f32>> =
                (0..size).map(|i| u[i].iter().zip(read(&w[i], &state)).map(|(x, y)| x - y).collect()).collect();
            for i in 0..size {
                let decayed: Vec<f32> = q[i].iter().map(|x| x * gamma[i].exp()).collect();
                let mut o = read(&decayed, &state);
                for j in 0..=i {
                    let p = dot(&q[i], &k[j]) * decay(i, j);
                    o.iter_mut().zip(&fresh[j]).for_each(|(x, y)| *x += p * y);
                }
                out.extend(o);
            }
            let last = size - 1;
            for (r, srow) in state.iter_mut().enumerate() {
                for (c, s) in srow.iter_mut().enumerate() {
                    let update: f32 = (0..size).map(|j| k[j][r] * decay(last, j) * fresh[j][c]).sum();
                    *s = *s * gamma[last].exp() + update;
                }
            }
        }
        out.truncate(len * dv);
        out
    }

    /// Deterministic values in [lo, hi) (xorshift).
    fn values(count: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..count)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                lo + (hi - lo) * ((x >> 40) as f32 / (1u64 << 24) as f32)
            })
            .collect()
    }

    #[test]
    fn the_recurrent_form_equals_the_chunked_form() {
        let shape = DeltaShape { batch: 2, len: 150, key_heads: 2, value_heads: 4, key_dim: 8, value_dim: 6 };
        let (tokens, keys) = (shape.batch * shape.len, shape.key_heads * shape.key_dim);
        let q = values(tokens * keys, 1, -1.0, 1.0);
        let k = values(tokens * keys, 2, -1.0, 1.0);
        let v = values(tokens * shape.value_heads * shape.value_dim, 3, -2.0, 2.0);
        let g = values(tokens * shape.value_heads, 4, -1.5, 0.0);
        let beta = values(tokens * shape.value_heads, 5, 0.0, 1.0);
        let inputs = DeltaInputs { q: &q, k: &k, v: &v, g: &g, beta: &beta };
        let recurrent = gated_delta_rule(shape, &inputs).unwrap();
        let qn = l2_normalized(&q, shape.key_dim, (shape.key_dim as f32).powf(-0.5));
        let kn = l2_normalized(&k, shape.key_dim, 1.0);
        let normalized = DeltaInputs { q: &qn, k: &kn, v: &v, g: &g, beta: &beta };
        let scale = recurrent.iter().fold(0f32, |m, x| m.max(x.abs()));
        for size in [1, 16, 64] {
            for unit in 0..shape.batch * shape.value_heads {
                let chunked = chunked_unit(shape, &normalized, unit, size);
                let (b, h) = (unit / shape.value_heads, unit % shape.value_heads);
                for (t, row) in chunked.chunks_exact(shape.value_dim).enumerate() {
                    let at = ((b * shape.len + t) * shape.value_heads + h) * shape.value_dim;
                    for (got, want) in recurrent[at..at + shape.value_dim].iter().zip(row) {
                        assert!(
                            (got - want).abs() <= 2e-6 * scale,
                            "chunks of {size}, unit {unit}, t {t}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_tiny_case_matches_transformers() {
        // One key head serving two value heads, three tokens. Expected: transformers 5.25's
        // torch_chunk_gated_delta_rule (use_qk_l2norm_in_kernel=True, f32) on these inputs. By hand, token 0 of
        // head 0: q = (1, 2)/√5/√2, k = (1, 0), δ = β v = (0.5, 1), S = k δᵀ, o = Sᵀ q = (0.158114, 0.316228).
        let shape = DeltaShape { batch: 1, len: 3, key_heads: 1, value_heads: 2, key_dim: 2, value_dim: 2 };
        let q = [1.0, 2.0, 0.5, -1.0, 3.0, 0.0];
        let k = [1.0, 0.0, 1.0, 1.0, -2.0, 1.0];
        let v = [1.0, 2.0, -1.0, 0.5, 0.0, 1.0, 2.0, 2.0, 3.0, -1.0, 0.5, 0.25];
        let g = [-0.1, -0.5, -0.2, 0.0, -1.0, -0.3];
        let beta = [0.5, 0.9, 0.25, 0.1, 1.0, 0.75];
        let got = gated_delta_rule(shape, &DeltaInputs { q: &q, k: &k, v: &v, g: &g, beta: &beta }).unwrap();
        let want = [
            0.158_113_78,
            0.316_227_56,
            -0.284_604_8,
            0.142_302_4,
            0.145_634_14,
            0.235_366_64,
            -0.343_556_28,
            0.104_696_14,
            -1.884_054_9,
            0.686_668_4,
            -0.357_394_1,
            0.019_312_188,
        ];
        for (i, (got, want)) in got.iter().zip(want).enumerate() {
            assert!((got - want).abs() <= 1e-6 * want.abs().max(1.0), "output {i}: {got} vs transformers {want}");
        }
    }

    #[test]
    fn mismatched_sizes_are_refused() {
        let shape = DeltaShape { batch: 1, len: 2, key_heads: 1, value_heads: 2, key_dim: 2, value_dim: 2 };
        let inputs = DeltaInputs { q: &[0.0; 4], k: &[0.0; 4], v: &[0.0; 7], g: &[0.0; 4], beta: &[0.0; 4] };
        assert!(gated_delta_rule(shape, &inputs).is_err());
    }
}
