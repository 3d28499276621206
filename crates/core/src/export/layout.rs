//! The output checkpoint's tensors, declared before anything is written: names, dtypes and shapes, in the
//! order the export queues them.

use super::plan::ExportPlan;
use crate::checkpoint::{Checkpoint, Dtype, TensorLayout};
use crate::error::Result;
use crate::formats::{self, QuantFormat};
use crate::model::descriptor::expert_name;

/// Suffix of the 0-d activation scale written beside each quantized weight.
pub const INPUT_SCALE: &str = "input_scale";

/// `<module>.<suffix>`: the name of one output tensor of a quantized linear.
pub fn tensor_name(module: &str, suffix: &str) -> String {
    format!("{module}.{suffix}")
}

/// Every tensor the export writes, in the order it queues them: the kept tensors, then layer by layer the
/// quantized linears and experts (each weight's format tensors, then its `input_scale` when the format is
/// calibrated).
pub fn output_layout(checkpoint: &Checkpoint, plan: &ExportPlan, format: &dyn QuantFormat) -> Result<Vec<TensorLayout>> {
    let mut layout = Vec::new();
    for kept in &plan.keep {
        let info = checkpoint.info(&kept.input)?;
        layout.push(TensorLayout { name: kept.output.clone(), dtype: info.dtype, shape: info.shape.clone() });
    }
    let mut linear = |output: &str, weight: &str, shape: &[usize]| -> Result<()> {
        for (suffix, dtype, shape) in format.output_layout(formats::matrix_shape(weight, shape)?) {
            layout.push(TensorLayout { name: tensor_name(output, suffix), dtype, shape });
        }
        if format.calibrated() {
            layout.push(TensorLayout { name: tensor_name(output, INPUT_SCALE), dtype: Dtype::F32, shape: Vec::new() });
        }
        Ok(())
    };
    for layer in plan.layers() {
        for l in plan.linears.iter().filter(|l| l.layer == layer) {
            let weight = format!("{}.weight", l.module);
            linear(&l.output, &weight, &checkpoint.info(&weight)?.shape)?;
        }
        for experts in plan.experts.iter().filter(|x| x.layer == layer) {
            let source = &experts.source;
            let (inter, hidden) = (source.intermediate, source.hidden);
            for e in 0..source.experts {
                for (output, shape) in
                    [(&experts.gate, [inter, hidden]), (&experts.up, [inter, hidden]), (&experts.down, [hidden, inter])]
                {
                    let output = expert_name(output, e);
                    linear(&output, &format!("{output}.weight"), &shape)?;
                }
            }
        }
    }
    Ok(layout)
}
