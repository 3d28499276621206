//! The MoE block: route → group by expert → routed experts → combine, plus the shared experts. Tokens are
//! grouped by expert and each expert that has tokens runs one gate/up and one down projection on them; outputs
//! are weighted and summed; a token that chose zero-computation experts (LongCat-Flash) adds itself, scaled by
//! their weights (see [`divert`]). How the projections run ([`RoutedExperts`]) is chosen once, at load. Works on any
//! stored layout through the expert view (`WeightLoader::expert`).
//! transformers: the `eager` experts implementation of models/qwen3_moe (and the other families).

use candle_core::{DType, Tensor};

use super::activation::gated;
use super::dispatch::{device_router, group_by_expert, Dispatch};
use super::host;
use super::linear::Linear;
use super::mlp::Mlp;
use super::norm::{NormStyle, RmsNorm};
use super::ops::{abs_max_each, abs_max_on_device, read_scalars, sigmoid};
use super::router::route;
use super::router_input::RouterInput;
use super::zero_experts::divert;
use crate::cuda::{self, DeviceRouter};
use crate::error::Result;
use crate::model::descriptor::{ExpertActivation, MoeDescriptor, RouterKind};
use crate::model::loader::{ExpertWeights, WeightLoader};
use crate::model::observe::Observers;
use crate::model::profile;
use std::ops::Range;

pub struct MoeBlock {
    desc: MoeDescriptor,
    router: Linear,
    /// What the router reads, when not the block's input as it is.
    router_input: Option<RouterInput>,
    correction_bias: Option<Vec<f32>>,
    /// On a GPU, the router when the routing kernel computes it (`cuda::route`), and the correction bias there.
    device_router: Option<DeviceRouter>,
    device_bias: Option<Tensor>,
    /// `[E]`, multiplying the chosen experts' weights.
    per_expert_scale: Option<Vec<f32>>,
    /// The norms of the two branches (the experts' input, their output, the shared MLP's output).
    branches: Option<(RmsNorm, RmsNorm, RmsNorm)>,
    experts: RoutedExperts,
    shared: Option<Mlp>,
    shared_gate: Option<Linear>,
    /// Route every token through every expert for statistics (the output is unchanged).
    all_experts_stats: bool,
}

/// How the routed experts' projections run, chosen at load.
enum RoutedExperts {
    /// Each projection of all experts as one grouped GEMM (CUDA, bf16/f16, no expert biases).
    Grouped(Vec<ExpertWeights>),
    /// One matmul per expert that has tokens, on a view of its rows.
    PerExpert(Vec<ExpertWeights>),
}

impl RoutedExperts {
    fn choose(experts: Vec<ExpertWeights>, loader: &WeightLoader) -> Self {
        let grouped = loader.device.is_cuda()
            && matches!(loader.dtype, DType::BF16 | DType::F16)
            && experts.iter().all(|w| w.gate_up_bias.is_none() && w.down_bias.is_none());
        if grouped {
            RoutedExperts::Grouped(experts)
        } else {
            RoutedExperts::PerExpert(experts)
        }
    }

    fn weights(&self) -> &[ExpertWeights] {
        match self {
            RoutedExperts::Grouped(experts) | RoutedExperts::PerExpert(experts) => experts,
        }
    }

    /// Rows `ranges[e]` of `xs` through expert e's gate/up (`Gate`) or down (`Down`) projection, bias added.
    fn project(&self, xs: &Tensor, ranges: &[Range<usize>], projection: Projection) -> Result<Tensor> {
        fn weight(w: &ExpertWeights, projection: Projection) -> (&Tensor, &Option<Tensor>) {
            match projection {
                Projection::GateUp => (&w.gate_up, &w.gate_up_bias),
                Projection::Down => (&w.down, &w.down_bias),
            }
        }
        match self {
            RoutedExperts::Grouped(experts) => {
                let weights: Vec<&Tensor> = experts.iter().map(|w| weight(w, projection).0).collect();
                cuda::grouped_matmul_t(xs, &weights, ranges)
            }
            RoutedExperts::PerExpert(experts) => {
                let mut outputs = Vec::with_capacity(ranges.len());
                for (w, range) in experts.iter().zip(ranges).filter(|(_, range)| !range.is_empty()) {
                    let (matrix, bias) = weight(w, projection);
                    outputs.push(linear(&xs.narrow(0, range.start, range.len())?, matrix, bias.as_ref())?);
                }
                Ok(Tensor::cat(&outputs, 0)?)
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Projection {
    GateUp,
    Down,
}

/// `xs · weightᵀ (+ bias)`, the weight converted to the activations' dtype (the CPU keeps experts stored).
fn linear(xs: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let ys = xs.matmul(&weight.to_dtype(xs.dtype())?.t()?)?;
    Ok(match bias {
        Some(bias) => ys.broadcast_add(&bias.to_dtype(xs.dtype())?)?,
        None => ys,
    })
}

impl MoeBlock {
    /// `style`: the model's RMSNorms (the branches' norms are of that kind).
    pub fn load(
        loader: &WeightLoader,
        desc: &MoeDescriptor,
        style: NormStyle,
        all_experts_stats: bool,
    ) -> Result<Self> {
        let choices = desc.tensors.experts + desc.zero_experts.unwrap_or(0);
        if desc.top_k == 0 || desc.top_k > choices {
            return Err(crate::error::Error::internal(format!(
                "{}: top_k {} must be between 1 and the number of experts ({choices})",
                desc.block, desc.top_k
            )));
        }
        if desc.tensors.gated() == (desc.activation == ExpertActivation::Relu2) {
            return Err(crate::error::Error::internal(format!(
                "{}: {:?} experts {} a gate projection",
                desc.block,
                desc.activation,
                if desc.tensors.gated() { "have" } else { "need" }
            )));
        }
        let module = desc.router.weight.trim_end_matches(".weight");
        let router_bias = desc.router.bias.as_ref().map(|b| loader.tensor(b)).transpose()?;
        let router = Linear::from_weight(module, loader.tensor(&desc.router.weight)?, router_bias);
        let host = |name: &Option<String>| -> Result<Option<Vec<f32>>> {
            match name {
                Some(name) => Ok(Some(loader.tensor(name)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)),
                None => Ok(None),
            }
        };
        let correction_bias = host(&desc.router.correction_bias)?;
        let per_expert_scale = host(&desc.router.per_expert_scale)?;
        let router_input =
            desc.router.input_scale.as_ref().map(|s| RouterInput::load(loader, s, desc.tensors.hidden)).transpose()?;
        let norm = |name: &str| style.norm(loader.tensor_shaped(name, &[desc.tensors.hidden])?);
        let branches = match &desc.branch_norms {
            Some(b) => Some((norm(&b.experts_input)?, norm(&b.experts_output)?, norm(&b.shared_output)?)),
            None => None,
        };
        // On the CPU the experts stay in their stored dtype (bf16 instead of f32: half the memory) and each is
        // converted to the compute dtype when it runs, so a layer's experts cost their size on disk. (The GPU
        // computes in bf16, the dtype they are stored in.)
        let experts_loader = loader.keeping_stored(loader.device.is_cpu());
        let experts =
            (0..desc.tensors.experts).map(|e| experts_loader.expert(&desc.tensors, e)).collect::<Result<Vec<_>>>()?;
        let shared = desc.shared.as_ref().map(|s| Mlp::load(loader, &s.mlp)).transpose()?;
        let shared_gate = match desc.shared.as_ref().and_then(|s| s.gate.as_ref()) {
            Some(gate) => Some(Linear::from_weight(gate.trim_end_matches(".weight"), loader.tensor(gate)?, None)),
            None => None,
        };
        let device_router = device_router(desc).filter(|_| loader.device.is_cuda());
        let device_bias = match (&device_router, &correction_bias) {
            (Some(_), Some(bias)) => Some(Tensor::from_slice(bias, bias.len(), &loader.device)?),
            _ => None,
        };
        Ok(MoeBlock {
            desc: desc.clone(),
            router,
            router_input,
            correction_bias,
            device_router,
            device_bias,
            per_expert_scale,
            branches,
            experts: RoutedExperts::choose(experts, loader),
            shared,
            shared_gate,
            all_experts_stats,
        })
    }

    /// The block's name and its routed experts' weights as the forward holds them (`[out, in]`, in the compute
    /// dtype), for quantizing them where they are.
    pub fn routed_experts(&self) -> (&str, &[ExpertWeights]) {
        (&self.desc.block, self.experts.weights())
    }

    /// Records each expert's weight maxima (gate and up separately) in the block's statistics.
    pub fn observe_weights(&self, observers: &mut Observers) -> Result<()> {
        let inter = self.desc.tensors.intermediate;
        let stats = observers.experts_mut(&self.desc.block, self.desc.tensors.experts);
        // Reduced on the device and read back at once: one launch and one synchronisation per layer.
        let gated = self.desc.tensors.gated();
        let mut halves = Vec::with_capacity(3 * self.desc.tensors.experts);
        for weights in self.experts.weights() {
            // Ungated: no gate (its maximum stays 0); `gate_up` is up alone.
            if gated {
                halves.push(weights.gate_up.narrow(0, 0, inter)?);
                halves.push(weights.gate_up.narrow(0, inter, inter)?);
            } else {
                halves.push(weights.gate_up.clone());
            }
            halves.push(weights.down.clone());
        }
        let maxima = abs_max_each(&halves.iter().collect::<Vec<_>>())?;
        let per_expert = if gated { 3 } else { 2 };
        for (e, amax) in maxima.chunks_exact(per_expert).enumerate() {
            let (gate, up, down) = if gated { (amax[0], amax[1], amax[2]) } else { (0.0, amax[0], amax[1]) };
            stats.gate_amax[e] = gate;
            stats.up_amax[e] = up;
            stats.down_amax[e] = down;
        }
        Ok(())
    }

    /// `act(gate)·up` of gate/up projections `[m, 2I]` (gate columns first) → `[m, I]`; ungated: `relu(up)²` of
    /// up projections `[m, I]`.
    fn activate(&self, gate_up: &Tensor) -> Result<Tensor> {
        let inter = self.desc.tensors.intermediate;
        let halves =
            || -> Result<(Tensor, Tensor)> { Ok((gate_up.narrow(1, 0, inter)?, gate_up.narrow(1, inter, inter)?)) };
        if gate_up.device().is_cuda() {
            let kernel = match self.desc.activation {
                ExpertActivation::Silu => Some(cuda::GatedActivation::Silu),
                ExpertActivation::Gelu => Some(cuda::GatedActivation::Gelu),
                ExpertActivation::GeluTanh => Some(cuda::GatedActivation::GeluTanh),
                ExpertActivation::Relu2 | ExpertActivation::GptOss => None,
            };
            if let Some(kernel) = kernel {
                return cuda::gated_activation(&gate_up.contiguous()?, kernel);
            }
        }
        Ok(match self.desc.activation {
            ExpertActivation::Relu2 => gate_up.relu()?.sqr()?,
            ExpertActivation::Silu | ExpertActivation::Gelu | ExpertActivation::GeluTanh => {
                let (gate, up) = halves()?;
                gated(self.desc.activation, &gate, &up)?
            }
            ExpertActivation::GptOss => {
                let (gate, up) = halves()?;
                const ALPHA: f64 = 1.702;
                const LIMIT: f64 = 7.0;
                let gate = gate.clamp(f32::NEG_INFINITY, LIMIT as f32)?;
                let up = up.clamp(-LIMIT as f32, LIMIT as f32)?;
                let glu = (&gate * sigmoid(&(&gate * ALPHA)?)?)?;
                ((up + 1.0)? * glu)?
            }
        })
    }

    /// Llama4 scales the expert input by the routing weight instead of the output.
    fn scales_input(&self) -> bool {
        self.desc.router.kind == RouterKind::TopkSigmoid
    }

    /// `xs [B, T, H]` → `[B, T, H]`.
    pub fn forward(&self, xs: &Tensor, observers: &mut Observers) -> Result<Tensor> {
        self.forward_branches(xs, xs, observers)
    }

    /// `xs [B, T, H]` (the layer's normed input) → `[B, T, H]`; with branch norms (Gemma 4) the router and the
    /// experts' input norm read `unnormed`, the layer's input before its norm, and the shared MLP `xs`.
    pub fn forward_branches(&self, xs: &Tensor, unnormed: &Tensor, observers: &mut Observers) -> Result<Tensor> {
        let Some((experts_input, experts_output, shared_output)) = &self.branches else {
            return Ok(self.sum_f32(xs, observers)?.to_dtype(xs.dtype())?);
        };
        let dims = xs.dims().to_vec();
        let hidden = self.desc.tensors.hidden;
        let flat = xs.reshape(((), hidden))?;
        crate::cuda::known_max::carry(xs, &flat);
        let unnormed = unnormed.reshape(((), hidden))?;
        let routed = self.routed(&unnormed, &experts_input.forward(&unnormed)?, observers)?;
        let routed = experts_output.forward(&routed.to_dtype(flat.dtype())?)?;
        let out = match self.shared_forward(&flat, observers)? {
            Some(shared) => (shared_output.forward(&shared)? + routed)?,
            None => routed,
        };
        Ok(out.reshape(dims)?)
    }

    /// `xs [B, T, H]` → the routed experts' weighted sum plus the shared experts' output `[B, T, H]` in f32, before
    /// the cast back to `xs`'s dtype ([`Self::forward`] casts it). None for a block with branch norms (Gemma 4),
    /// whose sum is normed in the dtype.
    pub fn forward_f32(&self, xs: &Tensor, observers: &mut Observers) -> Result<Option<Tensor>> {
        self.branches.is_none().then(|| self.sum_f32(xs, observers)).transpose()
    }

    /// The f32 sum of [`Self::forward_f32`], for a block without branch norms.
    fn sum_f32(&self, xs: &Tensor, observers: &mut Observers) -> Result<Tensor> {
        let flat = xs.reshape(((), self.desc.tensors.hidden))?;
        crate::cuda::known_max::carry(xs, &flat);
        let mut out = self.routed(&flat, &flat, observers)?;
        if let Some(shared) = self.shared_forward(&flat, observers)? {
            out = (out + shared.to_dtype(DType::F32)?)?;
        }
        Ok(out.reshape(xs.dims())?)
    }

    /// The routed experts of `flat [tokens, H]`, routed on `router_flat`: their weighted sum `[tokens, H]` in f32.
    fn routed(&self, router_flat: &Tensor, flat: &Tensor, observers: &mut Observers) -> Result<Tensor> {
        let device = flat.device();
        let dispatch = profile::section(device, "routing (router, top-k, slots by expert)", || {
            self.route(router_flat, observers)
        })?;
        // Maxima stay on the device until the end of the block: no synchronisation inside the expert pass.
        let mut gate_up_maxima = Vec::new();
        let mut down_maxima = Vec::new();
        let routed = self.run_experts(flat, &dispatch, observers, &mut gate_up_maxima, &mut down_maxima)?;
        let mut out = profile::section(device, "expert combine (weights, gather, sum)", || {
            self.combine(routed, &dispatch, flat.dim(0)?)
        })?;
        if let Some(identity) = &dispatch.identity {
            out = (out + flat.to_dtype(DType::F32)?.broadcast_mul(identity)?)?;
        }
        if self.all_experts_stats {
            for weights in self.experts.weights() {
                let hidden = self.activate(&linear(flat, &weights.gate_up, weights.gate_up_bias.as_ref())?)?;
                down_maxima.push(abs_max_on_device(&hidden)?);
            }
            gate_up_maxima.push(abs_max_on_device(flat)?);
        }
        profile::section(device, "observers", || {
            self.record(observers, &dispatch.ranges, &gate_up_maxima, &down_maxima)
        })?;
        Ok(out)
    }

    /// The shared experts' output of `flat [tokens, H]`, gated where they have a gate; None without them.
    fn shared_forward(&self, flat: &Tensor, observers: &mut Observers) -> Result<Option<Tensor>> {
        let Some(shared) = &self.shared else { return Ok(None) };
        let mut shared_out = profile::section(flat.device(), "shared experts", || shared.forward(flat, observers))?;
        observers.check(|| format!("the output of the shared experts of {}", self.desc.block), &shared_out)?;
        if let Some(gate) = &self.shared_gate {
            observers.record_input(&[&gate.name], flat)?;
            shared_out = shared_out.broadcast_mul(&sigmoid(&gate.forward(flat)?)?)?;
        }
        Ok(Some(shared_out))
    }

    /// The router on `flat [tokens, H]`: each token's experts and weights, grouped by expert, on the device.
    fn route(&self, flat: &Tensor, observers: &mut Observers) -> Result<Dispatch> {
        let scaled = self.router_input.as_ref().map(|input| input.forward(flat)).transpose()?;
        let input = scaled.as_ref().unwrap_or(flat);
        observers.record_input(&[&self.router.name], input)?;
        let logits = self.router.forward(input)?.to_dtype(DType::F32)?;
        observers.check(|| format!("the output of the router {}", self.router.name), &logits)?;
        if let Some(router) = self.device_router.as_ref().filter(|_| logits.device().is_cuda()) {
            let routing = cuda::route(&logits.contiguous()?, self.desc.top_k, router, self.device_bias.as_ref())?;
            let slots = routing.weights.elem_count();
            let weights = routing.weights.reshape((slots, 1))?.to_dtype(flat.dtype())?;
            return Ok(Dispatch {
                ranges: routing.ranges,
                tokens: routing.tokens,
                weights,
                rows: routing.rows,
                identity: None,
            });
        }
        let logits = logits.flatten_all()?.to_vec1::<f32>()?;
        let experts = self.desc.tensors.experts;
        let zero_experts = self.desc.zero_experts.unwrap_or(0);
        let mut routing =
            route(&self.desc.router, &logits, experts + zero_experts, self.desc.top_k, self.correction_bias.as_deref());
        if let Some(scales) = &self.per_expert_scale {
            for (weight, &expert) in routing.weights.iter_mut().zip(&routing.experts) {
                *weight *= scales[expert];
            }
        }
        let identity = (zero_experts > 0).then(|| divert(&mut routing, experts, zero_experts));
        let groups = group_by_expert(&routing, experts);
        // The routing goes to the device in one copy.
        let device = flat.device();
        let tokens = Tensor::from_vec(groups.tokens.clone(), groups.tokens.len(), device)?;
        let weights =
            Tensor::from_vec(groups.weights.clone(), (groups.weights.len(), 1), device)?.to_dtype(flat.dtype())?;
        let identity = identity.map(|w| Tensor::new(w, device)?.unsqueeze(1)).transpose()?;
        let rows = Tensor::from_vec(groups.rows_by_token(), groups.tokens.len(), device)?;
        Ok(Dispatch { ranges: groups.ranges, tokens, weights, rows, identity })
    }

    /// The routed slots through their experts: `[slots, H]`, sorted by expert. Whole-batch steps (gather,
    /// activation, routing-weight products, maxima) run once over all slots; per expert there are only its
    /// two projections (see [`RoutedExperts`]).
    fn run_experts(
        &self,
        flat: &Tensor,
        dispatch: &Dispatch,
        observers: &mut Observers,
        gate_up_maxima: &mut Vec<Tensor>,
        down_maxima: &mut Vec<Tensor>,
    ) -> Result<Tensor> {
        let ranges = &dispatch.ranges;
        let device = flat.device();
        // Scoped so that each intermediate is freed as soon as the next exists (GPU memory).
        let awq_input;
        let hidden = {
            let mut routed = profile::section(device, "expert gather", || {
                if flat.device().is_cuda() {
                    return cuda::gather_rows(flat, &dispatch.tokens);
                }
                if let Some(routed) = host::gather_rows(flat, &dispatch.tokens)? {
                    return Ok(routed);
                }
                Ok(flat.index_select(&dispatch.tokens, 0)?)
            })?;
            profile::section(device, "observers", || {
                if self.scales_input() {
                    routed = routed.broadcast_mul(&dispatch.weights)?;
                    observers.check(|| format!("the input of {}.experts (gate/up)", self.desc.block), &routed)?;
                    gate_up_maxima.push(abs_max_on_device(&routed)?);
                } else {
                    gate_up_maxima.push(abs_max_on_device(flat)?);
                }
                Ok(())
            })?;
            let gate_up =
                profile::section(device, "expert GEMMs", || self.experts.project(&routed, ranges, Projection::GateUp))?;
            // The AWQ search reads each expert's tokens again once their down input exists.
            let searched = observers.awq.as_ref().is_some_and(|awq| awq.searches_experts(&self.desc.block));
            awq_input = searched.then_some(routed);
            profile::section(device, "expert activation", || self.activate(&gate_up))?
        };
        if let Some(routed) = awq_input {
            observers.record_experts(&self.desc.block, ranges, &routed, &hidden, self.experts.weights())?;
        }
        profile::section(device, "observers", || {
            observers.check(|| format!("the input of {}.experts (down)", self.desc.block), &hidden)?;
            down_maxima.push(abs_max_on_device(&hidden)?);
            Ok(())
        })?;
        let routed =
            profile::section(device, "expert GEMMs", || self.experts.project(&hidden, ranges, Projection::Down))?;
        observers.check(|| format!("the output of {}.experts", self.desc.block), &routed)?;
        Ok(routed)
    }

    /// Routed outputs weighted and summed per token, in f32 whatever the compute dtype, in expert order (the
    /// order of transformers' loop): the rows of every expert's output, gathered token by token, then summed.
    fn combine(&self, routed: Tensor, dispatch: &Dispatch, tokens: usize) -> Result<Tensor> {
        let gather = &dispatch.rows;
        if routed.device().is_cuda() {
            let weights = (!self.scales_input()).then(|| dispatch.weights.flatten_all()).transpose()?;
            return cuda::combine_routed(&routed, gather, weights.as_ref(), self.desc.top_k);
        }
        let weights = (!self.scales_input()).then_some(&dispatch.weights);
        if let Some(out) = host::combine_routed(&routed, gather, weights, self.desc.top_k)? {
            return Ok(out);
        }
        let routed = if self.scales_input() { routed } else { routed.broadcast_mul(&dispatch.weights)? };
        Ok(routed
            .index_select(gather, 0)?
            .to_dtype(DType::F32)?
            .reshape((tokens, self.desc.top_k, self.desc.tensors.hidden))?
            .sum(1)?)
    }

    /// The block's statistics, written in one place: input maxima and tokens per expert.
    fn record(
        &self,
        observers: &mut Observers,
        ranges: &[Range<usize>],
        gate_up_maxima: &[Tensor],
        down_maxima: &[Tensor],
    ) -> Result<()> {
        let fold = |values: Vec<f32>| values.into_iter().fold(0.0f32, f32::max);
        let gate_up_amax = fold(read_scalars(gate_up_maxima)?);
        let down_amax = fold(read_scalars(down_maxima)?);
        let stats = observers.experts_mut(&self.desc.block, self.desc.tensors.experts);
        stats.gate_up_input_amax = stats.gate_up_input_amax.max(gate_up_amax);
        stats.down_input_amax = stats.down_input_amax.max(down_amax);
        for (total, range) in stats.tokens.iter_mut().zip(ranges) {
            *total += range.len() as u64;
        }
        Ok(())
    }
}
