//! Quantizing a layer's routed experts on the GPU while the calibration forward holds them. A weight's
//! quantized tensors depend on the weight alone (its amax and its values); only the `input_scale` needs the
//! calibration. So once a layer is loaded, and before its batches run, each expert's weights are quantized by
//! the format's kernel from the very tensors the forward multiplies with, their error is measured there, and
//! only the quantized bytes come back to the host. The layer job then attaches the input scales and writes:
//! the checkpoint is not read a second time for these weights, and the CPU does no quantization arithmetic.
//!
//! The bytes are the CPU path's (the kernels are tested byte for byte against it, and a quantization on the GPU
//! divides as torch does there, [`crate::formats::Fp8`]). That holds only for weights the forward holds in the
//! exact values stored: a block is quantized here only when every expert tensor is stored unquantized in the
//! dtype the forward computes in (bf16 weights on a bf16 forward); any other block, a stacked output, or a
//! block with a weight that is not finite goes the CPU way, which also names the bad value.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use candle_core::{DType, Tensor};

use super::plan::{ExpertOutput, ExpertPlan, ExportPlan, PerExpertOutput};
use super::quantizer::{ErrorSum, QuantizedLinear};
use super::FormatSet;
use crate::checkpoint::{Checkpoint, Dtype};
use crate::error::{Error, Result};
use crate::formats::{self, DeviceQuantize, OutputTensor, QuantFormat, QuantizedWeight};
use crate::model::descriptor::{expert_name, ExpertTensors};
use crate::model::loader::ExpertWeights;
use crate::model::observe::{ExpertStats, Observers};
use crate::threads::lock;

mod shares;
use shares::{assemble, device_chunks, QuantizedChunk};

/// One expert quantized on the device: gate (none for ungated experts), up and down.
pub struct QuantizedExpert {
    pub gate: Option<QuantizedWeight>,
    pub up: QuantizedWeight,
    pub down: QuantizedWeight,
}

/// The routed experts of one MoE block quantized on the device, in expert order, with their error sums.
pub struct ResidentExperts {
    pub experts: Vec<QuantizedExpert>,
    pub errors: ErrorSum,
}

/// Quantizes the experts of each layer as the forward loads them and keeps the results until the layer's job
/// takes them.
pub struct ResidentQuantizer<'a> {
    checkpoint: &'a Checkpoint,
    plan: &'a ExportPlan,
    formats: &'a FormatSet,
    done: Mutex<BTreeMap<(usize, String), ResidentExperts>>,
    /// Weights quantized on the device so far.
    pub tensors: AtomicUsize,
}

impl<'a> ResidentQuantizer<'a> {
    /// `None` when no experts of the plan are in a format with a kernel.
    pub fn new(checkpoint: &'a Checkpoint, plan: &'a ExportPlan, formats: &'a FormatSet) -> Option<Self> {
        plan.experts.iter().any(|x| formats.experts(x).on_device().is_some()).then(|| ResidentQuantizer {
            checkpoint,
            plan,
            formats,
            done: Mutex::new(BTreeMap::new()),
            tensors: AtomicUsize::new(0),
        })
    }

    /// Quantizes the experts the plan writes one by one in layer `layer` (a position in the descriptor's
    /// layers), from the weights `devices` hold (each device's copy of the layer's blocks; several devices share
    /// the experts out), with the weight maxima `observers` recorded for them.
    pub fn quantize_layer(
        &self,
        layer: usize,
        devices: &[Vec<(&str, &[ExpertWeights])>],
        observers: &Observers,
    ) -> Result<()> {
        for plan in self.plan.experts.iter().filter(|x| x.layer == layer) {
            let ExpertOutput::PerExpert(names) = &plan.output else { continue };
            let copies: Option<Vec<&[ExpertWeights]>> = devices
                .iter()
                .map(|blocks| blocks.iter().find(|(block, _)| *block == plan.block).map(|(_, weights)| *weights))
                .collect();
            let Some(copies) = copies.filter(|copies| !copies.is_empty()) else { continue };
            let Some(stats) = observers.experts.get(&plan.block) else { continue };
            if let Some(done) = self.quantize_block(plan, names, &copies, stats)? {
                self.tensors.fetch_add(done.errors.tensors, Ordering::Relaxed);
                lock(&self.done).insert((layer, plan.block.clone()), done);
            }
        }
        Ok(())
    }

    /// The experts of `block` in layer `layer`, if they were quantized here.
    pub fn take(&self, layer: usize, block: &str) -> Option<ResidentExperts> {
        lock(&self.done).remove(&(layer, block.to_string()))
    }

    /// The block's experts, or `None` where the CPU must quantize them (see the module documentation). `copies`
    /// holds each device's copy of the experts; with several, each device quantizes its share of them (whole
    /// stacks, [`device_chunks`]) from its own copy, at once.
    fn quantize_block(
        &self,
        plan: &ExpertPlan,
        names: &PerExpertOutput,
        copies: &[&[ExpertWeights]],
        stats: &ExpertStats,
    ) -> Result<Option<ResidentExperts>> {
        let format = self.formats.experts(plan);
        let Some(device) = format.on_device() else { return Ok(None) };
        let on_device = OnDevice { format, device };
        let moe = &plan.source;
        let gated = moe.gated();
        let rows = if gated { 2 * moe.intermediate } else { moe.intermediate };
        let weights = copies[0];
        let shapes_match = copies.iter().all(|copy| {
            copy.len() == weights.len()
                && copy
                    .iter()
                    .all(|w| w.gate_up.dims() == [rows, moe.hidden] && w.down.dims() == [moe.hidden, moe.intermediate])
        });
        if weights.len() != moe.experts || gated != names.gate.is_some() || !shapes_match {
            return Ok(None);
        }
        if !self.stored_as_held(moe, weights)? {
            return Ok(None);
        }
        let mut amaxes = Vec::with_capacity(weights.len());
        for e in 0..weights.len() {
            let at = |values: &[f32]| values.get(e).copied().unwrap_or(f32::NAN);
            let gate_amax = if gated { at(&stats.gate_amax) } else { 0.0 };
            let (gate_up, down) = (gate_amax.max(at(&stats.up_amax)), at(&stats.down_amax));
            if !gate_up.is_finite() || !down.is_finite() {
                return Ok(None);
            }
            amaxes.push((gate_up, down));
        }
        let stack = Stack { on_device: &on_device, names, amaxes: &amaxes, split: gated.then_some(moe.intermediate) };
        let shares = device_chunks(weights.len(), CHUNK_ELEMENTS / (rows * moe.hidden).max(1), copies.len());
        let chunks: Vec<QuantizedChunk> = if copies.len() == 1 {
            stack.quantize(weights, &shares[0])?
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = copies
                    .iter()
                    .zip(&shares)
                    .map(|(copy, share)| scope.spawn(|| stack.quantize(copy, share)))
                    .collect();
                let mut chunks = Vec::new();
                for handle in handles {
                    let done = handle.join().map_err(|_| Error::internal("a device's expert quantization panicked"))?;
                    chunks.extend(done?);
                }
                Ok::<_, Error>(chunks)
            })?
        };
        assemble(&plan.block, chunks, weights.len(), gated)
    }

    /// Whether every expert tensor of the block is stored unquantized in the dtype the forward holds it in
    /// (so the held values are the stored ones).
    fn stored_as_held(&self, moe: &ExpertTensors, weights: &[ExpertWeights]) -> Result<bool> {
        let patterns: Vec<&String> = [&moe.gate, &moe.up, &moe.gate_up].into_iter().flatten().collect();
        for (e, w) in weights.iter().enumerate() {
            for (pattern, held) in patterns.iter().map(|p| (*p, &w.gate_up)).chain([(&moe.down, &w.down)]) {
                let name = expert_name(pattern, e);
                if formats::stored_format(self.checkpoint, &name)?.is_some() {
                    return Ok(false);
                }
                if Some(self.checkpoint.info(&name)?.dtype) != stored_dtype(held.dtype()) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

/// A format with its kernel.
struct OnDevice<'f> {
    format: &'f dyn QuantFormat,
    device: &'f dyn DeviceQuantize,
}

impl OnDevice<'_> {
    /// Weights `[N, K]` of the same shape (experts) quantized as one stack, each with its own per-tensor amax;
    /// the stack's squared error and squared norm (0-d f32, left on the device) are pushed to `sums`. Returns
    /// each weight's tensors, in order.
    fn quantize_stack(
        &self,
        held: &[Held<'_>],
        split: Option<usize>,
        sums: &mut Vec<Tensor>,
    ) -> Result<Vec<Vec<QuantizedWeight>>> {
        let scales = held.iter().map(|h| self.format.weight_scale(&h.name, h.amax)).collect::<Result<Vec<f32>>>()?;
        let stack = Tensor::stack(&held.iter().map(|h| h.weight).collect::<Vec<_>>(), 0)?;
        let parts = self.device.quantize_on_device(&stack, &scales)?;
        sums.push(self.device.error_on_device(&stack, &parts, &scales)?);
        split_stack(self.format, &parts, held, &scales, split)
    }
}

/// What quantizes one block's experts, stack by stack, on the device that holds the weights given.
struct Stack<'s> {
    on_device: &'s OnDevice<'s>,
    names: &'s PerExpertOutput,
    /// Per expert, the amax of gate/up and of down.
    amaxes: &'s [(f32, f32)],
    /// Gate/up weights: the rows of gate.
    split: Option<usize>,
}

impl Stack<'_> {
    /// The experts `chunks` of `weights` (one device's copy), one stack each; the sums read back with one copy.
    fn quantize(&self, weights: &[ExpertWeights], chunks: &[Range<usize>]) -> Result<Vec<QuantizedChunk>> {
        let name = |pattern: &str, e| format!("{}.weight", expert_name(pattern, e));
        let mut done = Vec::with_capacity(chunks.len());
        let mut sums = Vec::new();
        for experts in chunks {
            let gate_up: Vec<Held<'_>> = experts
                .clone()
                .map(|e| Held { weight: &weights[e].gate_up, name: name(&self.names.up, e), amax: self.amaxes[e].0 })
                .collect();
            let gate_ups = self.on_device.quantize_stack(&gate_up, self.split, &mut sums)?;
            let down: Vec<Held<'_>> = experts
                .clone()
                .map(|e| Held { weight: &weights[e].down, name: name(&self.names.down, e), amax: self.amaxes[e].1 })
                .collect();
            let downs = self.on_device.quantize_stack(&down, None, &mut sums)?;
            done.push(QuantizedChunk { first: experts.start, gate_ups, downs, sums: Vec::new() });
        }
        // One (error, norm) pair per stack, two stacks per chunk.
        let sums = if sums.is_empty() { Vec::new() } else { Tensor::cat(&sums, 0)?.to_vec1::<f32>()? };
        for (chunk, pairs) in done.iter_mut().zip(sums.chunks(4)) {
            chunk.sums = pairs.to_vec();
        }
        Ok(done)
    }
}

/// The device's tensors `parts` of a stack (quantized with `scales`, one per weight of `held`) as each weight's
/// tensors, in `output_layout` order with the per-tensor scale as the 0-d one; each weight whole, or (`split`) as
/// its first `split` rows and the rest (gate and up of a gate/up weight, sharing the scale). Each piece is copied
/// to the host once, straight from its place in the stack.
fn split_stack(
    format: &dyn QuantFormat,
    parts: &[Tensor],
    held: &[Held<'_>],
    scales: &[f32],
    split: Option<usize>,
) -> Result<Vec<Vec<QuantizedWeight>>> {
    let Some(first) = held.first() else { return Ok(Vec::new()) };
    let shape = formats::matrix_shape(&first.name, first.weight.dims())?;
    let pieces = match split {
        Some(rows) if rows < shape[0] => vec![0..rows, rows..shape[0]],
        _ => vec![0..shape[0]],
    };
    let layout = format.output_layout(shape);
    let mut weights = Vec::with_capacity(held.len());
    for (i, (h, &scale)) in held.iter().zip(scales).enumerate() {
        let mut own = Vec::with_capacity(pieces.len());
        for rows in &pieces {
            let mut parts = parts.iter();
            let mut tensors = Vec::with_capacity(layout.len());
            for (suffix, dtype, shape) in &layout {
                if shape.is_empty() {
                    tensors.push(OutputTensor::scalar_f32(suffix, scale));
                    continue;
                }
                let part = parts.next().ok_or_else(|| {
                    Error::internal(format!("{}: the device did not return its {suffix} {shape:?}", h.name))
                })?;
                let size: usize = shape.iter().product();
                let row = size / shape[0].max(1);
                let data = crate::cuda::download_u8(part, i * size + rows.start * row..i * size + rows.end * row)?;
                let mut piece = shape.clone();
                piece[0] = rows.len();
                tensors.push(OutputTensor { suffix, dtype: *dtype, shape: piece, data });
            }
            own.push(QuantizedWeight { tensors });
        }
        weights.push(own);
    }
    Ok(weights)
}

/// One weight the forward holds, to quantize: its output name (for errors) and its per-tensor amax.
struct Held<'w> {
    weight: &'w Tensor,
    name: String,
    amax: f32,
}

/// Elements of one chunk of experts quantized as a stack: its f32 temporaries (the values dequantized, to
/// measure the error) take 128 MiB each.
const CHUNK_ELEMENTS: usize = 1 << 25;

/// The checkpoint dtype of a tensor held in `dtype`.
fn stored_dtype(dtype: DType) -> Option<Dtype> {
    match dtype {
        DType::BF16 => Some(Dtype::BF16),
        DType::F16 => Some(Dtype::F16),
        DType::F32 => Some(Dtype::F32),
        _ => None,
    }
}

/// The linears of experts quantized on the device (`held`), with the block's shared input amaxes, in the order
/// [`super::quantizer::Quantizer::quantize_experts`] gives them.
pub(super) fn linears(
    format: &dyn QuantFormat,
    held: ResidentExperts,
    names: &PerExpertOutput,
    stats: &ExpertStats,
    errors: &mut ErrorSum,
) -> Vec<QuantizedLinear> {
    errors.add(&held.errors);
    let (gate_up_input, down_input) = (stats.gate_up_input_amax, stats.down_input_amax);
    let mut linears = Vec::with_capacity(3 * held.experts.len());
    for (e, expert) in held.experts.into_iter().enumerate() {
        let linear = |pattern: &str, weight, input| {
            QuantizedLinear::module(expert_name(pattern, e), format, weight, Some(input))
        };
        if let (Some(pattern), Some(gate)) = (&names.gate, expert.gate) {
            linears.push(linear(pattern, gate, gate_up_input));
        }
        linears.push(linear(&names.up, expert.up, gate_up_input));
        linears.push(linear(&names.down, expert.down, down_input));
    }
    linears
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::formats::{Fp8, Nvfp4, WeightInput};

    #[test]
    fn a_stack_quantized_elsewhere_splits_into_the_tensors_of_each_weight_and_of_gate_and_up() {
        // The device's tensors of a stack (as the CPU writes them, stacked) give each weight's CPU tensors.
        let (experts, rows, cols) = (3usize, 8usize, 64usize);
        let values: Vec<f32> = (0..experts * rows * cols)
            .map(|i| half::bf16::from_f32(((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 0.04).to_f32())
            .collect();
        let per_expert = rows * cols;
        let formats: [&dyn QuantFormat; 2] = [&Fp8 { torch_cuda: false }, &Nvfp4];
        for format in formats {
            let amaxes: Vec<f32> = values.chunks(per_expert).map(crate::numerics::weight_amax).collect();
            let scales: Vec<f32> = amaxes.iter().map(|&a| format.weight_scale("w", a).unwrap()).collect();
            let cpu: Vec<QuantizedWeight> = values
                .chunks(per_expert)
                .zip(&amaxes)
                .map(|(chunk, &amax)| {
                    format.quantize(&WeightInput::new("w", Dtype::BF16, &[rows, cols], chunk).unwrap(), amax).unwrap()
                })
                .collect();
            let parts: Vec<Tensor> = (0..cpu[0].tensors.len())
                .filter(|&t| !cpu[0].tensors[t].shape.is_empty())
                .map(|t| {
                    let data: Vec<u8> = cpu.iter().flat_map(|q| q.tensors[t].data.clone()).collect();
                    let mut shape = vec![experts];
                    shape.extend(&cpu[0].tensors[t].shape);
                    Tensor::from_vec(data, shape, &Device::Cpu).unwrap()
                })
                .collect();
            let weight = Tensor::zeros((rows, cols), candle_core::DType::BF16, &Device::Cpu).unwrap();
            let held: Vec<Held<'_>> =
                (0..experts).map(|_| Held { weight: &weight, name: "w".into(), amax: 0.0 }).collect();
            let whole: Vec<QuantizedWeight> =
                split_stack(format, &parts, &held, &scales, None).unwrap().into_iter().flatten().collect();
            assert_eq!(whole, cpu, "{}", format.quant_algo());
            // Gate and up of a gate/up weight: its first rows and the rest, each as quantized alone with the
            // shared amax.
            let halves = split_stack(format, &parts, &held, &scales, Some(3)).unwrap();
            for (e, pieces) in halves.iter().enumerate() {
                let chunk = &values[e * per_expert..(e + 1) * per_expert];
                let alone = |values: &[f32], n| {
                    let weight = WeightInput::new("w", Dtype::BF16, &[n, cols], values).unwrap();
                    format.quantize(&weight, amaxes[e]).unwrap()
                };
                assert_eq!(pieces[0], alone(&chunk[..3 * cols], 3), "{} gate", format.quant_algo());
                assert_eq!(pieces[1], alone(&chunk[3 * cols..], rows - 3), "{} up", format.quant_algo());
            }
        }
    }
}
