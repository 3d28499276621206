//! Fused steps of the calibration forward on the GPU (`forward.cu`): the attention's masked softmax and the MoE
//! block's weighted sum of routed outputs, each one kernel where the op-by-op path makes a pass per op. They
//! compute what the op-by-op path computes, in the same dtypes and at the same rounding points (tested against it
//! in `tests/kernels_cuda.rs`); only the order of the f32 sums may differ.

use candle_core::{DType, Tensor};

use super::{address, kernel_module, shape_error, Arg, Grid, Module, Source};
use crate::error::{Error, Result};

const FORWARD: Module = kernel_module!("forward");

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
        let dim = |value: usize| {
            u32::try_from(value).map_err(|_| Error::internal(format!("cuda::{op}: dimension too large")))
        };
        let grid = Grid::Fixed { grid: (dim(rows.div_ceil(4))?, 1, 1), block: (128, 1, 1) };
        let mask_address = address(mask)?;
        // Without sinks the kernel never reads this pointer; the mask's is a valid stand-in.
        let sinks_address = sinks.map(address).transpose()?.unwrap_or(mask_address);
        let mut args = [
            Arg::Out(&mut out),
            Arg::U64(mask_address),
            Arg::U64(sinks_address),
            Arg::U64(rows as u64),
            Arg::U32(dim(keys)?),
            Arg::U32(dim(queries)?),
            Arg::U32(dim(heads)?),
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
    if rows.dtype() != DType::U32 || !rows.is_contiguous() || top_k == 0 || count % top_k != 0 {
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
        let dim = |value: usize| {
            u32::try_from(value).map_err(|_| Error::internal(format!("cuda::{op}: dimension too large")))
        };
        let threads = 256;
        let grid =
            Grid::Fixed { grid: (dim(tokens)?, dim(hidden.div_ceil(threads))?, 1), block: (threads as u32, 1, 1) };
        let rows_address = address(rows)?;
        let weights_address = weights.map(address).transpose()?.unwrap_or(rows_address);
        let mut args = [
            Arg::Out(&mut out),
            Arg::U64(rows_address),
            Arg::U64(weights_address),
            Arg::U32(dim(hidden)?),
            Arg::U32(dim(top_k)?),
            Arg::I32(i32::from(weights.is_some())),
        ];
        source.launch(&FORWARD, &format!("{op}_{}", source.suffix()), grid, &mut args)?;
    }
    Ok(source.tensor(out, (tokens, hidden)))
}
