//! Observers: what the calibration forward records. The absolute maximum of the input of every linear that
//! will be quantized (one value per module); per MoE block, one input maximum for gate/up and one for down
//! shared by all experts (serving engines use one activation scale per layer), routed token counts per
//! expert, and each expert's weight maxima; per attention, the maxima of the keys and values it attends with (what a
//! calibrated FP8 KV cache is scaled by).
//!
//! For the AWQ formats, a layer's forward runs twice with an [`AwqSearch`] attached (its statistics, then its search),
//! which sees every searched linear's input with the weight the forward runs it with ([`Observers::record_linears`])
//! and each routed expert's tokens; the layer's results are kept in [`Observers::smoothing`] until the next layer's
//! replace them.
//!
//! Observers also serve to find where a forward stopped being finite: created with [`Observers::tracing`],
//! they note the first activation they see that holds a NaN or an infinity (in the order of the forward).

use std::collections::BTreeMap;
use std::ops::Range;

use candle_core::Tensor;
use serde::Serialize;

use crate::awq::search::{expert_key, AwqSearch, Searched};
use crate::error::{Error, Result};
use crate::model::blocks::linear::Linear;
use crate::model::blocks::ops::{abs_max, abs_max_on_device, all_finite, read_scalars};
use crate::model::loader::ExpertWeights;

/// Statistics of one MoE block.
#[derive(Debug, Clone, Default, Serialize, ts_rs::TS)]
pub struct ExpertStats {
    /// max |x| over the tokens entering the experts (input of gate/up).
    pub gate_up_input_amax: f32,
    /// max |act(gate)·up| over every (token, expert) routing (input of down).
    pub down_input_amax: f32,
    /// (token, expert) routings per expert.
    pub tokens: Vec<u64>,
    /// max |W| of each expert's gate, up and down weights.
    pub gate_amax: Vec<f32>,
    pub up_amax: Vec<f32>,
    pub down_amax: Vec<f32>,
}

impl ExpertStats {
    pub fn new(experts: usize) -> Self {
        ExpertStats {
            gate_up_input_amax: 0.0,
            down_input_amax: 0.0,
            tokens: vec![0; experts],
            gate_amax: vec![0.0; experts],
            up_amax: vec![0.0; experts],
            down_amax: vec![0.0; experts],
        }
    }
}

/// The maxima of what one attention keeps in a KV cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, ts_rs::TS)]
pub struct KvAmax {
    /// max |k| over the keys as the attention's product with the queries reads them: after the key norm and the
    /// rope (MLA: the decompressed keys with the shared rotary part), each key head once.
    pub key: f32,
    /// max |v| over the values the attention weights.
    pub value: f32,
}

/// The name the KV maxima of an attention are recorded under: the module holding its output projection `o_proj`
/// (`model.layers.0.self_attn` for `model.layers.0.self_attn.o_proj`), where ModelOpt's key and value quantizers sit.
pub fn attention_module(o_proj: &str) -> String {
    o_proj.rsplit_once('.').map_or(o_proj, |(parent, _)| parent).to_string()
}

/// Everything recorded during one calibration forward.
#[derive(Debug, Clone, Default, Serialize, ts_rs::TS)]
pub struct Observers {
    /// Module name (no `.weight`) → max |input|.
    pub input_amax: BTreeMap<String, f32>,
    /// MoE block path (e.g. `model.layers.1.mlp`) → statistics of its routed experts.
    pub experts: BTreeMap<String, ExpertStats>,
    /// Attention module (the parent of its output projection, e.g. `model.layers.0.self_attn`) → the maxima of its
    /// keys and values.
    pub kv_amax: BTreeMap<String, KvAmax>,
    /// While tracing: `Some(first activation found not finite, if any)`.
    #[serde(skip)]
    trace: Option<Option<String>>,
    /// The AWQ search of the layer running, when the plan has AWQ formats.
    #[serde(skip)]
    #[ts(skip)]
    pub awq: Option<AwqSearch>,
    /// The last layer's AWQ results: each searched linear's smoothing (routed experts' under [`expert_key`]).
    #[serde(skip)]
    #[ts(skip)]
    pub smoothing: BTreeMap<String, Searched>,
}

impl Observers {
    /// Observers that also look for the first activation that is not finite (see [`Observers::check`]).
    pub fn tracing() -> Self {
        Observers { trace: Some(None), ..Observers::default() }
    }

    /// The first activation found NaN or infinite while tracing.
    pub fn first_non_finite(&self) -> Option<&str> {
        self.trace.as_ref().and_then(|first| first.as_deref())
    }

    /// While tracing, notes `what()` when `xs` is the first activation seen that is not finite; otherwise
    /// does nothing (no pass over the activations).
    pub fn check(&mut self, what: impl FnOnce() -> String, xs: &Tensor) -> Result<()> {
        if let Some(first @ None) = &mut self.trace {
            if !all_finite(xs)? {
                *first = Some(what());
            }
        }
        Ok(())
    }

    /// The first recorded maximum that is infinite (a NaN is never recorded: maxima skip it), by the name of
    /// what it is the input of.
    pub fn first_infinite(&self) -> Option<String> {
        let inputs = self.input_amax.iter().find(|(_, amax)| !amax.is_finite()).map(|(module, _)| module.clone());
        inputs.or_else(|| {
            self.experts.iter().find_map(|(block, stats)| {
                (!stats.gate_up_input_amax.is_finite() || !stats.down_input_amax.is_finite())
                    .then(|| format!("{block}.experts"))
            })
        })
    }

    /// Records `max |xs|` as the input of each of `modules` (linears reading the same input).
    pub fn record_input(&mut self, modules: &[&str], xs: &Tensor) -> Result<()> {
        self.check(|| format!("the input of {}", modules.join(", ")), xs)?;
        let amax = abs_max(xs)?;
        for module in modules {
            let entry = self.input_amax.entry((*module).to_string()).or_insert(0.0);
            *entry = entry.max(amax);
        }
        Ok(())
    }

    /// Records `xs` as the input of each of `linears` (reading the same input): its maximum, and for the AWQ search
    /// the call with each searched linear's weight as the forward runs it.
    pub fn record_linears(&mut self, linears: &[&Linear], xs: &Tensor) -> Result<()> {
        let names: Vec<&str> = linears.iter().map(|linear| linear.name.as_str()).collect();
        self.record_input(&names, xs)?;
        if let Some(awq) = &mut self.awq {
            for linear in linears {
                awq.record_linear(&linear.name, xs, &linear.weight)?;
            }
        }
        Ok(())
    }

    /// Records, for the AWQ search of MoE block `block`, each expert's call: `routed [slots, H]` and `hidden
    /// [slots, I]` (the inputs of gate/up and of down, rows sorted by expert, `ranges` each expert's), with the
    /// experts' weights as the forward holds them. Does nothing unless the block's experts are searched.
    pub fn record_experts(
        &mut self,
        block: &str,
        ranges: &[Range<usize>],
        routed: &Tensor,
        hidden: &Tensor,
        experts: &[ExpertWeights],
    ) -> Result<()> {
        let Some(awq) = self.awq.as_mut().filter(|awq| awq.searches_experts(block)) else { return Ok(()) };
        for (e, (range, weights)) in ranges.iter().zip(experts).enumerate().filter(|(_, (r, _))| !r.is_empty()) {
            let x = routed.narrow(0, range.start, range.len())?;
            let inter = weights.down.dim(1)?;
            if weights.gate_up.dim(0)? == 2 * inter {
                awq.record(&expert_key(block, e, "gate"), &x, &weights.gate_up.narrow(0, 0, inter)?)?;
                awq.record(&expert_key(block, e, "up"), &x, &weights.gate_up.narrow(0, inter, inter)?)?;
            } else {
                awq.record(&expert_key(block, e, "up"), &x, &weights.gate_up)?;
            }
            awq.record(&expert_key(block, e, "down"), &hidden.narrow(0, range.start, range.len())?, &weights.down)?;
        }
        Ok(())
    }

    /// Records the maxima of the keys and values `[B, heads, T, D]` that `attention` attends with, read back from the
    /// device together.
    pub fn record_kv(&mut self, attention: &str, keys: &Tensor, values: &Tensor) -> Result<()> {
        let maxima = read_scalars(&[abs_max_on_device(keys)?, abs_max_on_device(values)?])?;
        let &[key, value] = maxima.as_slice() else {
            return Err(Error::internal(format!("{attention}: two maxima read back as {}", maxima.len())));
        };
        let entry = self.kv_amax.entry(attention.to_string()).or_default();
        entry.key = entry.key.max(key);
        entry.value = entry.value.max(value);
        Ok(())
    }

    /// Adds what `other` recorded over other calibration batches (data parallel: each device runs its share of the
    /// batches through a layer, then the observers are combined): maxima take the larger, token counts add up, and
    /// an AWQ search's statistics combine as [`AwqSearch::merge`] says. The result is what one run over all the
    /// batches records.
    pub fn merge(&mut self, other: Observers) -> Result<()> {
        for (module, amax) in other.input_amax {
            let entry = self.input_amax.entry(module).or_insert(0.0);
            *entry = entry.max(amax);
        }
        for (block, stats) in other.experts {
            let ours = self.experts_mut(&block, stats.tokens.len());
            if ours.tokens.len() != stats.tokens.len() {
                return Err(Error::internal(format!(
                    "{block}: statistics of {} and {} experts",
                    ours.tokens.len(),
                    stats.tokens.len()
                )));
            }
            ours.gate_up_input_amax = ours.gate_up_input_amax.max(stats.gate_up_input_amax);
            ours.down_input_amax = ours.down_input_amax.max(stats.down_input_amax);
            ours.tokens.iter_mut().zip(&stats.tokens).for_each(|(a, b)| *a += b);
            for (mine, theirs) in [
                (&mut ours.gate_amax, &stats.gate_amax),
                (&mut ours.up_amax, &stats.up_amax),
                (&mut ours.down_amax, &stats.down_amax),
            ] {
                mine.iter_mut().zip(theirs).for_each(|(a, b)| *a = a.max(*b));
            }
        }
        for (attention, kv) in other.kv_amax {
            let entry = self.kv_amax.entry(attention).or_default();
            entry.key = entry.key.max(kv.key);
            entry.value = entry.value.max(kv.value);
        }
        match (&mut self.awq, other.awq) {
            (Some(ours), Some(theirs)) => ours.merge(theirs)?,
            (None, Some(theirs)) => self.awq = Some(theirs),
            _ => {}
        }
        Ok(())
    }

    /// The statistics of one MoE block, created on first use.
    pub fn experts_mut(&mut self, block: &str, experts: usize) -> &mut ExpertStats {
        self.experts.entry(block.to_string()).or_insert_with(|| ExpertStats::new(experts))
    }
}
