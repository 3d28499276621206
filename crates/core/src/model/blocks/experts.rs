//! The MoE block: router, routed experts and shared experts. Tokens are grouped by expert and each expert
//! that has tokens runs one gate/up and one down matmul on them; outputs are weighted and summed. Works on
//! any stored layout through the expert view (`WeightLoader::expert`).
//! transformers: the `eager` experts implementation of models/qwen3_moe (and the other families).

use candle_core::{DType, Tensor};

use super::linear::Linear;
use super::mlp::Mlp;
use super::ops::{abs_max_on_device, read_scalars, sigmoid};
use super::router::{route, Routing};
use crate::calib::observers::Observers;
use crate::cuda;
use crate::error::Result;
use crate::model::descriptor::{ExpertActivation, MoeDescriptor, RouterKind};
use crate::model::weights::{ExpertWeights, WeightLoader};

pub struct MoeBlock {
    desc: MoeDescriptor,
    router: Linear,
    correction_bias: Option<Vec<f32>>,
    experts: Vec<ExpertWeights>,
    shared: Option<Mlp>,
    shared_gate: Option<Linear>,
    /// Route every token through every expert for statistics (the output is unchanged).
    all_experts_stats: bool,
    /// Run each projection of all experts as one grouped GEMM (CUDA, bf16/f16, no expert biases) instead of a
    /// matmul per expert.
    grouped: bool,
}

impl MoeBlock {
    pub fn load(loader: &WeightLoader, desc: &MoeDescriptor, all_experts_stats: bool) -> Result<Self> {
        if desc.top_k == 0 || desc.top_k > desc.experts {
            return Err(crate::error::Error::internal(format!(
                "{}: top_k {} must be between 1 and the number of experts ({})",
                desc.block, desc.top_k, desc.experts
            )));
        }
        let module = desc.router.weight.trim_end_matches(".weight");
        let router_bias = desc.router.bias.as_ref().map(|b| loader.tensor(b)).transpose()?;
        let router = Linear::from_weight(module, loader.tensor(&desc.router.weight)?, router_bias);
        let correction_bias = match &desc.router.correction_bias {
            Some(name) => Some(loader.tensor(name)?.to_dtype(DType::F32)?.to_vec1::<f32>()?),
            None => None,
        };
        // On the CPU the experts stay in their stored dtype (bf16 instead of f32: half the memory) and each is
        // converted to the compute dtype when it runs, so a layer's experts cost their size on disk. (The GPU
        // computes in bf16, the dtype they are stored in.)
        let experts_loader = loader.keeping_stored(loader.device.is_cpu());
        let experts = (0..desc.experts).map(|e| experts_loader.expert(desc, e)).collect::<Result<Vec<_>>>()?;
        let shared = desc.shared.as_ref().map(|s| Mlp::load(loader, &s.mlp)).transpose()?;
        let shared_gate = match desc.shared.as_ref().and_then(|s| s.gate.as_ref()) {
            Some(gate) => Some(Linear::from_weight(gate.trim_end_matches(".weight"), loader.tensor(gate)?, None)),
            None => None,
        };
        let grouped = loader.device.is_cuda()
            && matches!(loader.dtype, DType::BF16 | DType::F16)
            && experts.iter().all(|w| w.gate_up_bias.is_none() && w.down_bias.is_none());
        Ok(MoeBlock {
            desc: desc.clone(),
            router,
            correction_bias,
            experts,
            shared,
            shared_gate,
            all_experts_stats,
            grouped,
        })
    }

    /// Records each expert's weight maxima (gate and up separately) in the block's statistics.
    pub fn observe_weights(&self, observers: &mut Observers) -> Result<()> {
        let inter = self.desc.intermediate;
        let stats = observers.experts_mut(&self.desc.block, self.desc.experts);
        // Reduced on the device and read back at once: one synchronisation per layer, not three per expert.
        let mut maxima = Vec::with_capacity(3 * self.experts.len());
        for weights in &self.experts {
            maxima.push(abs_max_on_device(&weights.gate_up.narrow(0, 0, inter)?)?);
            maxima.push(abs_max_on_device(&weights.gate_up.narrow(0, inter, inter)?)?);
            maxima.push(abs_max_on_device(&weights.down)?);
        }
        for (e, amax) in read_scalars(&maxima)?.chunks_exact(3).enumerate() {
            stats.gate_amax[e] = amax[0];
            stats.up_amax[e] = amax[1];
            stats.down_amax[e] = amax[2];
        }
        Ok(())
    }

    /// `act(gate)·up` of one expert on `xs [m, H]` → `[m, I]`.
    fn hidden(&self, weights: &ExpertWeights, xs: &Tensor) -> Result<Tensor> {
        let mut gate_up = xs.matmul(&weights.gate_up.to_dtype(xs.dtype())?.t()?)?;
        if let Some(bias) = &weights.gate_up_bias {
            gate_up = gate_up.broadcast_add(&bias.to_dtype(xs.dtype())?)?;
        }
        self.activate(&gate_up)
    }

    /// `act(gate)·up` of gate/up projections `[m, 2I]` (gate columns first) → `[m, I]`.
    fn activate(&self, gate_up: &Tensor) -> Result<Tensor> {
        let inter = self.desc.intermediate;
        let gate = gate_up.narrow(1, 0, inter)?;
        let up = gate_up.narrow(1, inter, inter)?;
        Ok(match self.desc.activation {
            ExpertActivation::Silu => (gate.silu()? * up)?,
            ExpertActivation::GptOss => {
                const ALPHA: f64 = 1.702;
                const LIMIT: f64 = 7.0;
                let gate = gate.clamp(f32::NEG_INFINITY, LIMIT as f32)?;
                let up = up.clamp(-LIMIT as f32, LIMIT as f32)?;
                let glu = (&gate * sigmoid(&(&gate * ALPHA)?)?)?;
                ((up + 1.0)? * glu)?
            }
        })
    }

    fn expert_output(&self, weights: &ExpertWeights, hidden: &Tensor) -> Result<Tensor> {
        let mut ys = hidden.matmul(&weights.down.to_dtype(hidden.dtype())?.t()?)?;
        if let Some(bias) = &weights.down_bias {
            ys = ys.broadcast_add(&bias.to_dtype(hidden.dtype())?)?;
        }
        Ok(ys)
    }

    /// `xs [B, T, H]` → `[B, T, H]`.
    pub fn forward(&self, xs: &Tensor, observers: &mut Observers) -> Result<Tensor> {
        let dims = xs.dims().to_vec();
        let hidden_size = self.desc.hidden;
        let flat = xs.reshape(((), hidden_size))?;
        let tokens = flat.dim(0)?;
        let device = flat.device().clone();
        observers.record_input(&[&self.router.name], &flat)?;
        let logits = self.router.forward(&flat)?.to_dtype(DType::F32)?;
        observers.check(|| format!("the output of the router {}", self.router.name), &logits)?;
        let logits = logits.flatten_all()?.to_vec1::<f32>()?;
        let routing =
            route(&self.desc.router, &logits, self.desc.experts, self.desc.top_k, self.correction_bias.as_deref());
        let groups = group_by_expert(&routing, self.desc.experts);
        // Llama4 scales the expert input by the routing weight instead of the output.
        let scale_input = self.desc.router.kind == RouterKind::TopkSigmoid;

        // Maxima stay on the device until the end of the block: no synchronisation inside the expert loop.
        let mut gate_up_maxima = Vec::new();
        if !scale_input {
            gate_up_maxima.push(abs_max_on_device(&flat)?);
        }
        let mut down_maxima = Vec::with_capacity(self.desc.experts);
        // The routing goes to the device in one copy.
        let all_tokens = Tensor::from_vec(groups.tokens.clone(), groups.tokens.len(), &device)?;
        let all_weights =
            Tensor::from_vec(groups.weights.clone(), (groups.weights.len(), 1), &device)?.to_dtype(flat.dtype())?;
        // Whole-batch steps (gather, activation, routing-weight products, maxima) run once over all routed
        // slots, which are sorted by expert; per expert there are only its two matmuls on its rows: on the GPU
        // each projection of all experts is one grouped GEMM, elsewhere one matmul per expert on a view.
        let active: Vec<(usize, &std::ops::Range<usize>)> =
            groups.ranges.iter().enumerate().filter(|(_, range)| !range.is_empty()).collect();
        // Scoped so that each intermediate is freed as soon as the next exists (GPU memory).
        let hidden = {
            let mut routed = flat.index_select(&all_tokens, 0)?;
            if scale_input {
                routed = routed.broadcast_mul(&all_weights)?;
                observers.check(|| format!("the input of {}.experts (gate/up)", self.desc.block), &routed)?;
                gate_up_maxima.push(abs_max_on_device(&routed)?);
            }
            if self.grouped {
                let weights: Vec<&Tensor> = self.experts.iter().map(|w| &w.gate_up).collect();
                let gate_up = cuda::grouped_matmul_t(&routed, &weights, &groups.ranges)?;
                drop(routed);
                self.activate(&gate_up)?
            } else {
                let mut hidden = Vec::with_capacity(active.len());
                for &(e, range) in &active {
                    hidden.push(self.hidden(&self.experts[e], &routed.narrow(0, range.start, range.len())?)?);
                }
                Tensor::cat(&hidden, 0)?
            }
        };
        observers.check(|| format!("the input of {}.experts (down)", self.desc.block), &hidden)?;
        down_maxima.push(abs_max_on_device(&hidden)?);
        let routed = if self.grouped {
            let weights: Vec<&Tensor> = self.experts.iter().map(|w| &w.down).collect();
            cuda::grouped_matmul_t(&hidden, &weights, &groups.ranges)?
        } else {
            let mut outputs = Vec::with_capacity(active.len());
            for &(e, range) in &active {
                outputs.push(self.expert_output(&self.experts[e], &hidden.narrow(0, range.start, range.len())?)?);
            }
            Tensor::cat(&outputs, 0)?
        };
        drop(hidden);
        observers.check(|| format!("the output of {}.experts", self.desc.block), &routed)?;
        // Routed outputs are summed per token in f32 whatever the compute dtype, in expert order (the order of
        // transformers' loop): the rows of every expert's output, gathered token by token, then summed.
        let routed = if scale_input { routed } else { routed.broadcast_mul(&all_weights)? };
        let gather = Tensor::from_vec(groups.rows_by_token(), tokens * self.desc.top_k, &device)?;
        let mut out = routed
            .index_select(&gather, 0)?
            .to_dtype(DType::F32)?
            .reshape((tokens, self.desc.top_k, hidden_size))?
            .sum(1)?;
        if self.all_experts_stats {
            for weights in &self.experts {
                down_maxima.push(abs_max_on_device(&self.hidden(weights, &flat)?)?);
            }
            gate_up_maxima.push(abs_max_on_device(&flat)?);
        }
        let fold = |values: Vec<f32>| values.into_iter().fold(0.0f32, f32::max);
        let gate_up_amax = fold(read_scalars(&gate_up_maxima)?);
        let down_amax = fold(read_scalars(&down_maxima)?);
        let stats = observers.experts_mut(&self.desc.block, self.desc.experts);
        stats.gate_up_input_amax = stats.gate_up_input_amax.max(gate_up_amax);
        stats.down_input_amax = stats.down_input_amax.max(down_amax);
        for (total, range) in stats.tokens.iter_mut().zip(&groups.ranges) {
            *total += range.len() as u64;
        }

        if let Some(shared) = &self.shared {
            let mut shared_out = shared.forward(&flat, observers)?;
            observers.check(|| format!("the output of the shared experts of {}", self.desc.block), &shared_out)?;
            if let Some(gate) = &self.shared_gate {
                observers.record_input(&[&gate.name], &flat)?;
                shared_out = shared_out.broadcast_mul(&sigmoid(&gate.forward(&flat)?)?)?;
            }
            out = (out + shared_out.to_dtype(DType::F32)?)?;
        }
        Ok(out.to_dtype(flat.dtype())?.reshape(dims)?)
    }
}

/// The routing regrouped by expert: slots sorted by expert (tokens ascending within one), with each
/// expert's range of slots.
struct ExpertGroups {
    /// Token of each slot.
    tokens: Vec<u32>,
    /// Routing weight of each slot.
    weights: Vec<f32>,
    /// Slots of expert e: `ranges[e]`.
    ranges: Vec<std::ops::Range<usize>>,
    /// Slots per token (every token has exactly this many).
    top_k: usize,
}

impl ExpertGroups {
    /// For each token in turn, the slots (rows of the experts' concatenated outputs) it was routed to, in
    /// expert order: `tokens × top_k` row indices.
    fn rows_by_token(&self) -> Vec<u32> {
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
fn group_by_expert(routing: &Routing, experts: usize) -> ExpertGroups {
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
