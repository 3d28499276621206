//! Quantize: calibrate a checkpoint layer by layer, quantize each layer as soon as its statistics are complete
//! (its input maxima are then final) and write the output, which appears only when complete. Weight-only
//! formats need no calibration: their layers are quantized straight from the checkpoint, without a forward. The work is laid
//! out by the export plan (`export::plan`), declared up front (`export::layout`), done by the quantizer
//! (`export::quantizer`) and the output (`export::output`), and scheduled by the layer pipeline
//! ([`super::pipeline`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use super::calibrate::CalibrationRequest;
use super::pipeline::{LayerPipeline, Progress, Stage};
use crate::checkpoint::{Checkpoint, CheckpointWriter, WriteSummary, WriterOptions};
use crate::device::ComputeDevice;
use crate::error::{Error, Result};
use crate::export::layout::output_layout;
use crate::export::output::Output;
use crate::export::plan::ExportPlan;
use crate::export::quantizer::{ErrorSum, Quantizer};
use crate::export::resident::ResidentQuantizer;
use crate::export::FormatSet;
use crate::model::layers::{self, AwqPlan, LayerStream};
use crate::model::loader::ExpertWeights;
use crate::model::observe::Observers;
use crate::model::profile;
use crate::model::ModelDescriptor;
use crate::threads::lock;

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
    /// Calibration batch runs of the next layer done, of `batches` (`batches` once a layer is done): each batch once,
    /// or twice with an AWQ format (its statistics, then its search).
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
    /// Parts of `calibrate`: loading each layer (reading, converting, copying to the device), the forward, and
    /// quantizing the experts on the device while they are resident.
    pub load: f64,
    pub forward: f64,
    pub quantize_on_device: f64,
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

/// Extra files for the output, made from the calibration summary (`None` for a weight-only format): relative
/// name → bytes.
pub type ExtraFiles<'a> = dyn FnMut(Option<&CalibrationSummary>) -> Result<Vec<(String, Vec<u8>)>> + 'a;

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
    /// What calibration recorded; `None` for a weight-only format, which runs no calibration.
    pub calibration: Option<CalibrationSummary>,
    pub quantized_tensors: usize,
    /// Of those, the weights quantized on the GPU while the calibration forward held them (the others were
    /// quantized on the CPU).
    pub quantized_on_device: usize,
    /// Output files and their sizes.
    pub files: BTreeMap<String, u64>,
    pub peak_rss_bytes: Option<u64>,
    pub seconds: StageSeconds,
}

/// What a layer job hands back once its tensors are queued for writing.
struct LayerDone {
    layer: usize,
    errors: ErrorSum,
    bytes_written: u64,
}

/// What a calibrated format needs: the forward's descriptor and the calibration data.
pub struct Calibration<'a> {
    pub desc: &'a ModelDescriptor,
    pub request: &'a CalibrationRequest,
    /// On a GPU, quantize the routed experts there while the forward holds them, where the format and the
    /// weights allow (`export::resident`); the same bytes as quantizing them on the CPU, which `false` forces.
    pub quantize_on_device: bool,
}

/// Quantizes the checkpoint in `dir` as `plan` says and writes it to `target`: calibrated (`calibration`
/// given, required when a format of the plan is calibrated; a run asked to calibrate whose recipe left only
/// weight-only formats still runs its forward, which its plan was made with) or weight-only (`None`).
pub fn quantize_checkpoint(
    dir: &Path,
    target: &Path,
    plan: &ExportPlan,
    calibration: Option<Calibration<'_>>,
    control: RunControl<'_>,
) -> Result<QuantizeReport> {
    let formats = FormatSet::new(plan, false);
    let calibrated = formats.calibrated();
    match calibration {
        Some(calibration) => quantize_calibrated(dir, target, plan, &calibration, None, control),
        None if !calibrated => quantize_weights(dir, target, plan, control),
        None => Err(Error::internal(format!("{} needs calibration", formats.names()))),
    }
}

/// As [`quantize_checkpoint`] with calibration, on `devices` already opened instead of the request's `device` or
/// `devices` (which are not read). Unlike the request's list, `devices` may name one GPU more than once: its shares
/// then run on that GPU from separate threads, which tests the split on a machine with one GPU.
pub fn quantize_checkpoint_on(
    dir: &Path,
    target: &Path,
    plan: &ExportPlan,
    calibration: Calibration<'_>,
    devices: &[ComputeDevice],
    control: RunControl<'_>,
) -> Result<QuantizeReport> {
    if devices.is_empty() {
        return Err(Error::CalibrationOptions { message: "devices: the list is empty".into() });
    }
    quantize_calibrated(dir, target, plan, &calibration, Some(devices), control)
}

/// What the calibration's AWQ search covers: the plan's linears and routed experts in an AWQ format.
fn awq_plan(checkpoint: &Checkpoint, plan: &ExportPlan, formats: &FormatSet) -> Result<Option<AwqPlan>> {
    let Some(quantizer) = formats.awq() else { return Ok(None) };
    let awq = |format: &dyn crate::formats::QuantFormat| format.awq().is_some();
    let linears: Vec<&str> =
        plan.linears.iter().filter(|l| awq(formats.linear(l))).map(|l| l.module.as_str()).collect();
    let experts: Vec<&crate::export::plan::ExpertPlan> =
        plan.experts.iter().filter(|x| awq(formats.experts(x))).collect();
    // The weights' stored dtype (ModelOpt's search rounds in the model's).
    let first = linears.first().map(|m| format!("{m}.weight"));
    let first = first.or_else(|| experts.first().map(|x| crate::model::descriptor::expert_name(&x.source.down, 0)));
    let dtype = match first {
        Some(name) => checkpoint.info(&name)?.dtype,
        None => return Ok(None),
    };
    Ok(Some(AwqPlan {
        quantizer,
        dtype,
        modules: linears.into_iter().map(str::to_string).collect(),
        blocks: experts.iter().map(|x| x.block.clone()).collect(),
    }))
}

/// The output's writer with every tensor of the plan declared.
fn create_output<'a>(
    dir: &Path,
    target: &Path,
    checkpoint: &Checkpoint,
    plan: &ExportPlan,
    quantizer: &Quantizer<'_>,
    bytes_written: &'a AtomicU64,
) -> Result<Mutex<Output<'a>>> {
    let options =
        WriterOptions { max_shard_bytes: plan.max_shard_bytes, overwrite: plan.overwrite, input_dir: Some(dir.into()) };
    let mut writer = CheckpointWriter::create(target, options)?;
    // Declared up front, every tensor is written straight to its place in its shard as soon as it exists.
    writer.declare(&output_layout(checkpoint, plan, quantizer.formats())?)?;
    Ok(Mutex::new(Output::new(writer, bytes_written, plan.encoding)))
}

/// Adds the metadata and extra files and publishes the output once the input is known unchanged.
fn finish_output(
    dir: &Path,
    checkpoint: &Checkpoint,
    plan: &ExportPlan,
    output: Mutex<Output<'_>>,
    pipeline: &LayerPipeline<'_>,
    extra: Vec<(String, Vec<u8>)>,
) -> Result<(usize, WriteSummary)> {
    let mut output = output.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
    output.add_files(dir, plan, extra)?;
    // Everything was read: publish only if the input stayed the same throughout.
    checkpoint.check_unchanged()?;
    let quantized_tensors = output.quantized_tensors;
    let written = pipeline.publish(|| output.writer.finish())?;
    Ok((quantized_tensors, written))
}

/// Starts the disk on the embedding and the first layers, then opens `devices` or the request's (the checkpoint's
/// drop stops this read when the run ends early).
fn open_devices(
    checkpoint: &Checkpoint,
    calibration: &Calibration<'_>,
    devices: Option<&[ComputeDevice]>,
) -> Result<Vec<ComputeDevice>> {
    let sequences = &calibration.request.sequences;
    let gpu = match devices {
        Some(devices) => devices.first().is_some_and(|d| d.device.is_cuda()),
        None => sequences.names_gpu(),
    };
    layers::read_ahead_first(checkpoint, calibration.desc, gpu);
    profile::section(&candle_core::Device::Cpu, "start: open the devices", || match devices {
        Some(devices) => Ok(devices.to_vec()),
        None => sequences.compute_devices(),
    })
}

/// The calibrated run: calibration layer by layer, each layer quantized once its statistics are final; on
/// `devices`, or those the request names (opened once the disk has started on the first layer).
fn quantize_calibrated(
    dir: &Path,
    target: &Path,
    plan: &ExportPlan,
    calibration: &Calibration<'_>,
    devices: Option<&[ComputeDevice]>,
    control: RunControl<'_>,
) -> Result<QuantizeReport> {
    let RunControl { cancel, progress, extra_files } = control;
    let Calibration { desc, request, quantize_on_device } = *calibration;
    let started = Instant::now();
    let checkpoint = Checkpoint::open(dir)?;
    // With several devices they split the batches, and the experts quantized while resident.
    let devices = open_devices(&checkpoint, calibration, devices)?;
    let compute = &devices[0];
    // Same bytes as ModelOpt running on the same kind of device (their FP8 arithmetic differs, see `Fp8`).
    let quantizer = Quantizer::new(&checkpoint, FormatSet::new(plan, compute.device.is_cuda()));
    let set = request.sequences.load(dir, desc.vocab_size, cancel)?;
    let bytes_written = AtomicU64::new(0);
    let output = create_output(dir, target, &checkpoint, plan, &quantizer, &bytes_written)?;
    let resident = (quantize_on_device && compute.device.is_cuda())
        .then(|| ResidentQuantizer::new(&checkpoint, plan, quantizer.formats()))
        .flatten();
    let hook = |layer, blocks: &[Vec<(&str, &[ExpertWeights])>], observers: &Observers| match &resident {
        Some(resident) => resident.quantize_layer(layer, blocks, observers),
        None => Ok(()),
    };
    // The embedding read for the calibration's lookup stays in the read-ahead for the copy of the kept tensors, which
    // then takes it from there instead of reading it again (several devices share it among themselves too; shares
    // are counted, so their release leaves it to the copy).
    let embed = [desc.embed.as_str()];
    let copy_shares: &[&str] = if plan.keep.iter().any(|kept| kept.reads(&desc.embed)) { &embed } else { &[] };
    checkpoint.share_read_ahead(copy_shares);
    let mut stream = LayerStream::new(&checkpoint, desc, &set.batches, request.all_experts, &devices)?;
    if resident.is_some() {
        stream.on_resident(&hook);
    }
    if let Some(awq) = awq_plan(&checkpoint, plan, quantizer.formats())? {
        stream.search_awq(awq);
    }
    let pipeline = LayerPipeline::new(cancel);
    let event =
        Event { layers: stream.layers(), tokens: stream.tokens, batches: stream.batch_runs(), bytes: &bytes_written };
    let jobs = Jobs { pipeline: &pipeline, quantizer: &quantizer, output: &output, plan, resident: resident.as_ref() };
    let layer_errors = jobs.run(&mut stream, &event, copy_shares, progress)?;

    let clock = Instant::now();
    progress(event.at(QuantizeStage::Write, event.layers, event.batches));
    let summary = CalibrationSummary {
        observers: std::mem::take(&mut stream.observers),
        samples: set.sample_count(),
        requested_samples: set.requested_samples,
        seq_len: request.sequences.seq_len,
        tokens: stream.tokens,
    };
    let extra = match extra_files {
        Some(extra_files) => extra_files(Some(&summary))?,
        None => Vec::new(),
    };
    let (quantized_tensors, written) = finish_output(dir, &checkpoint, plan, output, &pipeline, extra)?;
    let (calibrate, quantize, write) = pipeline.clock.seconds();
    let seconds = StageSeconds {
        calibrate,
        load: stream.load_seconds,
        forward: stream.forward_seconds,
        quantize_on_device: stream.resident_seconds,
        quantize,
        write: write + clock.elapsed().as_secs_f64(),
        total: started.elapsed().as_secs_f64(),
    };
    Ok(QuantizeReport {
        layers: layer_errors,
        calibration: Some(summary),
        quantized_tensors,
        quantized_on_device: resident.map_or(0, |resident| resident.tensors.into_inner()),
        files: written.files,
        peak_rss_bytes: crate::memory::peak_rss_bytes(),
        seconds,
    })
}

/// The weight-only run: no forward; each layer's weights are read, quantized (experts spread over the CPU's
/// cores) and written in layer order.
fn quantize_weights(dir: &Path, target: &Path, plan: &ExportPlan, control: RunControl<'_>) -> Result<QuantizeReport> {
    let RunControl { cancel, progress, extra_files } = control;
    let started = Instant::now();
    let checkpoint = Checkpoint::open(dir)?;
    // Weight-only formats divide in f32 (per-row and per-block divisors): the same bytes on every device.
    let quantizer = Quantizer::new(&checkpoint, FormatSet::new(plan, false));
    let bytes_written = AtomicU64::new(0);
    let output = create_output(dir, target, &checkpoint, plan, &quantizer, &bytes_written)?;
    let pipeline = LayerPipeline::new(cancel);
    let layers = plan.layers();
    let event = Event { layers: layers.len(), tokens: 0, batches: 0, bytes: &bytes_written };
    let jobs = Jobs { pipeline: &pipeline, quantizer: &quantizer, output: &output, plan, resident: None };
    jobs.copy_kept(&[])?;
    let mut layer_errors = Vec::with_capacity(layers.len());
    for (done, &layer) in layers.iter().enumerate() {
        pipeline.cancelled()?;
        let result = jobs.layer(layer, None).map_err(|error| pipeline.reported(error))?;
        let relative_mse = result.errors.relative_mse();
        layer_errors.push(LayerError { layer, tensors: result.errors.tensors, relative_mse });
        let at = event.at(QuantizeStage::Quantize, done + 1, 0);
        progress(QuantizeProgress { bytes_written: result.bytes_written, ..at });
    }
    let clock = Instant::now();
    progress(event.at(QuantizeStage::Write, event.layers, 0));
    let extra = match extra_files {
        Some(extra_files) => extra_files(None)?,
        None => Vec::new(),
    };
    let (quantized_tensors, written) = finish_output(dir, &checkpoint, plan, output, &pipeline, extra)?;
    let (_, quantize, write) = pipeline.clock.seconds();
    let seconds = StageSeconds {
        quantize,
        write: write + clock.elapsed().as_secs_f64(),
        total: started.elapsed().as_secs_f64(),
        ..StageSeconds::default()
    };
    Ok(QuantizeReport {
        layers: layer_errors,
        calibration: None,
        quantized_tensors,
        quantized_on_device: 0,
        files: written.files,
        peak_rss_bytes: crate::memory::peak_rss_bytes(),
        seconds,
    })
}

/// The numbers every progress event of one run shares.
struct Event<'a> {
    layers: usize,
    tokens: usize,
    batches: usize,
    bytes: &'a AtomicU64,
}

impl Event<'_> {
    fn at(&self, stage: QuantizeStage, layer: usize, batch: usize) -> QuantizeProgress {
        QuantizeProgress {
            stage,
            layer,
            layers: self.layers,
            tokens: self.tokens,
            batch,
            batches: self.batches,
            bytes_written: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// What the layer jobs of one run share.
struct Jobs<'a, 'o> {
    pipeline: &'a LayerPipeline<'a>,
    quantizer: &'a Quantizer<'a>,
    output: &'a Mutex<Output<'o>>,
    plan: &'a ExportPlan,
    /// The experts quantized on the device as their layers were loaded, when that runs.
    resident: Option<&'a ResidentQuantizer<'a>>,
}

impl Jobs<'_, '_> {
    /// The tensors kept as they are, copied while layer 0 calibrates (`shared`: see [`Output::copy_kept`]).
    fn copy_kept(&self, shared: &[&str]) -> Result<()> {
        let mut output = lock(self.output);
        self.pipeline.clock.time(Stage::Write, || output.copy_kept(self.quantizer.checkpoint(), self.plan, shared))
    }

    /// Layer `layer` quantized (with its calibration statistics, if any) and written, while the next layers
    /// calibrate; each quantized weight is queued as soon as it exists, and tensors go to their declared places in
    /// whatever order they come.
    fn layer(&self, layer: usize, observers: Option<&Observers>) -> Result<LayerDone> {
        let pipeline = self.pipeline;
        let clock = Instant::now();
        let mut writing = 0.0;
        let mut sink = |linear| {
            let clock = Instant::now();
            let queued = lock(self.output).queue(linear);
            writing += clock.elapsed().as_secs_f64();
            pipeline.record(queued)
        };
        let quantized = self.quantizer.quantize_layer(layer, self.plan, observers, self.resident, &mut sink);
        let quantized = pipeline.record(quantized)?;
        let mut output = lock(self.output);
        for (name, value) in &quantized.scales {
            pipeline.record(output.queue_scalar(name, *value))?;
        }
        let total = clock.elapsed().as_secs_f64();
        pipeline.clock.add(Stage::Quantize, total - writing);
        pipeline.clock.add(Stage::Write, writing);
        let bytes_written = output.bytes_written.load(Ordering::Relaxed);
        Ok(LayerDone { layer: quantized.layer, errors: quantized.errors, bytes_written })
    }

    /// Calibrates every layer, quantizing and writing each in a background job, while the kept tensors are copied
    /// (taking the tensors `shared` from the read-ahead, which then lets them go); returns the layers' errors.
    fn run(
        &self,
        stream: &mut LayerStream<'_>,
        event: &Event<'_>,
        shared: &[&str],
        progress: &mut dyn FnMut(QuantizeProgress),
    ) -> Result<Vec<LayerError>> {
        let mut errors = Vec::with_capacity(event.layers);
        let job = |layer, observers: Observers| self.layer(layer, Some(&observers));
        self.pipeline.run(stream, || self.copy_kept(shared), &job, &mut |step| {
            match step {
                Progress::Batch { layer, batch } => progress(event.at(QuantizeStage::Calibrate, layer, batch)),
                Progress::Calibrated { layer } => {
                    progress(event.at(QuantizeStage::Calibrate, layer + 1, event.batches))
                }
                Progress::Done(done) => {
                    let relative_mse = done.errors.relative_mse();
                    errors.push(LayerError { layer: done.layer, tensors: done.errors.tensors, relative_mse });
                    let at = event.at(QuantizeStage::Quantize, done.layer + 1, event.batches);
                    progress(QuantizeProgress { bytes_written: done.bytes_written, ..at });
                }
            }
            Ok(())
        })?;
        Ok(errors)
    }
}
