//! Quantizing one layer: its linears with their shared amaxes (SPEC §4.3) and its experts spread over the
//! CPU's cores, each weight read again from the checkpoint in its exact stored values, and the layer's
//! weight error measured by dequantizing what was written.

use std::collections::HashMap;

use candle_core::Device;

use super::kv_cache::kv_scales;
use super::layout::{check_stack, Naming};
use super::parallel::{for_experts, quantize_experts_in_groups};
use super::plan::{ExpertOutput, ExpertPlan, ExportPlan, FusedOutput, LinearPlan, PerExpertOutput, Stack};
use super::resident::ResidentQuantizer;
use super::FormatSet;
use crate::checkpoint::{Checkpoint, Dtype};
use crate::error::{Error, Result};
use crate::formats::{self, FormatName, OutputTensor, QuantFormat, QuantizedWeight, StackAssembler, WeightInput};
use crate::model::descriptor::{expert_name, ExpertLayout, ExpertTensors};
use crate::model::loader::WeightLoader;
use crate::model::observe::{ExpertStats, Observers};
use crate::numerics::{first_non_finite, weight_amax};

/// Accumulates a layer's squared error and squared norm.
#[derive(Default)]
pub struct ErrorSum {
    pub tensors: usize,
    pub error: f64,
    pub norm: f64,
}

impl ErrorSum {
    /// Σ(dequantized − original)² / Σ original² (0 for all-zero weights).
    pub fn relative_mse(&self) -> f64 {
        if self.norm > 0.0 {
            self.error / self.norm
        } else {
            0.0
        }
    }

    pub(super) fn add(&mut self, other: &ErrorSum) {
        self.tensors += other.tensors;
        self.error += other.error;
        self.norm += other.norm;
    }
}

/// What quantizing needs: the checkpoint (read again, in the exact stored values) and
/// the format. Shared read-only with the thread that quantizes one layer while the next one calibrates.
pub struct Quantizer<'a> {
    checkpoint: &'a Checkpoint,
    loader: WeightLoader<'a>,
    formats: FormatSet,
}

/// One layer once its quantized linears went to the sink: its KV cache scales (0-d f32 tensors by name) and its
/// error sums.
pub struct QuantizedLayer {
    pub layer: usize,
    pub scales: Vec<(String, f32)>,
    pub errors: ErrorSum,
}

/// Where a layer's quantized weights go as they are made (the output's queue): a layer is never held whole.
pub type Sink<'s> = dyn FnMut(QuantizedLinear) -> Result<()> + 's;

/// One quantized weight (a linear's, or a stack of experts') waiting to be written.
pub struct QuantizedLinear {
    pub output: String,
    /// How its tensors are named after `output`.
    pub naming: Naming,
    pub weight: QuantizedWeight,
    /// The format it was quantized in (which says how its tensors are re-encoded for compressed-tensors).
    pub format: FormatName,
    /// Its `input_scale` tensor (none for a weight-only format or linear: no `input_scale` is written).
    pub input_scale: Option<OutputTensor>,
    /// False for a tensor the export rewrites unquantized (a norm that absorbs an AWQ smoothing): not counted
    /// among the quantized weights.
    pub quantized: bool,
}

impl QuantizedLinear {
    /// A linear module's weight in `format`, with the `input_scale` of `input_amax` where the format calibrates.
    pub(super) fn module(
        output: String,
        format: &dyn QuantFormat,
        weight: QuantizedWeight,
        input_amax: Option<f32>,
    ) -> Self {
        let input_scale = input_scale(format, input_amax);
        QuantizedLinear { output, naming: Naming::Module, weight, format: format.name(), input_scale, quantized: true }
    }
}

impl<'a> Quantizer<'a> {
    pub fn new(checkpoint: &'a Checkpoint, formats: FormatSet) -> Self {
        Quantizer { checkpoint, loader: WeightLoader::new(checkpoint, Device::Cpu), formats }
    }

    pub fn formats(&self) -> &FormatSet {
        &self.formats
    }

    pub fn checkpoint(&self) -> &'a Checkpoint {
        self.checkpoint
    }

    /// Quantizes everything the plan assigns to `layer`, with the statistics its calibration recorded (`None`
    /// for a format that needs none: weight amaxes then come from the weights themselves).
    /// Experts `resident` quantized on the device while the forward held them are taken from it, their input
    /// amaxes attached. Each quantized weight goes to `sink` as soon as it is made (experts a group at a time).
    pub fn quantize_layer(
        &self,
        layer: usize,
        plan: &ExportPlan,
        observers: Option<&Observers>,
        resident: Option<&ResidentQuantizer<'_>>,
        sink: &mut Sink<'_>,
    ) -> Result<QuantizedLayer> {
        let mut errors = ErrorSum::default();
        let mut amax_cache = HashMap::new();
        let awq = |format: &dyn QuantFormat| format.awq().is_some();
        for linear in plan.linears.iter().filter(|l| l.layer == layer && !awq(self.formats.linear(l))) {
            sink(self.quantize_linear(linear, observers, &mut amax_cache, &mut errors)?)?;
        }
        match observers {
            Some(observers) => self.quantize_awq_linears(layer, plan, observers, &mut errors, sink)?,
            None if plan.linears.iter().any(|l| l.layer == layer && awq(self.formats.linear(l))) => {
                return Err(Error::internal("AWQ formats need the calibration forward's search"));
            }
            None => {}
        }
        for experts in plan.experts.iter().filter(|x| x.layer == layer) {
            let stats = match observers {
                Some(observers) => Some(observers.experts.get(&experts.block).ok_or_else(|| {
                    Error::internal(format!("no expert statistics were recorded for {}", experts.block))
                })?),
                None => None,
            };
            let held = resident.and_then(|resident| resident.take(layer, &experts.block));
            if awq(self.formats.experts(experts)) {
                let (ExpertOutput::PerExpert(names), Some(observers)) = (&experts.output, observers) else {
                    return Err(Error::internal(format!(
                        "{}: AWQ experts are written one per expert, from the calibration forward's search",
                        experts.block
                    )));
                };
                self.quantize_awq_experts(experts, names, &plan.awq_folds, observers, &mut errors, sink)?;
                continue;
            }
            match (&experts.output, held, stats) {
                (ExpertOutput::PerExpert(names), Some(held), Some(stats)) => {
                    let format = self.formats.experts(experts);
                    for linear in super::resident::linears(format, held, names, stats, &mut errors) {
                        sink(linear)?;
                    }
                }
                (ExpertOutput::PerExpert(names), _, _) => {
                    self.quantize_experts(experts, names, stats, &mut errors, sink)?
                }
                (ExpertOutput::Fused(fused), _, _) => {
                    for linear in self.quantize_fused(experts, fused, stats, &mut errors)? {
                        sink(linear)?;
                    }
                }
            }
        }
        let scales = kv_scales(layer, plan, observers)?;
        Ok(QuantizedLayer { layer, scales, errors })
    }

    /// max |W| of `<module>.weight`.
    fn weight_amax(&self, module: &str, cache: &mut HashMap<String, f32>) -> Result<f32> {
        if let Some(&amax) = cache.get(module) {
            return Ok(amax);
        }
        let amax = weight_amax(&self.checkpoint.read(&format!("{module}.weight"))?.to_f32());
        cache.insert(module.to_string(), amax);
        Ok(amax)
    }

    fn quantize_linear(
        &self,
        linear: &LinearPlan,
        observers: Option<&Observers>,
        cache: &mut HashMap<String, f32>,
        errors: &mut ErrorSum,
    ) -> Result<QuantizedLinear> {
        let own = std::slice::from_ref(&linear.module);
        let input_group = if linear.input_group.is_empty() { own } else { &linear.input_group[..] };
        let name = format!("{}.weight", linear.module);
        let tensor = self.checkpoint.read(&name)?;
        let mut values = tensor.to_f32();
        let shape = linear.shape(&tensor.shape);
        if let Some([start, count]) = linear.rows {
            let columns: usize = tensor.shape[1..].iter().product();
            if start + count > tensor.shape.first().copied().unwrap_or(0) {
                return Err(Error::internal(format!(
                    "{name}: rows {start}..{} past its {:?}",
                    start + count,
                    tensor.shape
                )));
            }
            values = values[start * columns..(start + count) * columns].to_vec();
        }
        // A group's amax is over its modules' whole weights (a fused q/k/v projection: q's, k's and v's).
        let shared = match linear.weight_group.first() {
            Some(first) => {
                let shape = self.checkpoint.info(&format!("{first}.weight"))?.shape.clone();
                self.formats.linear(linear).shares_amax(crate::formats::matrix_shape(first, &shape)?)
            }
            None => false,
        };
        let mut weight_amax = 0.0f32;
        if !shared {
            weight_amax = crate::numerics::reduce::weight_amax(&values);
        }
        for module in linear.weight_group.iter().filter(|_| shared) {
            weight_amax = weight_amax.max(self.weight_amax(module, cache)?);
        }
        let mut input_amax = 0.0f32;
        for module in input_group.iter().filter(|_| observers.is_some() && !linear.weight_only) {
            let amax = observers.and_then(|o| o.input_amax.get(module)).ok_or_else(|| {
                Error::internal(format!(
                    "no activation statistics were recorded for {module}; is it part of the forward?"
                ))
            })?;
            input_amax = input_amax.max(*amax);
        }
        let weight = WeightInput::new(&name, tensor.dtype, &shape, &values)?;
        let input_amax = (!linear.weight_only).then_some(input_amax);
        quantize_one(self.formats.linear(linear), &linear.output, &weight, weight_amax, input_amax, errors)
    }

    /// Quantizes every expert of a layer, spread over the CPU's cores, results in expert order.
    fn quantize_experts(
        &self,
        plan: &ExpertPlan,
        names: &PerExpertOutput,
        stats: Option<&ExpertStats>,
        errors: &mut ErrorSum,
        sink: &mut Sink<'_>,
    ) -> Result<()> {
        quantize_experts_in_groups(plan.source.experts, errors, sink, |e, sums| {
            self.quantize_expert(plan, names, stats, e, sums)
        })
    }

    /// The experts of a layer written fused, as ModelOpt writes experts stored stacked: each stack quantized
    /// whole, with one input amax per stack when calibrated (ModelOpt's one input quantizer per projection).
    fn quantize_fused(
        &self,
        plan: &ExpertPlan,
        fused: &FusedOutput,
        stats: Option<&ExpertStats>,
        errors: &mut ErrorSum,
    ) -> Result<Vec<QuantizedLinear>> {
        let [gate_up, down] = fused.stacks(&plan.source)?;
        let (gate_up_input, down_input) = stats.map_or((0.0, 0.0), |s| (s.gate_up_input_amax, s.down_input_amax));
        let format = self.formats.experts(plan);
        let gate_up = self.quantize_stack(format, &gate_up, gate_up_input, errors)?;
        Ok(vec![gate_up, self.quantize_stack(format, &down, down_input, errors)?])
    }

    /// One stack `[E, K, N]` read whole and quantized expert by expert (spread over the CPU's cores) as its
    /// format's stacked rule says, with the amax of the whole stack where the rule takes one.
    fn quantize_stack(
        &self,
        format: &dyn QuantFormat,
        stack: &Stack,
        input_amax: f32,
        errors: &mut ErrorSum,
    ) -> Result<QuantizedLinear> {
        check_stack(self.checkpoint, stack)?;
        let rule = formats::stacked_rule(format, &stack.input)?;
        let tensor = self.checkpoint.read(&stack.input)?;
        let [experts, k, n] = stack.shape;
        let expert = |e: usize| -> Result<Vec<f32>> { Ok(tensor.view().slice_first(e)?.to_f32()) };
        // A value that cannot be quantized is named by its index in the stack as stored.
        let amaxes = for_experts(0..experts, |e| {
            let values = expert(e)?;
            match first_non_finite(&values) {
                Some(i) => Err(Error::NonFinite {
                    tensor: stack.input.clone(),
                    index: e * k * n + i,
                    context: ", which cannot be quantized".into(),
                }),
                None => Ok(weight_amax(&values)),
            }
        })?;
        let amax = amaxes.into_iter().fold(0f32, f32::max);
        let parts = for_experts(0..experts, |e| {
            let values = expert(e)?;
            let (shape, matrix) = formats::expert_matrix(rule, [k, n], &values);
            let weight = WeightInput::new(&stack.input, rule.division_dtype(tensor.dtype), &shape, &matrix)?;
            let quantized = format.quantize(&weight, amax)?;
            let mut sums = ErrorSum::default();
            accumulate_error(format, &quantized, &weight, &mut sums)?;
            Ok((quantized, sums))
        })?;
        let mut assembler = StackAssembler::new(format, &stack.input, stack.shape)?;
        let mut sums = ErrorSum::default();
        for (quantized, part) in parts {
            assembler.add(&quantized)?;
            sums.add(&part);
        }
        errors.add(&ErrorSum { tensors: 1, ..sums });
        let weight = assembler.finish()?;
        Ok(QuantizedLinear {
            output: stack.output.clone(),
            naming: Naming::Parameter,
            weight,
            format: format.name(),
            input_scale: input_scale(format, Some(input_amax)),
            quantized: true,
        })
    }

    /// Gate, up and down of expert `e` (up and down for ungated experts), quantized with the layer's shared
    /// input amaxes (when calibrated). Gate and up share one weight amax; an ungated up has its own.
    fn quantize_expert(
        &self,
        plan: &ExpertPlan,
        names: &PerExpertOutput,
        stats: Option<&ExpertStats>,
        e: usize,
        errors: &mut ErrorSum,
    ) -> Result<Vec<QuantizedLinear>> {
        let moe = &plan.source;
        let (inter, hidden) = (moe.intermediate, moe.hidden);
        let gated = moe.gated();
        if gated != names.gate.is_some() {
            return Err(Error::internal(format!(
                "{}: the plan's gate output does not match the experts read",
                plan.block
            )));
        }
        // Each weight is divided in the dtype it is stored in (they may differ within one expert).
        let stored = |pattern: Option<&String>| -> Result<Dtype> {
            let pattern =
                pattern.ok_or_else(|| Error::internal(format!("{}: an expert tensor is not named", plan.block)))?;
            Ok(self.checkpoint.info(&expert_name(pattern, e))?.dtype)
        };
        let up_dtype = stored(moe.up.as_ref().or(moe.gate_up.as_ref()))?;
        let down_dtype = stored(Some(&moe.down))?;
        let (gate, up, down) = self.expert_values(moe, e)?;
        // Calibration recorded each weight's amax as the forward loaded it; without it, the same from the values.
        let (gate_up_amax, down_amax, gate_up_input, down_input) = match stats {
            Some(s) => {
                let at = |v: &[f32]| {
                    v.get(e)
                        .copied()
                        .ok_or_else(|| Error::internal(format!("{}: no statistics for expert {e}", plan.block)))
                };
                let gate_amax = if gated { at(&s.gate_amax)? } else { 0.0 };
                ([gate_amax, at(&s.up_amax)?], at(&s.down_amax)?, s.gate_up_input_amax, s.down_input_amax)
            }
            None => {
                let gate_amax = gate.as_deref().map_or(0.0, weight_amax);
                ([gate_amax, weight_amax(&up)], weight_amax(&down), 0.0, 0.0)
            }
        };
        // Gate and up share their amax (as ModelOpt's one quantizer over the fused gate/up does) where the
        // format shares it; an ungated up has its own.
        let gate_up_rows = if gated { 2 * inter } else { inter };
        let format = self.formats.experts(plan);
        let [gate_amax, up_amax] = if gated && format.shares_amax([gate_up_rows, hidden]) {
            [gate_up_amax[0].max(gate_up_amax[1]); 2]
        } else {
            gate_up_amax
        };
        let mut out = Vec::with_capacity(3);
        let mut one =
            |pattern: &str, dtype: Dtype, shape: [usize; 2], values: &[f32], amax: f32, input: f32| -> Result<()> {
                let output = expert_name(pattern, e);
                let name = format!("{output}.weight");
                let weight = WeightInput::new(&name, dtype, &shape, values)?;
                out.push(quantize_one(format, &output, &weight, amax, Some(input), errors)?);
                Ok(())
            };
        if let (Some(gate_out), Some(gate)) = (&names.gate, &gate) {
            let gate_dtype = stored(moe.gate.as_ref().or(moe.gate_up.as_ref()))?;
            one(gate_out, gate_dtype, [inter, hidden], gate, gate_amax, gate_up_input)?;
        }
        one(&names.up, up_dtype, [inter, hidden], &up, up_amax, gate_up_input)?;
        one(&names.down, down_dtype, [hidden, inter], &down, down_amax, down_input)?;
        Ok(out)
    }

    /// Expert `e`'s gate (none when ungated), up and down values in the `[out, in]` orientation.
    pub(super) fn expert_values(
        &self,
        moe: &ExpertTensors,
        e: usize,
    ) -> Result<(Option<Vec<f32>>, Vec<f32>, Vec<f32>)> {
        if let Some(values) = self.plain_expert(moe, e)? {
            return Ok(values);
        }
        let expert = self.loader.expert(moe, e)?;
        let mut gate = expert.gate_up.flatten_all()?.to_vec1::<f32>()?;
        let down = expert.down.flatten_all()?.to_vec1::<f32>()?;
        if !moe.gated() {
            return Ok((None, gate, down));
        }
        let up = gate.split_off((moe.intermediate * moe.hidden).min(gate.len()));
        Ok((Some(gate), up, down))
    }

    /// Expert `e`'s gate (when gated), up and down values, converted straight from the stored bytes when the
    /// layout stores each as a plain tensor of its own (the hub layout, not quantized): the same values as
    /// through the expert view, without its tensors and copies. `None` for every other layout.
    fn plain_expert(&self, moe: &ExpertTensors, e: usize) -> Result<Option<(Option<Vec<f32>>, Vec<f32>, Vec<f32>)>> {
        let Some(up) = &moe.up else { return Ok(None) };
        if moe.layout != ExpertLayout::PerExpert || (moe.gated() && moe.gate.is_none()) {
            return Ok(None);
        }
        let gate = moe.gate.as_ref().map(|pattern| expert_name(pattern, e));
        let (up, down) = (expert_name(up, e), expert_name(&moe.down, e));
        for name in gate.iter().chain([&up, &down]) {
            if formats::stored_format(self.checkpoint, name)?.is_some() {
                return Ok(None);
            }
        }
        let read = |name: &str| -> Result<Vec<f32>> { Ok(self.checkpoint.read(name)?.to_f32()) };
        let gate = gate.map(|name| read(&name)).transpose()?;
        Ok(Some((gate, read(&up)?, read(&down)?)))
    }
}

/// Quantizes one weight and adds its error to `errors`.
fn quantize_one(
    format: &dyn QuantFormat,
    output: &str,
    weight: &WeightInput,
    weight_amax: f32,
    input_amax: Option<f32>,
    errors: &mut ErrorSum,
) -> Result<QuantizedLinear> {
    let quantized = format.quantize(weight, weight_amax)?;
    accumulate_error(format, &quantized, weight, errors)?;
    Ok(QuantizedLinear::module(output.to_string(), format, quantized, input_amax))
}

/// The `input_scale` of a calibrated format's weight from its input amax (none for a weight-only format).
fn input_scale(format: &dyn QuantFormat, input_amax: Option<f32>) -> Option<OutputTensor> {
    input_amax.filter(|_| format.calibrated()).map(|amax| format.input_scale_tensor(amax))
}

/// Adds one quantized weight's squared error to the layer's sums.
pub(super) fn accumulate_error(
    format: &dyn QuantFormat,
    quantized: &QuantizedWeight,
    weight: &WeightInput,
    errors: &mut ErrorSum,
) -> Result<()> {
    let (shape, restored) = format.dequantize(weight.name, &quantized.views())?;
    if shape != weight.shape {
        return Err(Error::internal(format!("{}: dequantized to {shape:?}, not {:?}", weight.name, weight.shape)));
    }
    for (a, b) in restored.iter().zip(weight.values) {
        errors.error += (f64::from(*a) - f64::from(*b)).powi(2);
        errors.norm += f64::from(*b).powi(2);
    }
    errors.tensors += 1;
    Ok(())
}
