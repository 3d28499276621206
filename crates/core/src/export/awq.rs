//! One layer's linears and routed experts in an AWQ format (`int4_awq`, `w4a8_awq`, `nvfp4_awq`), from the smoothing
//! its calibration searched (`awq::search`), as ModelOpt 0.47's export writes them:
//!
//! - each weight smoothed by its own search; NVFP4_AWQ's folds (`awq_folds`) then multiply a linear's output rows by
//!   the following linear's own `pre_quant_scale` (o_proj into v_proj, down_proj into up_proj), which that one
//!   does not carry;
//! - each weight re-smoothed to its input group's mean `pre_quant_scale` (q/k/v, gate/up); where the plan names the
//!   norm producing that input (`awq_norms`), the norm's weight absorbs the mean and the linears carry none;
//! - routed experts: each projection's `pre_quant_scale` averaged over all the layer's experts, then gate and up's
//!   averaged (each weight re-smoothed at each step, as ModelOpt's export does for experts held one module each);
//!   an expert's gate and up share their maxima (INT4's blocks, the per-tensor scale);
//! - W4A8 and NVFP4_AWQ: `weight_scale_2` shared within a group (an expert's gate/up), `input_scale` from each
//!   linear's per-channel input maxima smoothed by its own search, the group's largest; routed experts share their
//!   per-channel maxima before each expert's smoothing, and the layer writes the largest.

use std::collections::HashSet;

use super::layout::Naming;
use super::parallel::quantize_experts_in_groups;
use super::plan::{AwqFoldPlan, AwqNormPlan, ExpertPlan, ExportPlan, LinearPlan, PerExpertOutput};
use super::quantizer::{accumulate_error, ErrorSum, QuantizedLinear, Quantizer, Sink};
use crate::awq::search::{expert_key, Searched};
use crate::awq::{average, dtype_bytes, fold_into_norm, resmooth, smoothed_input_amax, Smoothing};
use crate::checkpoint::Dtype;
use crate::error::{Error, Result};
use crate::formats::{
    self, AwqQuantizer, FormatName, Int4Awq, OutputTensor, QuantFormat, QuantizedWeight, WeightInput,
};
use crate::model::descriptor::expert_name;
use crate::model::observe::Observers;
use crate::numerics::e4m3::round_to_dtype;
use crate::numerics::reduce::weight_amax;

/// One weight smoothed by its own search.
struct Smoothed {
    shape: [usize; 2],
    dtype: Dtype,
    values: Vec<f32>,
    /// Its own `pre_quant_scale` (in `dtype`), then the one it was last re-smoothed to.
    pqs: Vec<f32>,
    /// W4A8: its input amax once smoothed.
    input_amax: f32,
}

impl Smoothed {
    fn new(mut values: Vec<f32>, shape: [usize; 2], dtype: Dtype, searched: &Searched) -> Result<Self> {
        if searched.smoothing.inverse.len() != shape[1] {
            return Err(Error::internal(format!(
                "an AWQ smoothing of {} channels for a weight {shape:?}",
                searched.smoothing.inverse.len()
            )));
        }
        searched.smoothing.smooth(&mut values, dtype);
        let pqs = searched.smoothing.pre_quant_scale(dtype);
        let input_amax = smoothed_input_amax(&searched.channel_amax, &searched.smoothing, dtype);
        Ok(Smoothed { shape, dtype, values, pqs, input_amax })
    }

    /// Output rows multiplied by `pqs` (the following linear's smoothing, `from`), in `dtype`.
    fn scale_rows(&mut self, pqs: &[f32], from: &str) -> Result<()> {
        if pqs.len() != self.shape[0] {
            return Err(Error::internal(format!(
                "the AWQ smoothing of {from} ({} channels) cannot fold into {} output rows",
                pqs.len(),
                self.shape[0]
            )));
        }
        for (row, p) in self.values.chunks_exact_mut(self.shape[1]).zip(pqs) {
            row.iter_mut().for_each(|w| *w = round_to_dtype(*w * p, self.dtype));
        }
        Ok(())
    }

    /// Re-smoothed to `pqs`.
    fn resmooth(&mut self, pqs: &[f32]) {
        resmooth(&mut self.values, &self.pqs, pqs, self.dtype);
        self.pqs = pqs.to_vec();
    }

    fn weight<'a>(&'a self, name: &'a str) -> Result<WeightInput<'a>> {
        WeightInput::new(name, self.dtype, &self.shape, &self.values)
    }
}

/// The search result of `key` (a linear, or a routed expert's projection by [`expert_key`]).
fn searched<'o>(observers: &'o Observers, key: &str) -> Result<&'o Searched> {
    observers.smoothing.get(key).ok_or_else(|| {
        Error::internal(format!("no AWQ search result for {key}: the calibration forward did not run it"))
    })
}

/// The search result of routed expert `e`'s `projection` (`cols` inputs): a neutral smoothing for an expert that
/// received no calibration token (as ModelOpt writes one), an error for one the forward did not run.
fn expert_searched(observers: &Observers, block: &str, e: usize, projection: &str, cols: usize) -> Result<Searched> {
    let tokens = observers.experts.get(block).and_then(|stats| stats.tokens.get(e).copied());
    match (observers.smoothing.get(&expert_key(block, e, projection)), tokens) {
        (Some(searched), _) => Ok(searched.clone()),
        (None, Some(0)) => {
            Ok(Searched { smoothing: Smoothing::neutral(cols), alpha: None, channel_amax: vec![0.0; cols] })
        }
        (None, _) => searched(observers, &expert_key(block, e, projection)).cloned(),
    }
}

/// The `pre_quant_scale` tensor of one linear.
fn pre_quant_scale(pqs: &[f32], dtype: Dtype) -> OutputTensor {
    OutputTensor { suffix: "pre_quant_scale", dtype, shape: vec![pqs.len()], data: dtype_bytes(pqs, dtype) }
}

/// The concrete INT4 format of an AWQ format (its blocks are shared between an expert's gate and up).
fn int4(format: &dyn QuantFormat) -> Int4Awq {
    Int4Awq { fp8_activations: format.name() == FormatName::W4a8Awq }
}

impl Quantizer<'_> {
    /// The layer's linears in an AWQ format, an input group at a time (the plan's order).
    pub fn quantize_awq_linears(
        &self,
        layer: usize,
        plan: &ExportPlan,
        observers: &Observers,
        errors: &mut ErrorSum,
        sink: &mut Sink<'_>,
    ) -> Result<()> {
        let awq: Vec<&LinearPlan> =
            plan.linears.iter().filter(|l| l.layer == layer && self.formats().linear(l).awq().is_some()).collect();
        let mut done = HashSet::new();
        for linear in &awq {
            if done.contains(linear.module.as_str()) {
                continue;
            }
            let group: Vec<&LinearPlan> = match linear.input_group.is_empty() {
                true => vec![*linear],
                false => linear
                    .input_group
                    .iter()
                    .map(|module| {
                        awq.iter().find(|l| &l.module == module).copied().ok_or_else(|| {
                            Error::internal(format!(
                                "{module} reads {}'s input but is not an AWQ linear of layer {layer}",
                                linear.module
                            ))
                        })
                    })
                    .collect::<Result<_>>()?,
            };
            done.extend(group.iter().map(|l| l.module.as_str()));
            self.awq_group(&group, plan, observers, errors, sink)?;
        }
        Ok(())
    }

    /// Linears reading one input: smoothed, re-smoothed to their mean, quantized; the norm that absorbs the mean.
    fn awq_group(
        &self,
        group: &[&LinearPlan],
        plan: &ExportPlan,
        observers: &Observers,
        errors: &mut ErrorSum,
        sink: &mut Sink<'_>,
    ) -> Result<()> {
        let format = self.formats().linear(group[0]);
        let mut linears = Vec::with_capacity(group.len());
        for linear in group {
            let name = format!("{}.weight", linear.module);
            if linear.rows.is_some() {
                return Err(Error::internal(format!("{name}: AWQ cannot smooth rows cut from a fused weight")));
            }
            let tensor = self.checkpoint().read(&name)?;
            let shape = formats::matrix_shape(&name, &tensor.shape)?;
            let mut smoothed =
                Smoothed::new(tensor.to_f32(), shape, tensor.dtype, searched(observers, &linear.module)?)?;
            if let Some(fold) = plan.awq_folds.iter().find(|f| f.into == linear.module) {
                let from = searched(observers, &fold.from)?.smoothing.pre_quant_scale(smoothed.dtype);
                smoothed.scale_rows(&from, &fold.from)?;
            }
            linears.push(smoothed);
        }
        let dtype = linears[0].dtype;
        let mean = average(&linears.iter().map(|l| l.pqs.as_slice()).collect::<Vec<_>>(), dtype);
        linears.iter_mut().for_each(|l| l.resmooth(&mean));
        let shared = format.shares_amax(linears[0].shape);
        let group_amax = linears.iter().map(|l| weight_amax(&l.values)).fold(0.0f32, f32::max);
        let input_amax = linears.iter().map(|l| l.input_amax).fold(0.0f32, f32::max);
        let modules: HashSet<&str> = group.iter().map(|l| l.module.as_str()).collect();
        let norm =
            plan.awq_norms.iter().find(|n| n.modules.iter().map(String::as_str).collect::<HashSet<_>>() == modules);
        for (linear, smoothed) in group.iter().zip(&linears) {
            let name = format!("{}.weight", linear.module);
            let weight = smoothed.weight(&name)?;
            let mut quantized =
                format.quantize(&weight, if shared { group_amax } else { weight_amax(&smoothed.values) })?;
            accumulate_error(format, &quantized, &weight, errors)?;
            if norm.is_none() && !plan.awq_folds.iter().any(|f| f.from == linear.module) {
                quantized.tensors.push(pre_quant_scale(&mean, dtype));
            }
            let input = (!linear.weight_only).then_some(input_amax);
            sink(QuantizedLinear::module(linear.output.clone(), format, quantized, input))?;
        }
        if let Some(norm) = norm {
            sink(self.awq_norm(norm, &mean)?)?;
        }
        Ok(())
    }

    /// A norm's weight times a group's mean `pre_quant_scale`.
    fn awq_norm(&self, norm: &AwqNormPlan, pqs: &[f32]) -> Result<QuantizedLinear> {
        let tensor = self.checkpoint().read(&norm.input)?;
        let mut values = tensor.to_f32();
        if values.len() != pqs.len() {
            return Err(Error::ShapeInvalid {
                tensor: norm.input.clone(),
                shape: tensor.shape.clone(),
                message: format!(
                    "cannot absorb the AWQ smoothing of {} channels of {}",
                    pqs.len(),
                    norm.modules.join(", ")
                ),
            });
        }
        fold_into_norm(&mut values, pqs, norm.offset, tensor.dtype);
        let output = norm
            .output
            .strip_suffix(".weight")
            .ok_or_else(|| Error::internal(format!("the norm {} is not written as a weight", norm.output)))?;
        let data = dtype_bytes(&values, tensor.dtype);
        let tensors = vec![OutputTensor { suffix: "weight", dtype: tensor.dtype, shape: tensor.shape.clone(), data }];
        Ok(QuantizedLinear {
            output: output.to_string(),
            naming: Naming::Module,
            weight: QuantizedWeight { tensors },
            format: FormatName::Int4Awq,
            input_scale: None,
            quantized: false,
        })
    }

    /// A layer's routed experts in an AWQ format, written one linear per expert and projection.
    pub fn quantize_awq_experts(
        &self,
        plan: &ExpertPlan,
        names: &PerExpertOutput,
        plan_folds: &[AwqFoldPlan],
        observers: &Observers,
        errors: &mut ErrorSum,
        sink: &mut Sink<'_>,
    ) -> Result<()> {
        let moe = &plan.source;
        let format = self.formats().experts(plan);
        let gated = moe.gated();
        let dtype = self.checkpoint().info(&expert_name(&moe.down, 0)).map_or(Dtype::BF16, |info| info.dtype);
        let projections: &[&str] = if gated { &["gate", "up", "down"] } else { &["up", "down"] };
        // Each projection's mean over the experts, then gate and up's (searched per expert, from observers alone).
        let mut means = Vec::new();
        let mut inputs = Vec::new();
        for projection in projections {
            let cols = if *projection == "down" { moe.intermediate } else { moe.hidden };
            let results = (0..moe.experts)
                .map(|e| expert_searched(observers, &plan.block, e, projection, cols))
                .collect::<Result<Vec<_>>>()?;
            let pqs: Vec<Vec<f32>> = results.iter().map(|r| r.smoothing.pre_quant_scale(dtype)).collect();
            means.push(average(&pqs.iter().map(Vec::as_slice).collect::<Vec<_>>(), dtype));
            // ModelOpt shares the experts' per-channel input maxima (the largest over the experts) before each
            // expert's smoothing scales them; the layer writes the largest result.
            let channels = (0..cols).map(|c| results.iter().map(|r| r.channel_amax[c]).fold(0.0f32, f32::max));
            let shared: Vec<f32> = channels.collect();
            let amax = results.iter().map(|r| smoothed_input_amax(&shared, &r.smoothing, dtype));
            inputs.push(amax.fold(0.0f32, f32::max));
        }
        let down_mean = means.pop().unwrap_or_default();
        let down_input = inputs.pop().unwrap_or(0.0);
        let gate_up_mean = average(&means.iter().map(Vec::as_slice).collect::<Vec<_>>(), dtype);
        let gate_up_input = inputs.iter().copied().fold(0.0f32, f32::max);
        let context = ExpertsContext {
            plan,
            names,
            observers,
            format,
            dtype,
            means: &means,
            gate_up_mean: &gate_up_mean,
            down_mean: &down_mean,
            inputs: [gate_up_input, down_input],
            fold_down: plan_folds.iter().any(|f| f.from == names.down && f.into == names.up),
        };
        quantize_experts_in_groups(moe.experts, errors, sink, |e, sums| self.awq_expert(&context, e, sums))
    }

    /// Expert `e`'s projections smoothed, re-smoothed to the layer's means and quantized (NVFP4_AWQ where the plan
    /// folds it: down's own smoothing into up's output rows first, down keeping its own).
    fn awq_expert(&self, cx: &ExpertsContext<'_>, e: usize, errors: &mut ErrorSum) -> Result<Vec<QuantizedLinear>> {
        let moe = &cx.plan.source;
        let (inter, hidden) = (moe.intermediate, moe.hidden);
        let (gate, up, down) = self.expert_values(moe, e)?;
        let searched = |projection: &str, cols| expert_searched(cx.observers, &cx.plan.block, e, projection, cols);
        let down_searched = searched("down", inter)?;
        let mut gate_up = Vec::new();
        let projections = gate.map(|g| ("gate", g)).into_iter().chain([("up", up)]);
        for ((projection, values), mean) in projections.zip(cx.means) {
            let mut smoothed = Smoothed::new(values, [inter, hidden], cx.dtype, &searched(projection, hidden)?)?;
            if cx.fold_down && projection == "up" {
                smoothed.scale_rows(&down_searched.smoothing.pre_quant_scale(cx.dtype), "down")?;
            }
            smoothed.resmooth(mean);
            smoothed.resmooth(cx.gate_up_mean);
            gate_up.push(smoothed);
        }
        let mut down = Smoothed::new(down, [hidden, inter], cx.dtype, &down_searched)?;
        if !cx.fold_down {
            down.resmooth(cx.down_mean);
        }
        // Gate and up share their weight amax (ModelOpt syncs an expert's gate/up amax): INT4's block maxima, NVFP4's
        // and W4A8's per-tensor scale.
        let gate_up_amax = gate_up.iter().map(|l| weight_amax(&l.values)).fold(0.0f32, f32::max);
        let blocks = match cx.format.awq() {
            Some(AwqQuantizer::Int4) => {
                let each: Vec<Vec<f32>> =
                    gate_up.iter().map(|l| l.weight("").map(|w| Int4Awq::block_amax(&w))).collect::<Result<_>>()?;
                Some((0..each[0].len()).map(|i| each.iter().map(|b| b[i]).fold(0.0f32, f32::max)).collect::<Vec<_>>())
            }
            _ => None,
        };
        let outputs = cx.names.gate.iter().chain([&cx.names.up]);
        let mut out = Vec::with_capacity(3);
        for (pattern, smoothed) in outputs.zip(&gate_up) {
            let pqs = Some(cx.gate_up_mean);
            out.push(self.awq_one(
                cx,
                pattern,
                e,
                smoothed,
                blocks.as_deref(),
                gate_up_amax,
                pqs,
                cx.inputs[0],
                errors,
            )?);
        }
        let pqs = (!cx.fold_down).then_some(cx.down_mean);
        let down_amax = weight_amax(&down.values);
        out.push(self.awq_one(cx, &cx.names.down, e, &down, None, down_amax, pqs, cx.inputs[1], errors)?);
        Ok(out)
    }

    /// One expert projection quantized (with shared INT4 block maxima where given), its `pre_quant_scale` beside it
    /// unless folded.
    #[allow(clippy::too_many_arguments)]
    fn awq_one(
        &self,
        cx: &ExpertsContext<'_>,
        pattern: &str,
        e: usize,
        smoothed: &Smoothed,
        blocks: Option<&[f32]>,
        amax: f32,
        pqs: Option<&[f32]>,
        input_amax: f32,
        errors: &mut ErrorSum,
    ) -> Result<QuantizedLinear> {
        let output = expert_name(pattern, e);
        let name = format!("{output}.weight");
        let weight = smoothed.weight(&name)?;
        let mut quantized = match blocks {
            Some(blocks) => int4(cx.format).quantize_blocks(&weight, blocks, amax)?,
            None => cx.format.quantize(&weight, amax)?,
        };
        accumulate_error(cx.format, &quantized, &weight, errors)?;
        if let Some(pqs) = pqs {
            quantized.tensors.push(pre_quant_scale(pqs, cx.dtype));
        }
        Ok(QuantizedLinear::module(output, cx.format, quantized, Some(input_amax)))
    }
}

/// What every expert of a layer is quantized with.
struct ExpertsContext<'c> {
    plan: &'c ExpertPlan,
    names: &'c PerExpertOutput,
    observers: &'c Observers,
    format: &'c dyn QuantFormat,
    dtype: Dtype,
    /// Gate's (when gated) and up's means over the experts, in that order.
    means: &'c [Vec<f32>],
    gate_up_mean: &'c [f32],
    down_mean: &'c [f32],
    /// The shared input amax of gate/up and of down.
    inputs: [f32; 2],
    /// NVFP4_AWQ: each expert's down smoothing folds into its up's output rows.
    fold_down: bool,
}
