//! The output checkpoint's tensors, declared before anything is written: names, dtypes and shapes, in the
//! order the export queues them.

use super::kv_cache::kv_scale_names;
use super::plan::{ExpertOutput, ExportPlan, Stack};
use super::{compressed, Encoding, FormatSet};
use crate::checkpoint::{Checkpoint, TensorLayout};
use crate::error::{Error, Result};
use crate::formats::{self, QuantFormat};
use crate::model::descriptor::expert_name;

/// How the tensors of one quantized weight are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// A linear module's: `<module>.weight`, `<module>.weight_scale`, `<module>.input_scale` …
    Module,
    /// A parameter of a fused experts module (ModelOpt's form for experts stored stacked): `<param>` for the
    /// codes, `<param>_weight_scale`, `<param>_weight_scale_2`, `<param>_input_scale`.
    Parameter,
}

impl Naming {
    /// The name of the tensor `suffix` (`weight`, `weight_scale` …) of the quantized weight `output`.
    pub fn tensor(self, output: &str, suffix: &str) -> String {
        match self {
            Naming::Module => format!("{output}.{suffix}"),
            Naming::Parameter if suffix == "weight" => output.to_string(),
            Naming::Parameter => format!("{output}_{suffix}"),
        }
    }
}

/// Every tensor the export writes, in the order it queues them: the kept tensors, then layer by layer the
/// quantized linears and experts (each weight's format tensors, then its `input_scale` when the format is
/// calibrated and the linear is not weight-only); the AWQ formats' `pre_quant_scale`s and the norms that absorb
/// them instead; and the KV cache's scales (0-d f32).
pub fn output_layout(checkpoint: &Checkpoint, plan: &ExportPlan, formats: &FormatSet) -> Result<Vec<TensorLayout>> {
    let mut layout = Vec::new();
    for kept in &plan.keep {
        let (dtype, shape) = kept.layout(checkpoint)?;
        layout.push(TensorLayout { name: kept.output.clone(), dtype, shape });
    }
    // `scaled`: the weight's format is calibrated and calibration sees its input (not a plan's weight-only linear),
    // so it has an input scale.
    let mut add = |naming: Naming, output: &str, format: &dyn QuantFormat, mut tensors: Vec<_>, scaled: bool| {
        if scaled {
            tensors.push(format.input_scale_layout());
        }
        if plan.encoding == Encoding::CompressedTensors {
            tensors = compressed::layout(format.name(), tensors)?;
        }
        for (suffix, dtype, shape) in tensors {
            layout.push(TensorLayout { name: naming.tensor(output, suffix), dtype, shape });
        }
        Ok::<(), Error>(())
    };
    let linear = |format: &dyn QuantFormat, weight: &str, shape: &[usize]| -> Result<_> {
        Ok(format.output_layout(formats::matrix_shape(weight, shape)?))
    };
    for layer in plan.layers() {
        for l in plan.linears.iter().filter(|l| l.layer == layer) {
            let weight = format!("{}.weight", l.module);
            let format = formats.linear(l);
            add(
                Naming::Module,
                &l.output,
                format,
                linear(format, &weight, &l.shape(&checkpoint.info(&weight)?.shape))?,
                format.calibrated() && !l.weight_only,
            )?;
        }
        for experts in plan.experts.iter().filter(|x| x.layer == layer) {
            let source = &experts.source;
            let (inter, hidden) = (source.intermediate, source.hidden);
            let format = formats.experts(experts);
            match &experts.output {
                ExpertOutput::PerExpert(names) => {
                    // Ungated experts (no gate output) write up and down only.
                    let projections = [
                        names.gate.as_ref().map(|gate| (gate, [inter, hidden])),
                        Some((&names.up, [inter, hidden])),
                        Some((&names.down, [hidden, inter])),
                    ];
                    for e in 0..source.experts {
                        for (output, shape) in projections.iter().flatten() {
                            let output = expert_name(output, e);
                            let tensors = linear(format, &format!("{output}.weight"), shape)?;
                            add(Naming::Module, &output, format, tensors, format.calibrated())?;
                        }
                    }
                }
                ExpertOutput::Fused(fused) => {
                    for stack in fused.stacks(source)? {
                        check_stack(checkpoint, &stack)?;
                        add(
                            Naming::Parameter,
                            &stack.output,
                            format,
                            formats::stacked_layout(format, &stack.input, stack.shape)?,
                            format.calibrated(),
                        )?;
                    }
                }
            }
        }
    }
    layout.extend(awq_layout(checkpoint, plan, formats)?);
    for kv in &plan.kv_scales {
        for name in kv_scale_names(&kv.output, plan.encoding) {
            let (dtype, shape) = compressed::scalar_layout(plan.encoding);
            layout.push(TensorLayout { name, dtype, shape });
        }
    }
    Ok(layout)
}

/// The AWQ formats' tensors beside the quantized weights: each smoothed weight's `pre_quant_scale` (in the weight's
/// dtype, one per input channel) where no norm or preceding linear absorbs it, and the norms that do.
fn awq_layout(checkpoint: &Checkpoint, plan: &ExportPlan, formats: &FormatSet) -> Result<Vec<TensorLayout>> {
    let mut layout = Vec::new();
    let mut smoothing = |output: &str, dtype, inputs: usize| {
        layout.push(TensorLayout { name: format!("{output}.pre_quant_scale"), dtype, shape: vec![inputs] });
    };
    let folded = |module: &str| {
        plan.awq_norms.iter().any(|n| n.modules.iter().any(|m| m == module))
            || plan.awq_folds.iter().any(|f| f.from == module)
    };
    for l in plan.linears.iter().filter(|l| formats.linear(l).awq().is_some() && !folded(&l.module)) {
        let info = checkpoint.info(&format!("{}.weight", l.module))?;
        smoothing(&l.output, info.dtype, info.shape.last().copied().unwrap_or(0));
    }
    for experts in plan.experts.iter().filter(|x| formats.experts(x).awq().is_some()) {
        let (source, ExpertOutput::PerExpert(names)) = (&experts.source, &experts.output) else { continue };
        let dtype = checkpoint.info(&expert_name(&source.down, 0))?.dtype;
        for e in 0..source.experts {
            for gate_or_up in names.gate.iter().chain([&names.up]) {
                smoothing(&expert_name(gate_or_up, e), dtype, source.hidden);
            }
            if !folded(&names.down) {
                smoothing(&expert_name(&names.down, e), dtype, source.intermediate);
            }
        }
    }
    for norm in &plan.awq_norms {
        let info = checkpoint.info(&norm.input)?;
        layout.push(TensorLayout { name: norm.output.clone(), dtype: info.dtype, shape: info.shape.clone() });
    }
    Ok(layout)
}

/// `E_TENSOR_SHAPE` unless the checkpoint stores `stack` with the shape the plan gives it.
pub fn check_stack(checkpoint: &Checkpoint, stack: &Stack) -> Result<()> {
    let info = checkpoint.info(&stack.input)?;
    if info.shape != stack.shape {
        return Err(Error::ShapeInvalid {
            tensor: stack.input.clone(),
            shape: info.shape.clone(),
            message: format!("experts stored stacked were expected as {:?}", stack.shape),
        });
    }
    Ok(())
}
