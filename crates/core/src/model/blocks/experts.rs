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
}

impl MoeBlock {
    pub fn load(loader: &WeightLoader, desc: &MoeDescriptor, all_experts_stats: bool) -> Result<Self> {
        let module = desc.router.weight.trim_end_matches(".weight");
        let router_bias = desc.router.bias.as_ref().map(|b| loader.tensor(b)).transpose()?;
        let router = Linear::from_weight(module, loader.tensor(&desc.router.weight)?, router_bias);
        let correction_bias = match &desc.router.correction_bias {
            Some(name) => Some(loader.tensor(name)?.to_dtype(DType::F32)?.to_vec1::<f32>()?),
            None => None,
        };
        let experts = (0..desc.experts).map(|e| loader.expert(desc, e)).collect::<Result<Vec<_>>>()?;
        let shared = desc.shared.as_ref().map(|s| Mlp::load(loader, &s.mlp)).transpose()?;
        let shared_gate = match desc.shared.as_ref().and_then(|s| s.gate.as_ref()) {
            Some(gate) => Some(Linear::from_weight(gate.trim_end_matches(".weight"), loader.tensor(gate)?, None)),
            None => None,
        };
        Ok(MoeBlock { desc: desc.clone(), router, correction_bias, experts, shared, shared_gate, all_experts_stats })
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
        let inter = self.desc.intermediate;
        let mut gate_up = xs.matmul(&weights.gate_up.t()?)?;
        if let Some(bias) = &weights.gate_up_bias {
            gate_up = gate_up.broadcast_add(bias)?;
        }
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
        let mut ys = hidden.matmul(&weights.down.t()?)?;
        if let Some(bias) = &weights.down_bias {
            ys = ys.broadcast_add(bias)?;
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
        let logits = self.router.forward(&flat)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let routing =
            route(&self.desc.router, &logits, self.desc.experts, self.desc.top_k, self.correction_bias.as_deref());
        let per_expert = group_by_expert(&routing, self.desc.experts);
        // Llama4 scales the expert input by the routing weight instead of the output.
        let scale_input = self.desc.router.kind == RouterKind::TopkSigmoid;

        // Routed outputs accumulate in f32 whatever the compute dtype.
        let mut out = Tensor::zeros((tokens, hidden_size), DType::F32, &device)?;
        // Maxima stay on the device until the end of the block: no synchronisation inside the expert loop.
        let mut gate_up_maxima = Vec::new();
        if !scale_input {
            gate_up_maxima.push(abs_max_on_device(&flat)?);
        }
        let mut down_maxima = Vec::with_capacity(self.desc.experts);
        let mut counts = vec![0u64; self.desc.experts];
        for (e, (token_ids, weights)) in per_expert.iter().enumerate() {
            if token_ids.is_empty() {
                continue;
            }
            counts[e] = token_ids.len() as u64;
            let index = Tensor::from_vec(token_ids.clone(), token_ids.len(), &device)?;
            let weight = Tensor::from_vec(weights.clone(), (weights.len(), 1), &device)?.to_dtype(flat.dtype())?;
            let mut routed = flat.index_select(&index, 0)?;
            if scale_input {
                routed = routed.broadcast_mul(&weight)?;
                gate_up_maxima.push(abs_max_on_device(&routed)?);
            }
            let hidden = self.hidden(&self.experts[e], &routed)?;
            down_maxima.push(abs_max_on_device(&hidden)?);
            let mut ys = self.expert_output(&self.experts[e], &hidden)?;
            if !scale_input {
                ys = ys.broadcast_mul(&weight)?;
            }
            out = out.index_add(&index, &ys.to_dtype(DType::F32)?, 0)?;
        }
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
        for (total, count) in stats.tokens.iter_mut().zip(counts) {
            *total += count;
        }

        if let Some(shared) = &self.shared {
            let mut shared_out = shared.forward(&flat, observers)?;
            if let Some(gate) = &self.shared_gate {
                observers.record_input(&[&gate.name], &flat)?;
                shared_out = shared_out.broadcast_mul(&sigmoid(&gate.forward(&flat)?)?)?;
            }
            out = (out + shared_out.to_dtype(DType::F32)?)?;
        }
        Ok(out.to_dtype(flat.dtype())?.reshape(dims)?)
    }
}

/// For each expert, the tokens routed to it (ascending) and their routing weights.
fn group_by_expert(routing: &Routing, experts: usize) -> Vec<(Vec<u32>, Vec<f32>)> {
    let mut groups = vec![(Vec::new(), Vec::new()); experts];
    for (slot, (&e, &w)) in routing.experts.iter().zip(&routing.weights).enumerate() {
        let token = (slot / routing.top_k) as u32;
        groups[e].0.push(token);
        groups[e].1.push(w);
    }
    groups
}
