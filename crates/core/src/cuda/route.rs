//! MoE routing on the GPU (`route.cu`): each token's K experts and weights from the router logits, and the slots
//! grouped by expert, without taking the logits to the host. Only the slots per expert come back (one small copy):
//! the grouped GEMM needs them on the host. The router kinds with a kernel are those of [`DeviceRouter`]; the
//! others route on the host (`model/blocks/router.rs`), which defines the choices both paths make.

use std::ops::Range;

use candle_core::{DType, Device, Tensor};

use super::{address, kernel_module, shape_error, to_u32, Arg, Grid, Module, Source};
use crate::error::{Error, Result};

const ROUTE: Module = kernel_module!("route");
/// Limits of the kernel's shared-memory tables (`MAX_EXPERTS`, `MAX_TOP_K` in route.cu).
const MAX_EXPERTS: usize = 512;
const MAX_TOP_K: usize = 32;
/// Tokens per tile of the grouping kernels (`SCATTER_TILE` in route.cu).
const TILE: usize = 256;

/// A router the kernel computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DeviceRouter {
    /// Softmax over the logits, the K most probable, renormalised when `normalise`.
    Softmax { normalise: bool },
    /// Sigmoid scores; the K best by score plus correction bias among the `kept_groups` best of `groups` groups
    /// (a group scored by the sum of its best two); renormalised when `normalise` (the sum plus `norm_eps`), then
    /// multiplied by `scaling`.
    SigmoidGroups { normalise: bool, norm_eps: f32, scaling: f32, groups: usize, kept_groups: usize },
}

/// One batch's routing on the device.
pub struct DeviceRouting {
    /// Slots of expert e: `ranges[e]` (slots sorted by expert, tokens ascending within one).
    pub ranges: Vec<Range<usize>>,
    /// Token of each slot, U32 `[slots]`.
    pub tokens: Tensor,
    /// Routing weight of each slot, F32 `[slots]`.
    pub weights: Tensor,
    /// Each token's slots in ascending expert order, U32 `[tokens · K]`.
    pub rows: Tensor,
}

/// Whether the kernel takes a router of `experts` experts choosing `top_k`.
pub fn routes_on_device(experts: usize, top_k: usize, router: &DeviceRouter) -> bool {
    let groups_fit = match *router {
        DeviceRouter::Softmax { .. } => true,
        DeviceRouter::SigmoidGroups { groups, kept_groups, .. } => {
            (1..=32).contains(&groups) && experts.is_multiple_of(groups) && kept_groups <= groups
        }
    };
    groups_fit && (1..=MAX_EXPERTS).contains(&experts) && (1..=MAX_TOP_K).contains(&top_k) && top_k <= experts
}

/// Routes `logits [tokens, E]` (F32, on a CUDA device); `bias [E]` F32 is the correction bias of a sigmoid router.
pub fn route(logits: &Tensor, top_k: usize, router: &DeviceRouter, bias: Option<&Tensor>) -> Result<DeviceRouting> {
    let op = "route";
    let (tokens, experts) = logits.dims2().map_err(|_| shape_error(logits, "route expects logits [tokens, E]"))?;
    if logits.dtype() != DType::F32 || !routes_on_device(experts, top_k, router) {
        return Err(shape_error(
            logits,
            &format!("route: no kernel for F32 logits of {experts} experts choosing {top_k} this way"),
        ));
    }
    if let Some(bias) = bias {
        if bias.dims() != [experts] || bias.dtype() != DType::F32 || !bias.is_contiguous() {
            return Err(shape_error(bias, &format!("route expects a contiguous F32 correction bias [{experts}]")));
        }
    }
    let Device::Cuda(_) = logits.device() else { return Err(super::not_on_cuda(op, logits.device())) };
    let source = Source::new(logits, op)?;

    if tokens == 0 {
        let empty = || Tensor::zeros(0, DType::U32, logits.device());
        return Ok(DeviceRouting {
            ranges: vec![0..0; experts],
            tokens: empty()?,
            weights: Tensor::zeros(0, DType::F32, logits.device())?,
            rows: empty()?,
        });
    }
    let slots = tokens * top_k;
    let mut chosen = source.alloc(DType::U32, slots)?;
    let mut weights = source.alloc(DType::F32, slots)?;
    {
        let (kind, normalise, norm_eps, scaling, groups, kept) = match *router {
            DeviceRouter::Softmax { normalise } => (0, normalise, 0.0, 1.0, 1, 1),
            DeviceRouter::SigmoidGroups { normalise, norm_eps, scaling, groups, kept_groups } => {
                (1, normalise, norm_eps, scaling, groups, kept_groups)
            }
        };
        let logits_address = address(logits)?;
        let bias_address = bias.map(address).transpose()?.unwrap_or(logits_address);
        let mut args = [
            Arg::Out(&mut chosen),
            Arg::Out(&mut weights),
            Arg::U64(bias_address),
            Arg::U64(tokens as u64),
            Arg::U32(to_u32(experts, op)?),
            Arg::U32(to_u32(top_k, op)?),
            Arg::I32(kind),
            Arg::I32(i32::from(normalise)),
            Arg::F32(norm_eps),
            Arg::F32(scaling),
            Arg::U32(to_u32(groups, op)?),
            Arg::U32(to_u32(kept, op)?),
            Arg::I32(i32::from(bias.is_some())),
        ];
        let grid = Grid::Fixed { grid: (to_u32(tokens.div_ceil(4), op)?, 1, 1), block: (128, 1, 1) };
        source.launch(&ROUTE, "route_topk", grid, &mut args)?;
    }
    let chosen = source.tensor(chosen, slots);
    let weights = source.tensor(weights, slots);
    group(&source, &chosen, &weights, tokens, top_k, experts)
}

/// Groups the routed slots by expert: counts per tile on the device, offsets on the host, then the scatter.
fn group(
    source: &Source,
    chosen: &Tensor,
    weights: &Tensor,
    tokens: usize,
    top_k: usize,
    experts: usize,
) -> Result<DeviceRouting> {
    let op = "route";
    let tiles = tokens.div_ceil(TILE);
    let slots = tokens * top_k;
    let mut counts = source.alloc(DType::U32, tiles * experts)?;
    if tiles > 0 {
        let mut args = [
            Arg::U64(address(chosen)?),
            Arg::Out(&mut counts),
            Arg::U64(tokens as u64),
            Arg::U32(to_u32(top_k, op)?),
            Arg::U32(to_u32(experts, op)?),
            Arg::U32(to_u32(TILE, op)?),
        ];
        let grid = Grid::Fixed { grid: (to_u32(tiles, op)?, 1, 1), block: (256, 1, 1) };
        source.launch_args(&ROUTE, "route_count", grid, &mut args)?;
    }
    let counts: Vec<u32> = source.tensor(counts, tiles * experts).to_vec1()?;
    // Expert e's slots start after every lower expert's; within e, tile t's after the earlier tiles'.
    let mut ranges = Vec::with_capacity(experts);
    let mut offsets = vec![0u32; tiles * experts];
    let mut start = 0usize;
    for e in 0..experts {
        let begin = start;
        for t in 0..tiles {
            offsets[t * experts + e] = to_u32(start, op)?;
            start += counts[t * experts + e] as usize;
        }
        ranges.push(begin..start);
    }
    if start != slots {
        return Err(Error::internal(format!("cuda::route: {start} slots grouped of {slots}")));
    }
    let offsets = Tensor::from_vec(offsets, tiles * experts, chosen.device())?;
    let mut slot_tokens = source.alloc(DType::U32, slots)?;
    let mut slot_weights = source.alloc(DType::F32, slots)?;
    let mut rows = source.alloc(DType::U32, slots)?;
    if slots > 0 {
        let mut args = [
            Arg::U64(address(chosen)?),
            Arg::U64(address(weights)?),
            Arg::U64(address(&offsets)?),
            Arg::Out(&mut slot_tokens),
            Arg::Out(&mut slot_weights),
            Arg::Out(&mut rows),
            Arg::U64(tokens as u64),
            Arg::U32(to_u32(top_k, op)?),
            Arg::U32(to_u32(experts, op)?),
        ];
        let grid = Grid::Fixed { grid: (to_u32(tiles, op)?, 1, 1), block: (256, 1, 1) };
        source.launch_args(&ROUTE, "route_scatter", grid, &mut args)?;
    }
    Ok(DeviceRouting {
        ranges,
        tokens: source.tensor(slot_tokens, slots),
        weights: source.tensor(slot_weights, slots),
        rows: source.tensor(rows, slots),
    })
}
