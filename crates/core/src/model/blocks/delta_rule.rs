//! The gated delta rule of Gated DeltaNet and Kimi Delta Attention, in its recurrent form, in f32 on the host. Per
//! value head, a state `S [key_dim, value_dim]` starts at 0 and, token after token:
//!
//! ```text
//! S = diag(exp(g_t)) · S;   m = Sᵀ k_t;   δ = (v_t − m) · β_t;   S = S + k_t δᵀ;   o_t = Sᵀ q_t
//! ```
//!
//! with q and k L2-normalised (`x · rsqrt(Σx² + 1e-6)`) and q scaled by `key_dim^-0.5`; key head `h / r` serves
//! value heads `h` (`r = value_heads / key_heads`, transformers' `repeat_interleave`). The log decay `g_t` is one
//! number per value head in Gated DeltaNet (the whole state decays alike) and one per key channel in Kimi Delta
//! Attention (each row of the state at its own rate). transformers computes the same recurrence re-associated in
//! chunks of 64 tokens for whole sequences (`torch_chunk_gated_delta_rule`, `chunk_kimi_delta_attention`) and this
//! form for single tokens (`torch_recurrent_gated_delta_rule`, `recurrent_kimi_delta_attention`); the two agree to
//! f32 rounding (the tests below compare them). Kimi's L2 norm divides by `√(Σx² + 1e-6)` where this multiplies by
//! its inverse, the same to within one rounding.
//! transformers: models/qwen3_next/modeling_qwen3_next.py, models/kimi_linear/modeling_kimi_linear.py.

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
            ("g", inputs.g.values().len(), tokens * self.value_heads * inputs.g.per_token_and_head(self.key_dim)),
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

/// The log decay `g` of every token, row-major f32.
#[derive(Clone, Copy)]
pub enum Decay<'a> {
    /// `[B, T, value_heads]`: the whole state of a head decays alike (Gated DeltaNet).
    PerHead(&'a [f32]),
    /// `[B, T, value_heads, key_dim]`: each row of a head's state decays at its own rate (Kimi Delta Attention).
    PerKeyChannel(&'a [f32]),
}

impl<'a> Decay<'a> {
    fn values(&self) -> &'a [f32] {
        match self {
            Decay::PerHead(g) | Decay::PerKeyChannel(g) => g,
        }
    }

    /// How many values each (token, value head) has.
    fn per_token_and_head(&self, key_dim: usize) -> usize {
        match self {
            Decay::PerHead(_) => 1,
            Decay::PerKeyChannel(_) => key_dim,
        }
    }

    /// `exp(g)` of each row of the state of (token, value head) `at` (its index in `[B·T, value_heads]`), into `out`
    /// `[key_dim]`.
    fn row_factors(&self, at: usize, out: &mut [f32]) {
        match self {
            Decay::PerHead(g) => out.fill(g[at].exp()),
            Decay::PerKeyChannel(g) => {
                let dim = out.len();
                out.iter_mut().zip(&g[at * dim..(at + 1) * dim]).for_each(|(o, g)| *o = g.exp());
            }
        }
    }
}

/// Row-major f32 inputs: q, k `[B, T, key_heads, key_dim]`, v `[B, T, value_heads, value_dim]`, the log decay g and
/// the rate β `[B, T, value_heads]`.
pub struct DeltaInputs<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub g: Decay<'a>,
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
    let mut decays = vec![0f32; key_dim];
    let mut out = vec![0f32; len * value_dim];
    for t in 0..len {
        let token = b * len + t;
        let kq = (token * key_heads + key_head) * key_dim;
        let (q, k) = (&inputs.q[kq..kq + key_dim], &inputs.k[kq..kq + key_dim]);
        let at = (token * value_heads + h) * value_dim;
        let v = &inputs.v[at..at + value_dim];
        inputs.g.row_factors(token * value_heads + h, &mut decays);
        let beta = inputs.beta[token * value_heads + h];
        // Decay the state and read what it holds for k: m = Sᵀ k.
        memory.fill(0.0);
        for ((row, &ki), &decay) in state.chunks_exact_mut(value_dim).zip(k).zip(&decays) {
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

    /// The chunked form transformers runs on whole sequences (`torch_chunk_gated_delta_rule`,
    /// `chunk_kimi_delta_attention`), for one unit, from normalised inputs: within each chunk of `size` tokens (the
    /// sequence padded with zeros), `γ` the cumulative log decay of each key channel,
    /// `A[i][j] = β_i Σ_r k_i[r] k_j[r] e^{γ_i[r] − γ_j[r]}` below the diagonal, `U = (I + A)⁻¹ (β v)`,
    /// `W = (I + A)⁻¹ (β k ⊙ e^{γ})` (forward substitution), then `v' = U − W S`,
    /// `o_i = (q_i ⊙ e^{γ_i}) S + Σ_{j ≤ i} (Σ_r q_i[r] k_j[r] e^{γ_i[r] − γ_j[r]}) v'_j`,
    /// `S = diag(e^{γ_C}) S + Σ_j (k_j ⊙ e^{γ_C − γ_j}) v'_jᵀ`.
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
        let log_decay = |t: usize| -> Vec<f32> {
            match inputs.g {
                _ if t >= len => vec![0.0; dk],
                Decay::PerHead(g) => vec![g[token(t) * value_heads + h]; dk],
                Decay::PerKeyChannel(g) => row(g, t, value_heads, h, dk),
            }
        };
        let scalar = |xs: &[f32], t: usize| if t < len { xs[token(t) * value_heads + h] } else { 0.0 };
        let mut state = vec![vec![0f32; dv]; dk];
        let mut out = Vec::with_capacity(padded * dv);
        for start in (0..padded).step_by(size) {
            let ts: Vec<usize> = (start..start + size).collect();
            let q: Vec<Vec<f32>> = ts.iter().map(|&t| row(inputs.q, t, key_heads, key_head, dk)).collect();
            let k: Vec<Vec<f32>> = ts.iter().map(|&t| row(inputs.k, t, key_heads, key_head, dk)).collect();
            let v: Vec<Vec<f32>> = ts.iter().map(|&t| row(inputs.v, t, value_heads, h, dv)).collect();
            let beta: Vec<f32> = ts.iter().map(|&t| scalar(inputs.beta, t)).collect();
            let gamma: Vec<Vec<f32>> = ts
                .iter()
                .scan(vec![0f32; dk], |sum, &t| {
                    sum.iter_mut().zip(log_decay(t)).for_each(|(s, g)| *s += g);
                    Some(sum.clone())
                })
                .collect();
            // Σ_r x[r] y[r] e^{γ_i[r] − γ_j[r]}.
            let decayed_dot = |x: &[f32], y: &[f32], i: usize, j: usize| -> f32 {
                (0..dk).map(|r| x[r] * y[r] * (gamma[i][r] - gamma[j][r]).exp()).sum()
            };
            let mut u: Vec<Vec<f32>> = Vec::with_capacity(size);
            let mut w: Vec<Vec<f32>> = Vec::with_capacity(size);
            for i in 0..size {
                let mut ui: Vec<f32> = v[i].iter().map(|x| x * beta[i]).collect();
                let mut wi: Vec<f32> = (0..dk).map(|r| k[i][r] * beta[i] * gamma[i][r].exp()).collect();
                for j in 0..i {
                    let aij = beta[i] * decayed_dot(&k[i], &k[j], i, j);
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
                let decayed: Vec<f32> = (0..dk).map(|r| q[i][r] * gamma[i][r].exp()).collect();
                let mut o = read(&decayed, &state);
                for j in 0..=i {
                    let p = decayed_dot(&q[i], &k[j], i, j);
                    o.iter_mut().zip(&fresh[j]).for_each(|(x, y)| *x += p * y);
                }
                out.extend(o);
            }
            let last = size - 1;
            for (r, srow) in state.iter_mut().enumerate() {
                for (c, s) in srow.iter_mut().enumerate() {
                    let update: f32 =
                        (0..size).map(|j| k[j][r] * (gamma[last][r] - gamma[j][r]).exp() * fresh[j][c]).sum();
                    *s = *s * gamma[last][r].exp() + update;
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

    /// The recurrent form against the chunked form, in chunks of 1, 16 and 64 tokens over 150, for a decay given
    /// per head (`per_channel` false) or per key channel.
    fn check_recurrent_against_chunked(per_channel: bool) {
        let shape = DeltaShape { batch: 2, len: 150, key_heads: 2, value_heads: 4, key_dim: 8, value_dim: 6 };
        let (tokens, keys) = (shape.batch * shape.len, shape.key_heads * shape.key_dim);
        let q = values(tokens * keys, 1, -1.0, 1.0);
        let k = values(tokens * keys, 2, -1.0, 1.0);
        let v = values(tokens * shape.value_heads * shape.value_dim, 3, -2.0, 2.0);
        let per_head = if per_channel { shape.key_dim } else { 1 };
        let g_values = values(tokens * shape.value_heads * per_head, 4, -1.5, 0.0);
        let g = if per_channel { Decay::PerKeyChannel(&g_values) } else { Decay::PerHead(&g_values) };
        let beta = values(tokens * shape.value_heads, 5, 0.0, 1.0);
        let inputs = DeltaInputs { q: &q, k: &k, v: &v, g, beta: &beta };
        let recurrent = gated_delta_rule(shape, &inputs).unwrap();
        let qn = l2_normalized(&q, shape.key_dim, (shape.key_dim as f32).powf(-0.5));
        let kn = l2_normalized(&k, shape.key_dim, 1.0);
        let normalized = DeltaInputs { q: &qn, k: &kn, v: &v, g, beta: &beta };
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
    fn the_recurrent_form_equals_the_chunked_form() {
        check_recurrent_against_chunked(false);
    }

    #[test]
    fn with_a_decay_per_key_channel_the_recurrent_form_equals_the_chunked_form() {
        check_recurrent_against_chunked(true);
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
        let got =
            gated_delta_rule(shape, &DeltaInputs { q: &q, k: &k, v: &v, g: Decay::PerHead(&g), beta: &beta }).unwrap();
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
    fn a_tiny_case_with_a_decay_per_key_channel_matches_transformers() {
        // Two heads of two key and two value channels, three tokens. Expected: transformers 5.25's
        // chunk_kimi_delta_attention (use_qk_l2norm_in_kernel=True, f32) on these inputs; token 0 of head 0 is the
        // same as in the case above (a fresh state does not decay).
        let shape = DeltaShape { batch: 1, len: 3, key_heads: 2, value_heads: 2, key_dim: 2, value_dim: 2 };
        let q = [1.0, 2.0, 0.5, -1.0, 3.0, 0.0, -0.5, 1.5, 2.0, -1.0, 1.0, 1.0];
        let k = [1.0, 0.0, 1.0, 1.0, -2.0, 1.0, 0.5, 0.5, 0.0, 1.0, -1.0, 2.0];
        let v = [1.0, 2.0, -1.0, 0.5, 0.0, 1.0, 2.0, 2.0, 3.0, -1.0, 0.5, 0.25];
        let g = [-0.1, -0.5, -0.2, 0.0, -1.0, -0.3, -0.05, -2.0, -0.7, -0.01, -1.5, -0.4];
        let beta = [0.5, 0.9, 0.25, 0.1, 1.0, 0.75];
        let inputs = DeltaInputs { q: &q, k: &k, v: &v, g: Decay::PerKeyChannel(&g), beta: &beta };
        let got = gated_delta_rule(shape, &inputs).unwrap();
        let want = [
            0.158_113_78,
            0.316_227_56,
            0.201_245_98,
            -0.100_622_99,
            0.104_051_98,
            0.049_990_103,
            0.156_294_17,
            0.016_721_126,
            -0.902_467_1,
            0.338_431_1,
            0.049_849_555,
            0.135_912_87,
        ];
        for (i, (got, want)) in got.iter().zip(want).enumerate() {
            assert!((got - want).abs() <= 1e-6 * want.abs().max(1.0), "output {i}: {got} vs transformers {want}");
        }
    }

    #[test]
    fn mismatched_sizes_are_refused() {
        let shape = DeltaShape { batch: 1, len: 2, key_heads: 1, value_heads: 2, key_dim: 2, value_dim: 2 };
        let inputs =
            DeltaInputs { q: &[0.0; 4], k: &[0.0; 4], v: &[0.0; 7], g: Decay::PerHead(&[0.0; 4]), beta: &[0.0; 4] };
        assert!(gated_delta_rule(shape, &inputs).is_err());
        // A decay per key channel needs key_dim values per token and head.
        let inputs = DeltaInputs {
            q: &[0.0; 4],
            k: &[0.0; 4],
            v: &[0.0; 8],
            g: Decay::PerKeyChannel(&[0.0; 4]),
            beta: &[0.0; 4],
        };
        assert!(gated_delta_rule(shape, &inputs).is_err());
    }
}
