//! What the MoE block's router decided, as the expert pass reads it: the slots grouped by expert, on the device.
//! On a GPU the routing kernel (`cuda::route`) builds it for the routers it computes; elsewhere the host router's
//! choices are grouped here (a counting sort) and copied to the device at once.

use std::ops::Range;

use candle_core::Tensor;

use super::router::Routing;
use crate::cuda::{self, DeviceRouter};
use crate::model::descriptor::{MoeDescriptor, RouterKind};

/// The routing kernel's form of the block's router, when it has one (`cuda::route`); the other routers, and any
/// block with zero experts or per-expert scales, route on the host.
pub(super) fn device_router(desc: &MoeDescriptor) -> Option<DeviceRouter> {
    let router = &desc.router;
    let device_router = match router.kind {
        RouterKind::SoftmaxTopk => DeviceRouter::Softmax { normalise: router.norm_topk_prob },
        RouterKind::SoftmaxTopkNorm => DeviceRouter::Softmax { normalise: true },
        RouterKind::SigmoidGroupTopk => DeviceRouter::SigmoidGroups {
            normalise: router.norm_topk_prob,
            norm_eps: router.norm_eps.unwrap_or(1e-20) as f32,
            scaling: router.routed_scaling_factor as f32,
            groups: router.n_group.max(1),
            kept_groups: router.topk_group,
        },
        _ => return None,
    };
    let fits = desc.zero_experts.unwrap_or(0) == 0
        && router.per_expert_scale.is_none()
        && cuda::routes_on_device(desc.tensors.experts, desc.top_k, &device_router);
    fits.then_some(device_router)
}

/// What one forward routed: the slots grouped by expert, on the device.
pub(super) struct Dispatch {
    /// Slots of expert e: `ranges[e]` (slots sorted by expert).
    pub(super) ranges: Vec<Range<usize>>,
    /// Token of each slot `[slots]` (U32) and its routing weight `[slots, 1]`.
    pub(super) tokens: Tensor,
    pub(super) weights: Tensor,
    /// Each token's slots in expert order, U32 `[T · K]`.
    pub(super) rows: Tensor,
    /// With zero experts: each token's weight of those it chose, `[T, 1]` f32.
    pub(super) identity: Option<Tensor>,
}

/// The routing regrouped by expert: slots sorted by expert (tokens ascending within one), with each
/// expert's range of slots.
pub(super) struct ExpertGroups {
    /// Token of each slot.
    pub(super) tokens: Vec<u32>,
    /// Routing weight of each slot.
    pub(super) weights: Vec<f32>,
    /// Slots of expert e: `ranges[e]`.
    pub(super) ranges: Vec<Range<usize>>,
    /// Slots per token (every token has exactly this many).
    pub(super) top_k: usize,
}

impl ExpertGroups {
    /// For each token in turn, the slots (rows of the experts' concatenated outputs) it was routed to, in
    /// expert order: `tokens × top_k` row indices.
    pub(super) fn rows_by_token(&self) -> Vec<u32> {
        let mut rows = vec![0u32; self.tokens.len()];
        let mut filled = vec![0usize; self.tokens.len() / self.top_k.max(1)];
        // Slots are visited in expert order, so each token's rows come out in expert order.
        for (row, &token) in self.tokens.iter().enumerate() {
            let token = token as usize;
            rows[token * self.top_k + filled[token]] = row as u32;
            filled[token] += 1;
        }
        rows
    }
}

/// Groups the routing by expert (a counting sort: stable, so tokens stay ascending within an expert).
pub(super) fn group_by_expert(routing: &Routing, experts: usize) -> ExpertGroups {
    let mut counts = vec![0usize; experts];
    for &e in &routing.experts {
        counts[e] += 1;
    }
    let mut ranges = Vec::with_capacity(experts);
    let mut start = 0;
    for count in &counts {
        ranges.push(start..start + count);
        start += count;
    }
    let mut next: Vec<usize> = ranges.iter().map(|r| r.start).collect();
    let mut tokens = vec![0u32; routing.experts.len()];
    let mut weights = vec![0f32; routing.experts.len()];
    for (slot, (&e, &w)) in routing.experts.iter().zip(&routing.weights).enumerate() {
        tokens[next[e]] = (slot / routing.top_k) as u32;
        weights[next[e]] = w;
        next[e] += 1;
    }
    ExpertGroups { tokens, weights, ranges, top_k: routing.top_k }
}
