//! Fused steps of the calibration forward on the GPU (`forward.cu`): the attention heads' norm and rope, its masked
//! softmax, and the MoE block's weighted sum of routed outputs, each one kernel where the op-by-op path makes a pass per op. They
//! compute what the op-by-op path computes, in the same dtypes and at the same rounding points (tested against it
//! in `tests/kernels_cuda.rs`); only the order of the f32 sums may differ.

use candle_core::{DType, Tensor};

use super::{address, kernel_module, known_max, shape_error, to_u32, Arg, Grid, Module, Source};
use crate::error::{Error, Result};

const FORWARD: Module = kernel_module!("forward");
/// Largest head the head kernel takes (`MAX_HEAD_DIM` in forward.cu).
const MAX_HEAD_DIM: usize = 512;

/// `softmax(f32(scores) · scaling + mask)` over the last dimension, in f32, returned in the scores' dtype:
/// `scores [B, H, Q, K]` (q·kᵀ in the compute dtype), `mask [Q, K]` f32 (0 or -inf). With `sinks [H, Q]` f32 (a
/// head's sink logit repeated per query), each row's softmax also counts its head's sink, whose share is dropped.
pub fn softmax_scores(scores: &Tensor, mask: &Tensor, sinks: Option<&Tensor>, scaling: f32) -> Result<Tensor> {
    let op = "softmax_scores";
    let (b, heads, queries, keys) =
        scores.dims4().map_err(|_| shape_error(scores, "softmax_scores expects scores [B, H, Q, K]"))?;
    if mask.dims() != [queries, keys] || mask.dtype() != DType::F32 || !mask.is_contiguous() {
        return Err(shape_error(mask, &format!("softmax_scores expects a contiguous f32 mask [{queries}, {keys}]")));
    }
    if let Some(sinks) = sinks {
        if sinks.dims() != [heads, queries] || sinks.dtype() != DType::F32 || !sinks.is_contiguous() {
            return Err(shape_error(
                sinks,
                &format!("softmax_scores expects contiguous f32 sinks [{heads}, {queries}]"),
            ));
        }
    }
    let source = Source::new(scores, op)?;
    let rows = b * heads * queries;
    let mut out = source.alloc(scores.dtype(), rows * keys)?;
    if rows > 0 && keys > 0 {
        let grid = Grid::Fixed { grid: (to_u32(rows.div_ceil(4), op)?, 1, 1), block: (128, 1, 1) };
        let mask_address = address(mask)?;
        // Without sinks the kernel never reads this pointer; the mask's is a valid stand-in.
        let sinks_address = sinks.map(address).transpose()?.unwrap_or(mask_address);
        let mut args = [
            Arg::Out(&mut out),
            Arg::U64(mask_address),
            Arg::U64(sinks_address),
            Arg::U64(rows as u64),
            Arg::U32(to_u32(keys, op)?),
            Arg::U32(to_u32(queries, op)?),
            Arg::U32(to_u32(heads, op)?),
            Arg::F32(scaling),
            Arg::I32(i32::from(sinks.is_some())),
        ];
        source.launch(&FORWARD, &format!("{op}_{}", source.suffix()), grid, &mut args)?;
    }
    Ok(source.tensor(out, scores.dims().to_vec()))
}

/// Each token's routed outputs summed in f32, in the order its slots are listed: `routed [slots, H]` (slots
/// sorted by expert), `rows [tokens · top_k]` U32 (each token's slots), and, unless the routing weights were
/// applied to the experts' input, `weights [slots]` in `routed`'s dtype, each output first multiplied by its weight
/// in that dtype. Returns `[tokens, H]` f32.
pub fn combine_routed(routed: &Tensor, rows: &Tensor, weights: Option<&Tensor>, top_k: usize) -> Result<Tensor> {
    let op = "combine_routed";
    let (slots, hidden) =
        routed.dims2().map_err(|_| shape_error(routed, "combine_routed expects outputs [slots, H]"))?;
    let count = rows.elem_count();
    if rows.dtype() != DType::U32 || !rows.is_contiguous() || top_k == 0 || !count.is_multiple_of(top_k) {
        return Err(shape_error(rows, &format!("combine_routed expects contiguous U32 slot rows [tokens · {top_k}]")));
    }
    if let Some(weights) = weights {
        if weights.elem_count() != slots || weights.dtype() != routed.dtype() || !weights.is_contiguous() {
            return Err(shape_error(
                weights,
                &format!("combine_routed expects contiguous {:?} routing weights [{slots}]", routed.dtype()),
            ));
        }
    }
    let tokens = count / top_k;
    let source = Source::new(routed, op)?;
    let mut out = source.alloc(DType::F32, tokens * hidden)?;
    if tokens > 0 && hidden > 0 {
        let threads = 256;
        let grid = Grid::Fixed {
            grid: (to_u32(tokens, op)?, to_u32(hidden.div_ceil(threads), op)?, 1),
            block: (threads as u32, 1, 1),
        };
        let rows_address = address(rows)?;
        let weights_address = weights.map(address).transpose()?.unwrap_or(rows_address);
        let mut args = [
            Arg::Out(&mut out),
            Arg::U64(rows_address),
            Arg::U64(weights_address),
            Arg::U32(to_u32(hidden, op)?),
            Arg::U32(to_u32(top_k, op)?),
            Arg::I32(i32::from(weights.is_some())),
        ];
        source.launch(&FORWARD, &format!("{op}_{}", source.suffix()), grid, &mut args)?;
    }
    Ok(source.tensor(out, (tokens, hidden)))
}

/// A projection's heads `xs [B, T, H, D]` (as they lie) → `[B, H, T, D]`, with each head's RMSNorm (`weight [D]`,
/// `eps`) and the rope (`cos`, `sin` `[≥T, R]`, rotating the leading R dimensions by halves) where given: the
/// values of the op-by-op path (normalise in f32, round, times the weight; each rope product and sum rounded to
/// the dtype).
pub fn head_norm_rope(xs: &Tensor, norm: Option<(&Tensor, f32)>, rope: Option<(&Tensor, &Tensor)>) -> Result<Tensor> {
    let op = "head_norm_rope";
    let (b, t, heads, dim) = xs.dims4().map_err(|_| shape_error(xs, "head_norm_rope expects heads [B, T, H, D]"))?;
    if dim > MAX_HEAD_DIM {
        return Err(shape_error(xs, &format!("head_norm_rope takes heads of at most {MAX_HEAD_DIM}")));
    }
    let same = |other: &Tensor| other.dtype() == xs.dtype() && other.is_contiguous();
    if let Some((weight, _)) = norm {
        if weight.dims() != [dim] || !same(weight) {
            return Err(shape_error(weight, &format!("head_norm_rope expects a contiguous norm weight [{dim}]")));
        }
    }
    let rotary = match rope {
        Some((cos, sin)) => {
            let (rows, rotary) = cos.dims2().map_err(|_| shape_error(cos, "head_norm_rope expects cos [T, R]"))?;
            if sin.dims() != cos.dims() || !same(cos) || !same(sin) || rows < t || rotary > dim || rotary % 2 != 0 {
                return Err(shape_error(cos, &format!("head_norm_rope expects cos and sin [≥{t}, even R ≤ {dim}]")));
            }
            rotary
        }
        None => 0,
    };
    let source = Source::new(xs, op)?;
    let rows = b * t * heads;
    let mut out = source.alloc(xs.dtype(), rows * dim)?;
    if rows > 0 && dim > 0 {
        // Stand-ins for pointers the kernel does not read without a norm or a rope.
        let xs_address = address(xs)?;
        let weight_address = norm.map(|(w, _)| address(w)).transpose()?.unwrap_or(xs_address);
        let (cos_address, sin_address) = match rope {
            Some((cos, sin)) => (address(cos)?, address(sin)?),
            None => (xs_address, xs_address),
        };
        let mut args = [
            Arg::Out(&mut out),
            Arg::U64(weight_address),
            Arg::U64(cos_address),
            Arg::U64(sin_address),
            Arg::U64(rows as u64),
            Arg::U32(to_u32(t, op)?),
            Arg::U32(to_u32(heads, op)?),
            Arg::U32(to_u32(dim, op)?),
            Arg::U32(to_u32(rotary, op)?),
            Arg::F32(norm.map_or(0.0, |(_, eps)| eps)),
            Arg::I32(i32::from(norm.is_some())),
            Arg::I32(i32::from(rope.is_some())),
        ];
        let grid = Grid::Fixed { grid: (to_u32(rows.div_ceil(4), op)?, 1, 1), block: (128, 1, 1) };
        source.launch(&FORWARD, &format!("{op}_{}", source.suffix()), grid, &mut args)?;
    }
    Ok(source.tensor(out, (b, heads, t, dim)))
}

/// RMSNorm over the last dimension: `xs [.., D]` → the same shape, the mean of squares in f32, `x / sqrt(mean +
/// eps)` rounded to the dtype, times `weight [D]` (the op-by-op values); its maximum |x| is recorded (see
/// [`known_max`]).
pub fn rms_norm(xs: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    Ok(norm_launch(xs, None, weight, eps)?.1)
}

/// The residual sum `xs + residual` (both `[.., D]` of one dtype, rounded once as candle and torch add them) and
/// its RMSNorm as [`rms_norm`] computes it, in one pass: `(sum, normed)`.
pub fn add_rms_norm(xs: &Tensor, residual: &Tensor, weight: &Tensor, eps: f32) -> Result<(Tensor, Tensor)> {
    if residual.dims() != xs.dims() || residual.dtype() != xs.dtype() {
        return Err(shape_error(
            residual,
            &format!("add_rms_norm expects a {:?} residual {:?}", xs.dtype(), xs.dims()),
        ));
    }
    let (sum, normed) = norm_launch(xs, Some(residual), weight, eps)?;
    Ok((sum.ok_or_else(|| Error::internal("cuda::add_rms_norm: no sum"))?, normed))
}

fn norm_launch(xs: &Tensor, residual: Option<&Tensor>, weight: &Tensor, eps: f32) -> Result<(Option<Tensor>, Tensor)> {
    let op = if residual.is_some() { "add_rms_norm" } else { "rms_norm" };
    let dim = *xs.dims().last().ok_or_else(|| shape_error(xs, &format!("{op} needs a last dimension")))?;
    if weight.dims() != [dim] || weight.dtype() != xs.dtype() || !weight.is_contiguous() {
        return Err(shape_error(weight, &format!("{op} expects a contiguous {:?} weight [{dim}]", xs.dtype())));
    }
    let source = Source::new(xs, op)?;
    let residual = residual.map(Tensor::contiguous).transpose()?;
    let rows = xs.elem_count().checked_div(dim).unwrap_or(0);
    let mut out = source.alloc(xs.dtype(), xs.elem_count())?;
    let mut sum = residual.as_ref().map(|_| source.alloc(xs.dtype(), xs.elem_count())).transpose()?;
    let mut amax = source.zeros(1)?;
    if rows > 0 {
        let grid = Grid::Fixed { grid: (to_u32(rows, op)?, 1, 1), block: (256, 1, 1) };
        let (weight, rows, dim) = (Arg::U64(address(weight)?), Arg::U64(rows as u64), Arg::U32(to_u32(dim, op)?));
        let name = format!("{op}_{}", source.suffix());
        match (&residual, &mut sum) {
            (Some(residual), Some(sum)) => {
                let residual = Arg::U64(address(residual)?);
                let (out, amax, eps) = (Arg::Out(&mut out), Arg::Out(&mut amax), Arg::F32(eps));
                source.launch(
                    &FORWARD,
                    &name,
                    grid,
                    &mut [residual, Arg::Out(sum), out, amax, weight, rows, dim, eps],
                )?;
            }
            _ => {
                let mut args = [Arg::Out(&mut out), Arg::Out(&mut amax), weight, rows, dim, Arg::F32(eps)];
                source.launch(&FORWARD, &name, grid, &mut args)?;
            }
        }
    }
    let normed = source.tensor(out, xs.dims().to_vec());
    known_max::offer(&normed, source.tensor(amax, ()));
    Ok((sum.map(|sum| source.tensor(sum, xs.dims().to_vec())), normed))
}

/// `xs + branch` for a stream `xs` in bf16, f16 or f32 and a branch `branch` of the same shape in F32: the branch
/// rounded to `xs`'s dtype and added, one rounding each (the values of `xs + branch.to_dtype(xs.dtype())`), in one
/// pass.
pub fn add_rounded(xs: &Tensor, branch: &Tensor) -> Result<Tensor> {
    let op = "add_rounded";
    if branch.dims() != xs.dims() || branch.dtype() != DType::F32 {
        return Err(shape_error(branch, &format!("add_rounded expects an F32 branch {:?}", xs.dims())));
    }
    let source = Source::new(xs, op)?;
    let branch = branch.contiguous()?;
    let count = xs.elem_count();
    let mut out = source.alloc(xs.dtype(), count)?;
    if count > 0 {
        let grid = Grid::Wave { work: count, rows: 1 };
        let mut args = [Arg::U64(address(&branch)?), Arg::Out(&mut out), Arg::U64(count as u64)];
        source.launch(&FORWARD, &format!("{op}_{}", source.suffix()), grid, &mut args)?;
    }
    Ok(source.tensor(out, xs.dims().to_vec()))
}

/// The gated activations the kernel computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GatedActivation {
    Silu,
    /// Exact (erf).
    Gelu,
    /// The tanh approximation.
    GeluTanh,
}

/// `act(gate) · up` of `gate_up [rows, 2I]` (gate in the first I columns): `[rows, I]`, the activation in f32 and
/// rounded to the dtype before the product (as torch computes it for bf16 and f16); its maximum |x| is recorded
/// (see [`known_max`]).
pub fn gated_activation(gate_up: &Tensor, activation: GatedActivation) -> Result<Tensor> {
    let op = "gated_activation";
    let (rows, two_i) =
        gate_up.dims2().map_err(|_| shape_error(gate_up, "gated_activation expects gate_up [rows, 2I]"))?;
    if two_i % 2 != 0 {
        return Err(shape_error(gate_up, "gated_activation expects an even gate/up width"));
    }
    let inter = two_i / 2;
    let source = Source::new(gate_up, op)?;
    let mut out = source.alloc(gate_up.dtype(), rows * inter)?;
    let mut amax = source.zeros(1)?;
    if rows * inter > 0 {
        let kind = match activation {
            GatedActivation::Silu => 0,
            GatedActivation::Gelu => 1,
            GatedActivation::GeluTanh => 2,
        };
        let grid = Grid::Wave { work: rows * inter, rows: 1 };
        let mut args = [
            Arg::Out(&mut out),
            Arg::Out(&mut amax),
            Arg::U64(rows as u64),
            Arg::U32(to_u32(inter, op)?),
            Arg::I32(kind),
        ];
        source.launch(&FORWARD, &format!("{op}_{}", source.suffix()), grid, &mut args)?;
    }
    let hidden = source.tensor(out, (rows, inter));
    known_max::offer(&hidden, source.tensor(amax, ()));
    Ok(hidden)
}

/// Rows `index` (U32 `[m]`) of `src [n, H]`: `[m, H]`, as `index_select` on dimension 0.
pub fn gather_rows(src: &Tensor, index: &Tensor) -> Result<Tensor> {
    let op = "gather_rows";
    let (n, hidden) = src.dims2().map_err(|_| shape_error(src, "gather_rows expects rows [n, H]"))?;
    if index.dtype() != DType::U32 || index.rank() != 1 || !index.is_contiguous() {
        return Err(shape_error(index, "gather_rows expects a contiguous U32 index [m]"));
    }
    let m = index.elem_count();
    let source = Source::new(src, op)?;
    let mut out = source.alloc(src.dtype(), m * hidden)?;
    let row_bytes = hidden * src.dtype().size_in_bytes();
    if m > 0 && row_bytes > 0 && n > 0 {
        let vectorized = row_bytes.is_multiple_of(16);
        let per_row = if vectorized { row_bytes / 16 } else { row_bytes };
        let pieces = per_row.div_ceil(256).clamp(1, 65_535);
        let grid = Grid::Fixed { grid: (to_u32(m, op)?, to_u32(pieces, op)?, 1), block: (256, 1, 1) };
        let mut args = [
            Arg::Out(&mut out),
            Arg::U64(address(index)?),
            Arg::U64(m as u64),
            Arg::U64(row_bytes as u64),
            Arg::I32(i32::from(vectorized)),
        ];
        source.launch(&FORWARD, op, grid, &mut args)?;
    }
    Ok(source.tensor(out, (m, hidden)))
}

/// Whether every value of `xs` is finite, with one small copy back (the flag).
pub fn all_finite(xs: &Tensor) -> Result<bool> {
    let op = "flag_non_finite";
    let source = Source::new(xs, op)?;
    let mut flag = source.zeros(1)?;
    let count = xs.elem_count();
    if count > 0 {
        let grid = Grid::Wave { work: count, rows: 1 };
        let mut args = [Arg::Out(&mut flag), Arg::U64(count as u64)];
        source.launch(&FORWARD, &format!("{op}_{}", source.suffix()), grid, &mut args)?;
    }
    Ok(source.tensor(flag, 1).to_vec1::<f32>()?[0] == 0.0)
}
