//! Quantize and write a checkpoint: calibration streams layer by layer; each layer's linears and experts
//! are quantized as soon as that layer has seen every calibration batch (its input maxima are then final),
//! and written; tensors kept in the source dtype are copied. The output appears only when complete.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use candle_core::Device;
use serde::Serialize;

use super::plan::{ExpertPlan, ExportPlan, LinearPlan};
use crate::calib::observers::{ExpertStats, Observers};
use crate::calib::run::{load_request, CalibrationRequest};
use crate::checkpoint::{Checkpoint, CheckpointWriter, Dtype, TensorLayout, WriterOptions};
use crate::error::{Error, Result};
use crate::formats::{self, QuantFormat, QuantizedWeight, WeightInput};
use crate::model::descriptor::{ExpertLayout, MlpDescriptor, MoeDescriptor};
use crate::model::stream::{self, LayerStream, Throttle};
use crate::model::weights::WeightLoader;
use crate::model::ModelDescriptor;

/// The stage a quantization progress event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
pub enum QuantizeStage {
    /// A layer ran, or some batches of the next one did.
    Calibrate,
    /// A layer's tensors were quantized and queued.
    Quantize,
    /// Finishing the output.
    Write,
}

/// Where a quantization run is.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
pub struct QuantizeProgress {
    pub stage: QuantizeStage,
    /// Layers done.
    pub layer: usize,
    pub layers: usize,
    pub tokens: usize,
    /// Calibration batches of the next layer done, of `batches` (`batches` once a layer is done).
    pub batch: usize,
    pub batches: usize,
    pub bytes_written: u64,
}

/// Weight quantization error of one decoder layer.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
pub struct LayerError {
    pub layer: usize,
    pub tensors: usize,
    /// Σ(dequantized − original)² / Σ original² over the layer's quantized weights.
    pub relative_mse: f64,
}

#[derive(Debug, Clone, Default, Serialize, ts_rs::TS)]
pub struct StageSeconds {
    pub calibrate: f64,
    /// Parts of `calibrate`: loading each layer (reading, converting, copying to the device), and the forward.
    pub load: f64,
    pub forward: f64,
    pub quantize: f64,
    pub write: f64,
    pub total: f64,
}

/// What calibration recorded and on how much data, known before the output is published.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
pub struct CalibrationSummary {
    pub observers: Observers,
    pub samples: usize,
    pub requested_samples: usize,
    pub seq_len: usize,
    /// Calibration tokens per layer.
    pub tokens: usize,
}

/// Extra files for the output, made from the calibration summary: relative name → bytes.
pub type ExtraFiles<'a> = dyn FnMut(&CalibrationSummary) -> Result<Vec<(String, Vec<u8>)>> + 'a;

/// What the caller follows and controls while [`quantize_checkpoint`] runs.
pub struct RunControl<'a> {
    /// Checked between layers and a last time right before the output is published.
    pub cancel: &'a AtomicBool,
    pub progress: &'a mut dyn FnMut(QuantizeProgress),
    /// Called once every layer is quantized, before the output is published: the files it returns (plain
    /// names, none of the checkpoint's own) are written into the output with the checkpoint, and an error
    /// stops the run with nothing published.
    pub extra_files: Option<&'a mut ExtraFiles<'a>>,
}

#[derive(Debug, Clone, Serialize, ts_rs::TS)]
pub struct QuantizeReport {
    pub layers: Vec<LayerError>,
    #[serde(flatten)]
    pub calibration: CalibrationSummary,
    pub quantized_tensors: usize,
    /// Output files and their sizes.
    pub files: BTreeMap<String, u64>,
    pub peak_rss_bytes: Option<u64>,
    pub seconds: StageSeconds,
}

/// Accumulates a layer's squared error and squared norm.
#[derive(Default)]
struct ErrorSum {
    tensors: usize,
    error: f64,
    norm: f64,
}

impl ErrorSum {
    fn add(&mut self, other: &ErrorSum) {
        self.tensors += other.tensors;
        self.error += other.error;
        self.norm += other.norm;
    }
}

/// What quantizing needs: the checkpoint (read again, in the exact stored values) and
/// the format. Shared read-only with the thread that quantizes one layer while the next one calibrates.
struct Quantizer<'a> {
    checkpoint: &'a Checkpoint,
    loader: WeightLoader<'a>,
    format: Box<dyn QuantFormat>,
}

/// The output being written.
struct Output<'a> {
    writer: CheckpointWriter,
    /// Bytes handed to the writer so far: read by progress events without taking the output's lock, which
    /// the writing thread holds while a finished shard goes to disk.
    bytes_written: &'a AtomicU64,
    quantized_tensors: usize,
}

impl Output<'_> {
    fn add(&mut self, name: &str, dtype: Dtype, shape: &[usize], data: Vec<u8>) -> Result<()> {
        self.bytes_written.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.writer.write(name, dtype, shape, &data)
    }

    /// The tensors the plan keeps as they are (embeddings, norms, lm_head), copied from the checkpoint.
    fn copy_kept(&mut self, checkpoint: &Checkpoint, plan: &ExportPlan) -> Result<()> {
        for kept in &plan.keep {
            let tensor = checkpoint.read(&kept.input)?;
            self.add(&kept.output, tensor.dtype, &tensor.shape, tensor.data.to_vec())?;
        }
        Ok(())
    }

    /// Queues one quantized linear's tensors and its `input_scale`.
    fn queue(&mut self, format: &dyn QuantFormat, quantized: QuantizedLinear) -> Result<()> {
        for tensor in quantized.weight.tensors {
            self.add(&tensor_name(&quantized.output, tensor.suffix), tensor.dtype, &tensor.shape, tensor.data)?;
        }
        let input_scale = format.input_scale(quantized.input_amax);
        self.add(&tensor_name(&quantized.output, INPUT_SCALE), Dtype::F32, &[], input_scale.to_le_bytes().to_vec())?;
        self.quantized_tensors += 1;
        Ok(())
    }
}

/// One layer's quantized linears with the layer's error sums.
struct QuantizedLayer {
    layer: usize,
    linears: Vec<QuantizedLinear>,
    errors: ErrorSum,
}

/// What a layer's quantization thread hands back once its tensors are queued for writing.
struct LayerDone {
    layer: usize,
    errors: ErrorSum,
    bytes_written: u64,
}

impl Quantizer<'_> {
    /// Quantizes everything the plan assigns to `layer`, with the statistics its calibration recorded.
    fn quantize_layer(
        &self,
        layer: usize,
        plan: &ExportPlan,
        desc: &ModelDescriptor,
        observers: &Observers,
    ) -> Result<QuantizedLayer> {
        let mut errors = ErrorSum::default();
        let mut linears = Vec::new();
        let mut amax_cache = HashMap::new();
        for linear in plan.linears.iter().filter(|l| l.layer == layer) {
            linears.push(self.quantize_linear(linear, observers, &mut amax_cache, &mut errors)?);
        }
        for experts in plan.experts.iter().filter(|x| x.layer == layer) {
            let moe = moe_block(desc, experts)?;
            let stats = observers
                .experts
                .get(&experts.block)
                .ok_or_else(|| Error::internal(format!("no expert statistics were recorded for {}", experts.block)))?;
            linears.extend(self.quantize_experts(experts, moe, stats, &mut errors)?);
        }
        Ok(QuantizedLayer { layer, linears, errors })
    }

    /// max |W| of `<module>.weight`.
    fn weight_amax(&self, module: &str, cache: &mut HashMap<String, f32>) -> Result<f32> {
        if let Some(&amax) = cache.get(module) {
            return Ok(amax);
        }
        let amax = crate::numerics::weight_amax(&self.checkpoint.read(&format!("{module}.weight"))?.to_f32());
        cache.insert(module.to_string(), amax);
        Ok(amax)
    }

    fn quantize_linear(
        &self,
        linear: &LinearPlan,
        observers: &Observers,
        cache: &mut HashMap<String, f32>,
        errors: &mut ErrorSum,
    ) -> Result<QuantizedLinear> {
        let own = std::slice::from_ref(&linear.module);
        let weight_group = if linear.weight_group.is_empty() { own } else { &linear.weight_group[..] };
        let input_group = if linear.input_group.is_empty() { own } else { &linear.input_group[..] };
        let mut weight_amax = 0.0f32;
        for module in weight_group {
            weight_amax = weight_amax.max(self.weight_amax(module, cache)?);
        }
        let mut input_amax = 0.0f32;
        for module in input_group {
            let amax = observers.input_amax.get(module).ok_or_else(|| {
                Error::internal(format!(
                    "no activation statistics were recorded for {module}; is it part of the forward?"
                ))
            })?;
            input_amax = input_amax.max(*amax);
        }
        let name = format!("{}.weight", linear.module);
        let tensor = self.checkpoint.read(&name)?;
        let values = tensor.to_f32();
        let weight = WeightInput::new(&name, tensor.dtype, &tensor.shape, &values)?;
        quantize_one(self.format.as_ref(), &linear.output, &weight, weight_amax, input_amax, errors)
    }

    /// Quantizes every expert of a layer, spread over the CPU's cores, results in expert order.
    fn quantize_experts(
        &self,
        plan: &ExpertPlan,
        moe: &MoeDescriptor,
        stats: &ExpertStats,
        errors: &mut ErrorSum,
    ) -> Result<Vec<QuantizedLinear>> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(moe.experts.max(1));
        let chunk = moe.experts.div_ceil(threads).max(1);
        let results: Vec<Result<(Vec<QuantizedLinear>, ErrorSum)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..moe.experts)
                .step_by(chunk)
                .map(|first| {
                    let experts = first..(first + chunk).min(moe.experts);
                    scope.spawn(move || {
                        background_priority();
                        let mut sums = ErrorSum::default();
                        let mut out = Vec::new();
                        for e in experts {
                            out.extend(self.quantize_expert(plan, moe, stats, e, &mut sums)?);
                        }
                        Ok((out, sums))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(Error::internal("an expert quantization thread panicked"))))
                .collect()
        });
        let mut linears = Vec::with_capacity(3 * moe.experts);
        for result in results {
            let (part, sums) = result?;
            errors.add(&sums);
            linears.extend(part);
        }
        Ok(linears)
    }

    /// Gate, up and down of expert `e`, quantized with the layer's shared input amaxes.
    fn quantize_expert(
        &self,
        plan: &ExpertPlan,
        moe: &MoeDescriptor,
        stats: &ExpertStats,
        e: usize,
        errors: &mut ErrorSum,
    ) -> Result<[QuantizedLinear; 3]> {
        let inter = moe.intermediate;
        let hidden = moe.hidden;
        // Each weight is divided in the dtype it is stored in (they may differ within one expert).
        let stored = |pattern: Option<&String>| -> Result<Dtype> {
            let pattern =
                pattern.ok_or_else(|| Error::internal(format!("{}: an expert tensor is not named", moe.block)))?;
            Ok(self.checkpoint.info(&pattern.replace("{e}", &e.to_string()))?.dtype)
        };
        let gate_dtype = stored(moe.gate.as_ref().or(moe.gate_up.as_ref()))?;
        let up_dtype = stored(moe.up.as_ref().or(moe.gate_up.as_ref()))?;
        let down_dtype = stored(Some(&moe.down))?;
        let [gate, up, down] = match self.plain_expert(moe, e)? {
            Some(values) => values,
            None => {
                let expert = self.loader.expert(moe, e)?;
                let mut gate = expert.gate_up.flatten_all()?.to_vec1::<f32>()?;
                let up = gate.split_off((inter * hidden).min(gate.len()));
                [gate, up, expert.down.flatten_all()?.to_vec1::<f32>()?]
            }
        };
        let gate_up_amax = stats.gate_amax[e].max(stats.up_amax[e]);
        let [gate_out, up_out, down_out] = [&plan.gate, &plan.up, &plan.down].map(|p| p.replace("{e}", &e.to_string()));
        let (gate_name, up_name, down_name) =
            (format!("{gate_out}.weight"), format!("{up_out}.weight"), format!("{down_out}.weight"));
        let gate = WeightInput::new(&gate_name, gate_dtype, &[inter, hidden], &gate)?;
        let up = WeightInput::new(&up_name, up_dtype, &[inter, hidden], &up)?;
        let down = WeightInput::new(&down_name, down_dtype, &[hidden, inter], &down)?;
        let format = self.format.as_ref();
        Ok([
            quantize_one(format, &gate_out, &gate, gate_up_amax, stats.gate_up_input_amax, errors)?,
            quantize_one(format, &up_out, &up, gate_up_amax, stats.gate_up_input_amax, errors)?,
            quantize_one(format, &down_out, &down, stats.down_amax[e], stats.down_input_amax, errors)?,
        ])
    }

    /// Expert `e`'s gate, up and down values, converted straight from the stored bytes when the layout stores
    /// each as a plain tensor of its own (the hub layout, not quantized): the same values as through the
    /// expert view, without its tensors and copies. `None` for every other layout.
    fn plain_expert(&self, moe: &MoeDescriptor, e: usize) -> Result<Option<[Vec<f32>; 3]>> {
        let (Some(gate), Some(up)) = (&moe.gate, &moe.up) else { return Ok(None) };
        if moe.layout != ExpertLayout::PerExpert {
            return Ok(None);
        }
        let names = [gate, up, &moe.down].map(|pattern| pattern.replace("{e}", &e.to_string()));
        for name in &names {
            if formats::stored_format(self.checkpoint, name)?.is_some() {
                return Ok(None);
            }
        }
        let [gate, up, down] = names;
        let read = |name: &str| -> Result<Vec<f32>> { Ok(self.checkpoint.read(name)?.to_f32()) };
        Ok(Some([read(&gate)?, read(&up)?, read(&down)?]))
    }
}

/// Suffix of the 0-d activation scale written beside each quantized weight.
const INPUT_SCALE: &str = "input_scale";

/// `<module>.<suffix>`: the name of one output tensor of a quantized linear.
fn tensor_name(module: &str, suffix: &str) -> String {
    format!("{module}.{suffix}")
}

/// The MoE block of the descriptor that an expert plan refers to.
fn moe_block<'a>(desc: &'a ModelDescriptor, experts: &ExpertPlan) -> Result<&'a MoeDescriptor> {
    match desc.layers.get(experts.layer).map(|l| &l.mlp) {
        Some(MlpDescriptor::Moe(moe)) if moe.block == experts.block => Ok(moe),
        _ => Err(Error::internal(format!(
            "layer {} of the descriptor has no MoE block {}",
            experts.layer, experts.block
        ))),
    }
}

/// Every tensor the export writes, in the order it queues them: the kept tensors, then layer by layer the
/// quantized linears and experts (each weight's format tensors, then its `input_scale`).
fn output_layout(
    checkpoint: &Checkpoint,
    plan: &ExportPlan,
    desc: &ModelDescriptor,
    format: &dyn QuantFormat,
) -> Result<Vec<TensorLayout>> {
    let mut layout = Vec::new();
    for kept in &plan.keep {
        let info = checkpoint.info(&kept.input)?;
        layout.push(TensorLayout { name: kept.output.clone(), dtype: info.dtype, shape: info.shape.clone() });
    }
    let mut linear = |output: &str, weight: &str, shape: &[usize]| -> Result<()> {
        for (suffix, dtype, shape) in format.output_layout(formats::matrix_shape(weight, shape)?) {
            layout.push(TensorLayout { name: tensor_name(output, suffix), dtype, shape });
        }
        layout.push(TensorLayout { name: tensor_name(output, INPUT_SCALE), dtype: Dtype::F32, shape: Vec::new() });
        Ok(())
    };
    for layer in 0..desc.layers.len() {
        for l in plan.linears.iter().filter(|l| l.layer == layer) {
            let weight = format!("{}.weight", l.module);
            linear(&l.output, &weight, &checkpoint.info(&weight)?.shape)?;
        }
        for experts in plan.experts.iter().filter(|x| x.layer == layer) {
            let moe = moe_block(desc, experts)?;
            let (inter, hidden) = (moe.intermediate, moe.hidden);
            for e in 0..moe.experts {
                for (output, shape) in
                    [(&experts.gate, [inter, hidden]), (&experts.up, [inter, hidden]), (&experts.down, [hidden, inter])]
                {
                    let output = output.replace("{e}", &e.to_string());
                    linear(&output, &format!("{output}.weight"), &shape)?;
                }
            }
        }
    }
    Ok(layout)
}

/// One quantized linear waiting to be written.
struct QuantizedLinear {
    output: String,
    weight: QuantizedWeight,
    input_amax: f32,
}

/// Lowers the calling thread's scheduling priority (nice 10, Linux): quantizing and writing layer L must not
/// take the CPU from the thread that drives layer L+1's calibration on the GPU, which launches its kernels.
fn background_priority() {
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    // SAFETY: plain system calls on the calling thread's own id; a failure only leaves the priority as it was.
    unsafe {
        let thread = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, thread as libc::id_t, 10);
    }
}

/// A mutex's guard, also when a thread panicked holding it (the panic is reported through its join).
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Quantizes one weight and adds its error to `errors`.
fn quantize_one(
    format: &dyn QuantFormat,
    output: &str,
    weight: &WeightInput,
    weight_amax: f32,
    input_amax: f32,
    errors: &mut ErrorSum,
) -> Result<QuantizedLinear> {
    let quantized = format.quantize(weight, weight_amax)?;
    accumulate_error(format, &quantized, weight, errors)?;
    Ok(QuantizedLinear { output: output.to_string(), weight: quantized, input_amax })
}

/// Adds one quantized weight's squared error to the layer's sums.
fn accumulate_error(
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
        errors.error += f64::from(a - b).powi(2);
        errors.norm += f64::from(*b).powi(2);
    }
    errors.tensors += 1;
    Ok(())
}

/// Checks a name [`RunControl::extra_files`] returned: a plain file name the checkpoint does not use.
fn check_extra_name(name: &str, plan: &ExportPlan) -> Result<()> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    let taken = plan.files.contains_key(name)
        || plan.copy.iter().any(|f| f == name)
        || name.ends_with(".safetensors")
        || name == crate::checkpoint::INDEX_FILE;
    if !plain || taken {
        return Err(Error::internal(format!("{name:?} cannot be added to the output (not a plain name, or taken)")));
    }
    Ok(())
}

/// Calibrates the checkpoint in `dir`, quantizes it as `plan` says and writes it to `target`.
pub fn quantize_checkpoint(
    dir: &Path,
    target: &Path,
    desc: &ModelDescriptor,
    plan: &ExportPlan,
    calibration: &CalibrationRequest,
    control: RunControl<'_>,
) -> Result<QuantizeReport> {
    let RunControl { cancel, progress, extra_files } = control;
    let started = Instant::now();
    let mut seconds = StageSeconds::default();
    let checkpoint = Checkpoint::open(dir)?;
    // The disk starts on the embedding and layer 0 while the device starts up (the checkpoint's drop stops
    // this read when the run ends early).
    stream::read_ahead_first(&checkpoint, desc);
    let compute = calibration.compute_device()?;
    // Same bytes as ModelOpt running on the same kind of device (their FP8 arithmetic differs, see `Fp8`).
    let format = formats::format(plan.format, compute.device.is_cuda());
    let set = load_request(dir, calibration, desc.vocab_size, cancel)?;
    let writer_options = WriterOptions {
        max_shard_bytes: plan.max_shard_bytes,
        overwrite: plan.overwrite,
        input_dir: Some(dir.to_path_buf()),
    };
    let mut writer = CheckpointWriter::create(target, writer_options)?;
    let quantizer = Quantizer { checkpoint: &checkpoint, loader: WeightLoader::new(&checkpoint, Device::Cpu), format };
    // Declared up front, every tensor is written straight to its place in its shard as soon as it exists.
    writer.declare(&output_layout(&checkpoint, plan, desc, quantizer.format.as_ref())?)?;
    let bytes_written = AtomicU64::new(0);
    let output = Output { writer, bytes_written: &bytes_written, quantized_tensors: 0 };

    let mut stream = LayerStream::new(&checkpoint, desc, &set.batches, calibration.all_experts, &compute)?;
    let (layers, batches) = (stream.layers(), stream.batches());
    let mut layer_errors = Vec::with_capacity(layers);
    let mut throttle = Throttle::new(Throttle::WITHIN_LAYER);
    let mut calibrated = 0;
    // Layer L is quantized and written on CPU threads while the next layers calibrate: up to `JOBS` such
    // layer jobs at once (one writing while the next quantizes), joined in layer order for progress and
    // errors. Tensors go to their declared places in whatever order they come. The tensors kept as they are
    // are copied by a thread of their own while layer 0 calibrates.
    const JOBS: usize = 2;
    // The first error of any job, in the order they happened: after the writer fails, a job still running
    // fails too (the writer is closed), and the error to report is the writer's.
    let first_error = std::sync::Mutex::new(None::<Error>);
    let first_error = &first_error;
    fn record<T>(first_error: &std::sync::Mutex<Option<Error>>, result: Result<T>) -> Result<T> {
        result.map_err(|error| {
            let mut first = lock(first_error);
            match *first {
                None => {
                    *first = Some(error);
                    Error::internal("a background job failed (its error is reported instead)")
                }
                Some(_) => error,
            }
        })
    }
    // A failed job's error, or the one that happened first if another job failed before it.
    let reported = |error: Error| lock(first_error).take().unwrap_or(error);
    let quantize_seconds = std::sync::Mutex::new(0.0f64);
    let write_seconds = std::sync::Mutex::new(0.0f64);
    let output = std::sync::Mutex::new(output);
    let tokens = stream.tokens;
    std::thread::scope(|scope| -> Result<()> {
        let kept = {
            let (output, write_seconds, checkpoint) = (&output, &write_seconds, &checkpoint);
            scope.spawn(move || -> Result<()> {
                background_priority();
                let mut output = lock(output);
                let clock = Instant::now();
                record(first_error, output.copy_kept(checkpoint, plan))?;
                *lock(write_seconds) += clock.elapsed().as_secs_f64();
                Ok(())
            })
        };
        let mut pending = std::collections::VecDeque::with_capacity(JOBS);
        let mut finish = |handle: std::thread::ScopedJoinHandle<'_, Result<LayerDone>>,
                          progress: &mut dyn FnMut(QuantizeProgress)|
         -> Result<()> {
            let done = handle
                .join()
                .unwrap_or_else(|_| Err(Error::internal("the quantization thread panicked")))
                .map_err(reported)?;
            let errors = &done.errors;
            let relative_mse = if errors.norm > 0.0 { errors.error / errors.norm } else { 0.0 };
            layer_errors.push(LayerError { layer: done.layer, tensors: errors.tensors, relative_mse });
            progress(QuantizeProgress {
                stage: QuantizeStage::Quantize,
                layer: done.layer + 1,
                layers,
                tokens,
                batch: batches,
                batches,
                bytes_written: done.bytes_written,
            });
            Ok(())
        };
        loop {
            if cancel.load(Ordering::Relaxed) {
                return Err(Error::Cancelled);
            }
            let clock = Instant::now();
            let mut within = |batch| {
                if throttle.ready() {
                    progress(QuantizeProgress {
                        stage: QuantizeStage::Calibrate,
                        layer: calibrated,
                        layers,
                        tokens,
                        batch,
                        batches,
                        bytes_written: bytes_written.load(Ordering::Relaxed),
                    });
                }
            };
            let Some(layer) = stream.step(&mut within)? else { break };
            calibrated = layer + 1;
            seconds.calibrate += clock.elapsed().as_secs_f64();
            progress(QuantizeProgress {
                stage: QuantizeStage::Calibrate,
                layer: layer + 1,
                layers,
                tokens,
                batch: batches,
                batches,
                bytes_written: bytes_written.load(Ordering::Relaxed),
            });
            while pending.len() >= JOBS {
                if let Some(handle) = pending.pop_front() {
                    finish(handle, progress)?;
                }
            }
            let observers = stream.observers.clone();
            let (quantizer, quantize_seconds, write_seconds, output) =
                (&quantizer, &quantize_seconds, &write_seconds, &output);
            pending.push_back(scope.spawn(move || {
                background_priority();
                let clock = Instant::now();
                let done = record(first_error, quantizer.quantize_layer(layer, plan, desc, &observers))?;
                *lock(quantize_seconds) += clock.elapsed().as_secs_f64();
                let mut output = lock(output);
                let clock = Instant::now();
                for linear in done.linears {
                    record(first_error, output.queue(quantizer.format.as_ref(), linear))?;
                }
                *lock(write_seconds) += clock.elapsed().as_secs_f64();
                Ok(LayerDone {
                    layer: done.layer,
                    errors: done.errors,
                    bytes_written: output.bytes_written.load(Ordering::Relaxed),
                })
            }));
        }
        while let Some(handle) = pending.pop_front() {
            finish(handle, progress)?;
        }
        kept.join()
            .unwrap_or_else(|_| Err(Error::internal("the thread copying the kept tensors panicked")))
            .map_err(reported)
    })?;
    let mut output = output.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
    seconds.write += write_seconds.into_inner().unwrap_or_default();
    seconds.quantize = quantize_seconds.into_inner().unwrap_or_default();
    seconds.load = stream.load_seconds;
    seconds.forward = stream.forward_seconds;

    let clock = Instant::now();
    progress(QuantizeProgress {
        stage: QuantizeStage::Write,
        layer: layers,
        layers,
        tokens: stream.tokens,
        batch: batches,
        batches,
        bytes_written: bytes_written.load(Ordering::Relaxed),
    });
    for (name, text) in &plan.files {
        output.writer.write_file(name, text.as_bytes())?;
    }
    for name in &plan.copy {
        output.writer.copy_file(&dir.join(name), name)?;
    }
    let summary = CalibrationSummary {
        observers: stream.observers,
        samples: set.sample_count(),
        requested_samples: set.requested_samples,
        seq_len: calibration.seq_len,
        tokens: stream.tokens,
    };
    if let Some(extra_files) = extra_files {
        for (name, bytes) in extra_files(&summary)? {
            check_extra_name(&name, plan)?;
            output.writer.write_file(&name, &bytes)?;
        }
    }
    // Everything was read: publish only if the input stayed the same throughout, and only if the run was not
    // cancelled meanwhile (the last chance: once published, the run has succeeded).
    checkpoint.check_unchanged()?;
    if cancel.load(Ordering::Relaxed) {
        return Err(Error::Cancelled);
    }
    let Output { writer, quantized_tensors, .. } = output;
    let written = writer.finish()?;
    seconds.write += clock.elapsed().as_secs_f64();
    seconds.total = started.elapsed().as_secs_f64();
    Ok(QuantizeReport {
        layers: layer_errors,
        calibration: summary,
        quantized_tensors,
        files: written.files,
        peak_rss_bytes: crate::memory::peak_rss_bytes(),
        seconds,
    })
}
