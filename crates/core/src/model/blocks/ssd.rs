//! The Mamba-2 selective scan in its chunked form (state space duality), computed in f32.
//!
//! Per head h (group g of the B and C it reads), with state `S ∈ R^{P×N}` starting at zero, the scan is the
//! recurrence `S_t = exp(dt_t·A) S_t-1 + dt_t · x_t ⊗ B_t`, `y_t = S_t C_t + D x_t`. The chunked form computes the
//! same sums re-associated: within a chunk of positions, `y_l = Σ_{s≤l} (C_l·B_s) exp(ΣA dt over (s, l]) dt_s x_s`;
//! each chunk's final state decays into the next chunks, whose positions read it through C. Sequences are padded
//! with zeros to a whole number of chunks and cut back after.
//! transformers: `mamba2_chunk_scan` of models/granitemoehybrid and models/nemotron_h.

use candle_core::{DType, Device, Tensor, D};

use crate::error::Result;

/// The inputs of one scan, every tensor f32: `x [batch, T, heads, P]`, `dt [batch, T, heads]` (after the bias,
/// softplus and clamp), `a [heads]` (negative), `b` and `c` `[batch, T, groups, N]`, `d [heads]`.
pub struct ScanInputs<'a> {
    pub x: &'a Tensor,
    pub dt: &'a Tensor,
    pub a: &'a Tensor,
    pub b: &'a Tensor,
    pub c: &'a Tensor,
    pub d: &'a Tensor,
}

/// `[..., L]` → `[..., L, L]`: entry (l, s) is the sum of `xs` over the positions (s, l] when s ≤ l, -inf above
/// the diagonal (a masked cumulative sum, as transformers' `segment_sum`).
fn segment_sum(xs: &Tensor) -> Result<Tensor> {
    let len = xs.dim(D::Minus1)?;
    let mut dims = xs.dims().to_vec();
    let rank = dims.len();
    dims.insert(rank - 1, len);
    let device = xs.device();
    // Row s, column k: xs[k] where k > s; summed along k, then transposed to (l, s).
    let strictly_above = Tensor::triu2(len, DType::F32, device)?.sub(&Tensor::eye(len, DType::F32, device)?)?;
    let terms = xs.unsqueeze(rank - 1)?.broadcast_as(dims.as_slice())?.broadcast_mul(&strictly_above)?;
    let sums = cumsum_last(&terms)?.transpose(rank - 1, rank)?;
    Ok(sums.broadcast_add(&upper_minus_infinity(len, device)?)?)
}

/// The cumulative sum over the last dimension.
fn cumsum_last(xs: &Tensor) -> Result<Tensor> {
    let len = xs.dim(D::Minus1)?;
    let rows = xs.elem_count() / len.max(1);
    let sums = xs.contiguous()?.reshape((rows, len))?.matmul(&Tensor::triu2(len, DType::F32, xs.device())?)?;
    Ok(sums.reshape(xs.shape())?)
}

/// `a · b` over the last two dimensions, the leading ones (the same in both) flattened into one: candle's
/// matmul takes at most two of them.
fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (a_dims, b_dims) = (a.dims(), b.dims());
    let rank = a_dims.len();
    let (m, k, n) = (a_dims[rank - 2], a_dims[rank - 1], b_dims[rank - 1]);
    let batch: usize = a_dims[..rank - 2].iter().product();
    let product = a.contiguous()?.reshape((batch, m, k))?.matmul(&b.contiguous()?.reshape((batch, k, n))?)?;
    let mut dims = a_dims.to_vec();
    dims[rank - 1] = n;
    Ok(product.reshape(dims)?)
}

/// `[L, L]`: 0 on and below the diagonal, -inf above.
fn upper_minus_infinity(len: usize, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> =
        (0..len).flat_map(|l| (0..len).map(move |s| if s <= l { 0.0 } else { f32::NEG_INFINITY })).collect();
    Ok(Tensor::from_vec(values, (len, len), device)?)
}

/// `[batch, T, heads, K]` padded with `pad` zero positions, cut into chunks and laid out heads first:
/// `[batch, heads, chunks, chunk, K]`.
fn into_chunks(xs: &Tensor, pad: usize, chunk: usize) -> Result<Tensor> {
    let (batch, len, heads, width) = xs.dims4()?;
    let xs = xs.pad_with_zeros(1, 0, pad)?;
    let xs = xs.reshape((batch, (len + pad) / chunk, chunk, heads, width))?;
    Ok(xs.permute((0, 3, 1, 2, 4))?.contiguous()?)
}

/// Each group's `[batch, T, groups, N]` repeated for the heads that read it: `[batch, T, heads, N]`.
fn per_head(xs: &Tensor, heads: usize) -> Result<Tensor> {
    let (batch, len, groups, state) = xs.dims4()?;
    let xs = xs.unsqueeze(3)?.broadcast_as((batch, len, groups, heads / groups, state))?;
    Ok(xs.reshape((batch, len, heads, state))?)
}

/// Bytes of the largest intermediates (the per-chunk position × position terms and the per-head B and C) computed
/// at once: sequences are scanned a few at a time so that long batches stay within this.
const SCAN_BYTES_AT_ONCE: usize = 256 << 20;

/// The scan output `[batch, T, heads, P]` (the `D` skip included), in chunks of `chunk` positions, over as many
/// sequences at a time as [`SCAN_BYTES_AT_ONCE`] allows (each sequence is scanned on its own, so the result does
/// not depend on the grouping).
pub fn scan(inputs: &ScanInputs, chunk: usize) -> Result<Tensor> {
    let (batch, len, heads, _) = inputs.x.dims4()?;
    let state = inputs.b.dim(3)?;
    let per_sequence = 2 * heads * (len + chunk) * (chunk + state) * std::mem::size_of::<f32>();
    let rows = (SCAN_BYTES_AT_ONCE / per_sequence.max(1)).max(1);
    if rows >= batch {
        return chunked_scan(inputs, chunk);
    }
    let mut outputs = Vec::with_capacity(batch.div_ceil(rows));
    for start in (0..batch).step_by(rows) {
        let n = rows.min(batch - start);
        let (x, dt, b, c) = (
            inputs.x.narrow(0, start, n)?,
            inputs.dt.narrow(0, start, n)?,
            inputs.b.narrow(0, start, n)?,
            inputs.c.narrow(0, start, n)?,
        );
        let part = ScanInputs { x: &x, dt: &dt, a: inputs.a, b: &b, c: &c, d: inputs.d };
        outputs.push(chunked_scan(&part, chunk)?);
    }
    Ok(Tensor::cat(&outputs, 0)?)
}

/// The scan output `[batch, T, heads, P]` (the `D` skip included), in chunks of `chunk` positions.
pub fn chunked_scan(inputs: &ScanInputs, chunk: usize) -> Result<Tensor> {
    let (batch, len, heads, head_dim) = inputs.x.dims4()?;
    let state = inputs.b.dim(3)?;
    let pad = (chunk - len % chunk) % chunk;
    let chunks = (len + pad) / chunk;
    let skip = inputs.x.broadcast_mul(&inputs.d.reshape((1, 1, heads, 1))?)?;
    // x·dt and A·dt, chunked: [batch, heads, chunks, chunk, P] and [batch, heads, chunks, chunk].
    let x = into_chunks(&inputs.x.broadcast_mul(&inputs.dt.unsqueeze(3)?)?, pad, chunk)?;
    let a_dt = inputs.dt.broadcast_mul(&inputs.a.reshape((1, 1, heads))?)?.unsqueeze(3)?;
    let a_dt = into_chunks(&a_dt, pad, chunk)?.squeeze(4)?;
    let b = into_chunks(&per_head(inputs.b, heads)?, pad, chunk)?;
    let c = into_chunks(&per_head(inputs.c, heads)?, pad, chunk)?;
    let a_cumsum = cumsum_last(&a_dt)?;

    // Within each chunk: (C_l·B_s) · exp(segment sums) applied to x.
    let decay = segment_sum(&a_dt)?.exp()?;
    let scores = (matmul(&c, &b.transpose(3, 4)?)? * decay)?;
    let y_diag = matmul(&scores, &x)?;

    // Each chunk's final state from its own positions: Σ_l B_l exp(A_cumsum_last − A_cumsum_l) x_l, [.., P, N].
    let last = a_cumsum.narrow(3, chunk - 1, 1)?;
    let to_end = last.broadcast_sub(&a_cumsum)?.exp()?;
    let states = matmul(&x.transpose(3, 4)?, &b.broadcast_mul(&to_end.unsqueeze(4)?)?)?;

    // Across chunks: the state entering each chunk, from the states of all earlier chunks.
    let zeros = Tensor::zeros((batch, heads, 1, head_dim, state), DType::F32, states.device())?;
    let states = Tensor::cat(&[&zeros, &states], 2)?.reshape((batch, heads, chunks + 1, head_dim * state))?;
    let ends = last.squeeze(3)?.pad_with_zeros(2, 1, 0)?;
    let entering = matmul(&segment_sum(&ends)?.exp()?, &states)?;
    let entering = entering.narrow(2, 0, chunks)?.reshape((batch, heads, chunks, head_dim, state))?;

    // What the entering state contributes to each position: (C_l · state) exp(A_cumsum_l).
    let y_off = matmul(&c, &entering.transpose(3, 4)?)?.broadcast_mul(&a_cumsum.exp()?.unsqueeze(4)?)?;
    let y = (y_diag + y_off)?.permute((0, 2, 3, 1, 4))?.reshape((batch, chunks * chunk, heads, head_dim))?;
    Ok((y.narrow(1, 0, len)? + skip)?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// Flat row-major values of a tensor.
    fn values(xs: &Tensor) -> Vec<f32> {
        xs.flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// The recurrence, one position at a time with scalars: `[batch, T, heads, P]` row-major.
    fn recurrence(inputs: &ScanInputs) -> Vec<f32> {
        let (batch, len, heads, head_dim) = inputs.x.dims4().unwrap();
        let (groups, state) = (inputs.b.dim(2).unwrap(), inputs.b.dim(3).unwrap());
        let (x, dt, a, b, c, d) = (
            values(inputs.x),
            values(inputs.dt),
            values(inputs.a),
            values(inputs.b),
            values(inputs.c),
            values(inputs.d),
        );
        let mut y = vec![0f32; x.len()];
        for n in 0..batch {
            for h in 0..heads {
                let g = h / (heads / groups);
                let mut s = vec![0f32; head_dim * state];
                for t in 0..len {
                    let step = dt[(n * len + t) * heads + h];
                    let decay = (step * a[h]).exp();
                    let bc = |m: &[f32], k: usize| m[((n * len + t) * groups + g) * state + k];
                    for p in 0..head_dim {
                        let xi = x[((n * len + t) * heads + h) * head_dim + p];
                        let mut out = 0f32;
                        for k in 0..state {
                            let cell = &mut s[p * state + k];
                            *cell = decay * *cell + step * xi * bc(&b, k);
                            out += *cell * bc(&c, k);
                        }
                        y[((n * len + t) * heads + h) * head_dim + p] = out + d[h] * xi;
                    }
                }
            }
        }
        y
    }

    fn relative_l2(got: &[f32], want: &[f32]) -> f32 {
        let num: f32 = got.iter().zip(want).map(|(g, w)| (g - w) * (g - w)).sum();
        let den: f32 = want.iter().map(|w| w * w).sum();
        (num / den).sqrt()
    }

    #[test]
    fn the_chunked_scan_equals_the_recurrence() {
        let device = Device::Cpu;
        let (batch, len, heads, head_dim, groups, state) = (2, 13, 4, 3, 2, 5);
        let x = Tensor::randn(0f32, 1.0, (batch, len, heads, head_dim), &device).unwrap();
        // Time steps of softplus's range and negative A: decays between ~0.05 and 1.
        let dt = Tensor::rand(0.01f32, 1.5, (batch, len, heads), &device).unwrap();
        let a = Tensor::new(&[-0.5f32, -1.0, -2.0, -0.1], &device).unwrap();
        let b = Tensor::randn(0f32, 1.0, (batch, len, groups, state), &device).unwrap();
        let c = Tensor::randn(0f32, 1.0, (batch, len, groups, state), &device).unwrap();
        let d = Tensor::new(&[1.0f32, 0.5, -0.3, 2.0], &device).unwrap();
        let inputs = ScanInputs { x: &x, dt: &dt, a: &a, b: &b, c: &c, d: &d };
        let want = recurrence(&inputs);
        for chunk in [1, 3, 4, 8, 13, 16] {
            let got = values(&chunked_scan(&inputs, chunk).unwrap());
            let error = relative_l2(&got, &want);
            assert!(error < 1e-6, "chunks of {chunk}: relative L2 {error}");
            // One sequence at a time gives the same values.
            let rows: Vec<Tensor> = (0..batch)
                .map(|n| {
                    let row = |t: &Tensor| t.narrow(0, n, 1).unwrap();
                    let (x, dt, b, c) = (row(&x), row(&dt), row(&b), row(&c));
                    chunked_scan(&ScanInputs { x: &x, dt: &dt, a: &a, b: &b, c: &c, d: &d }, chunk).unwrap()
                })
                .collect();
            assert_eq!(values(&Tensor::cat(&rows, 0).unwrap()), got, "chunks of {chunk}, one sequence at a time");
        }
        assert_eq!(values(&scan(&inputs, 4).unwrap()), values(&chunked_scan(&inputs, 4).unwrap()));
    }

    /// transformers 5.25's `mamba2_chunk_scan` (models/granitemoehybrid, PyTorch path, f32) on one sequence of 5
    /// positions in chunks of 2: 2 heads of 2 channels, one group, state 3; `x[t, h, p] = sin(1 + 0.7t + 0.3h +
    /// 0.11p)`, `dt[t, h] = 0.2 + 0.1t + 0.3h`, `A = [-0.5, -1.5]`, `B[t, n] = cos(0.5t + 0.2n)`,
    /// `C[t, n] = sin(0.3t − 0.4n)`, `D = [0.5, -1]`; its output, to 7 decimals.
    #[test]
    fn a_small_scan_gives_what_transformers_gives() {
        let device = Device::Cpu;
        let (len, heads, head_dim, state) = (5usize, 2usize, 2usize, 3usize);
        let grid = |dims: &[usize], f: &dyn Fn(&[usize]) -> f32| -> Tensor {
            let mut data = Vec::new();
            let mut index = vec![0; dims.len()];
            for flat in 0..dims.iter().product::<usize>() {
                let mut rest = flat;
                for (slot, &dim) in index.iter_mut().zip(dims).rev() {
                    *slot = rest % dim;
                    rest /= dim;
                }
                data.push(f(&index));
            }
            Tensor::from_vec(data, dims, &device).unwrap()
        };
        let x = grid(&[1, len, heads, head_dim], &|i| {
            (1.0 + 0.7 * i[1] as f32 + 0.3 * i[2] as f32 + 0.11 * i[3] as f32).sin()
        });
        let dt = grid(&[1, len, heads], &|i| 0.2 + 0.1 * i[1] as f32 + 0.3 * i[2] as f32);
        let b = grid(&[1, len, 1, state], &|i| (0.5 * i[1] as f32 + 0.2 * i[3] as f32).cos());
        let c = grid(&[1, len, 1, state], &|i| (0.3 * i[1] as f32 - 0.4 * i[3] as f32).sin());
        let a = Tensor::new(&[-0.5f32, -1.5], &device).unwrap();
        let d = Tensor::new(&[0.5f32, -1.0], &device).unwrap();
        let inputs = ScanInputs { x: &x, dt: &dt, a: &a, b: &b, c: &c, d: &d };
        let want: [f64; 20] = [
            0.2453082, 0.2611168, -1.4657574, -1.5015690, 0.4262814, 0.4146306, -1.0198299, -0.9662852, 0.6264660,
            0.5740865, -0.1851328, -0.1124384, 0.4851419, 0.4197427, 0.4107136, 0.5024205, 0.5863400, 0.5936251,
            1.6884077, 1.8015926,
        ];
        let got = values(&chunked_scan(&inputs, 2).unwrap());
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() < 1e-6, "{g} vs transformers {w}");
        }
        let want: Vec<f32> = want.iter().map(|&w| w as f32).collect();
        assert!(relative_l2(&recurrence(&inputs), &want) < 1e-6);
    }
}
