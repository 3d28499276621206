//! The layer-by-layer driver: embed the calibration batches, then for each decoder layer load its weights,
//! run every batch through it while observers record, and free it before the next; only one layer's
//! weights are resident at a time. Optionally finishes with the final norm and lm_head for logits.
//! [`LayerStream`] exposes the steps so that export can quantize and write each layer as soon as it ran.
//!
//! Every batch's embedding and every layer's output are checked to be finite (one reduction each): a NaN or
//! an infinity would otherwise end as a meaningless scale. The first batch found not finite stops the run
//! with an error naming the layer and the first weight or activation that is not finite.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::Tensor;
use serde::Serialize;

use super::blocks::norm::NormStyle;
use super::blocks::rope::Rope;
use super::decoder::DecoderLayer;
use super::descriptor::{AttentionDescriptor, LayerDescriptor, ModelDescriptor};
use super::loader::ExpertWeights;
use crate::calib::data::Batch;
use crate::checkpoint::Checkpoint;
use crate::device::ComputeDevice;
use crate::error::{Error, Result};
use crate::model::observe::Observers;
use crate::model::profile;
use crate::model::stage::Staging;

mod awq;
mod head;
mod shard;
pub use awq::AwqPlan;
use shard::{on_shards, Progress, Shard, ShardRun};

#[derive(Debug, Clone, Default)]
pub struct ForwardOptions {
    /// Compute and return the logits `[rows, seq_len, vocab]` of every batch.
    pub logits: bool,
    /// Route every token through every expert for statistics (outputs unchanged).
    pub all_experts_stats: bool,
    /// Where the forward runs: one device, or several that split the batches (CPU f32 when empty).
    pub devices: Vec<ComputeDevice>,
    /// Load each layer when its turn comes instead of copying it to the GPUs while the one before computes
    /// (`model::stage`): the same bits, which tests check.
    pub load_in_turn: bool,
}

/// Progress of the forward: `layer` of `layers` done, and `batch` of `batches` of the next one (`batches`
/// of `batches` when a layer has just finished).
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
pub struct ForwardProgress {
    pub layer: usize,
    pub layers: usize,
    pub tokens: usize,
    pub batch: usize,
    pub batches: usize,
}

/// Lets an event through at most once per interval (the first at once): progress within a layer.
pub struct Throttle {
    every: std::time::Duration,
    last: Option<Instant>,
}

impl Throttle {
    /// Progress within a layer is reported at most this often.
    pub const WITHIN_LAYER: std::time::Duration = std::time::Duration::from_millis(250);

    pub fn new(every: std::time::Duration) -> Self {
        Throttle { every, last: None }
    }

    /// Whether an event may go out now (and, if so, starts the next interval).
    pub fn ready(&mut self) -> bool {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.duration_since(last) < self.every) {
            return false;
        }
        self.last = Some(now);
        true
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ForwardResult {
    /// Logits of each batch, row-major `[rows, seq_len, vocab]`, when asked for.
    #[serde(skip)]
    pub logits: Vec<Vec<f32>>,
    pub observers: Observers,
    pub tokens: usize,
    pub peak_rss_bytes: Option<u64>,
    pub seconds: f64,
    /// Layers copied to every GPU while the layer before them computed (see `model::stage`).
    pub staged_layers: usize,
}

/// The calibration batches' hidden states moving through the decoder one layer at a time, on one device or split
/// over several (data parallel, see [`shard`]).
pub struct LayerStream<'a> {
    checkpoint: &'a Checkpoint,
    desc: &'a ModelDescriptor,
    /// Each device's share of the batches, in batch order (the first device's also records what only one device
    /// does: the weight maxima).
    shards: Vec<Shard<'a>>,
    all_experts_stats: bool,
    next_layer: usize,
    pub observers: Observers,
    /// Tokens per layer (all batches).
    pub tokens: usize,
    /// Seconds spent loading layers (waiting for their bytes, converting, copying to the device) and running
    /// the batches through them.
    pub load_seconds: f64,
    pub forward_seconds: f64,
    /// Layers that arrived already copied to every GPU (see `model::stage`).
    pub staged_layers: usize,
    /// Called for each layer once its weights are resident and their maxima recorded, before the batches run.
    resident: Option<&'a ResidentHook<'a>>,
    /// Seconds spent in that call.
    pub resident_seconds: f64,
    /// The AWQ search, when the plan has AWQ formats.
    awq: Option<AwqPlan>,
    /// On each GPU, the next layer copied to it while this one computes.
    staging: Staging,
}

/// What a layer's resident weights are handed to (see [`LayerStream::on_resident`]): the layer's position, each
/// MoE block's name and routed experts as the forward holds them on each device (one entry per device), and the
/// observers (the weight maxima of this layer recorded).
pub type ResidentHook<'h> = dyn Fn(usize, &[Vec<(&str, &[ExpertWeights])>], &Observers) -> Result<()> + Sync + 'h;

impl<'a> LayerStream<'a> {
    /// Checks the batches and embeds them: on `devices`' one device, or split over several in order (data parallel:
    /// each device runs its share through its own copy of every layer).
    pub fn new(
        checkpoint: &'a Checkpoint,
        desc: &'a ModelDescriptor,
        batches: &[Batch],
        all_experts_stats: bool,
        devices: &[ComputeDevice],
    ) -> Result<Self> {
        if devices.is_empty() {
            return Err(Error::internal("a layer stream on no device"));
        }
        // The embedding and the first layer (on a GPU the first two) are read from disk while the batches are
        // checked (a run started this read before it opened its device; it then goes on).
        read_ahead_first(checkpoint, desc, devices[0].device.is_cuda());
        for (i, batch) in batches.iter().enumerate() {
            if batch.ids.len() != batch.rows * batch.seq_len {
                return Err(Error::internal(format!(
                    "batch {i}: {} ids for {}×{}",
                    batch.ids.len(),
                    batch.rows,
                    batch.seq_len
                )));
            }
            if let Some(&bad) = batch.ids.iter().find(|&&id| id as usize >= desc.vocab_size) {
                return Err(Error::internal(format!(
                    "batch {i}: token id {bad} is outside the vocabulary of {}",
                    desc.vocab_size
                )));
            }
        }
        let max_len = batches.iter().map(|b| b.seq_len).max().unwrap_or(0);
        let shares = shard::split(batches.len(), devices.len());
        // Several devices embed from one read of the embedding.
        let (embed, several) = ([desc.embed.as_str()], shares.len() > 1);
        if several {
            checkpoint.share_read_ahead(&embed);
        }
        let shards = profile::section(&devices[0].device, "embedding (wait for the disk, upload, look up)", || {
            shares
                .into_iter()
                .zip(devices)
                .map(|(share, compute)| {
                    Shard::new(checkpoint, desc, &batches[share.clone()], share.start, compute, max_len)
                })
                .collect::<Result<Vec<_>>>()
        });
        if several {
            checkpoint.release_read_ahead(&embed);
        }
        Ok(LayerStream {
            checkpoint,
            desc,
            shards: shards?,
            all_experts_stats,
            next_layer: 0,
            observers: Observers::default(),
            tokens: batches.iter().map(|b| b.rows * b.seq_len).sum(),
            load_seconds: 0.0,
            forward_seconds: 0.0,
            staged_layers: 0,
            resident: None,
            resident_seconds: 0.0,
            awq: None,
            staging: Staging::new(devices.iter().map(|d| &d.device)),
        })
    }

    /// Hands each layer's resident weights to `hook` from the next layer on: once the layer is loaded and its
    /// weight maxima recorded, before its batches run (an error stops the run).
    pub fn on_resident(&mut self, hook: &'a ResidentHook<'a>) {
        self.resident = Some(hook);
    }

    /// Whether a layer's experts are handed to a resident hook (and so quantized) as the layer loads.
    pub fn quantizes_resident(&self) -> bool {
        self.resident.is_some()
    }

    /// The eps and weight offset of the model's RMSNorms.
    fn norm_style(&self) -> NormStyle {
        NormStyle {
            eps: self.desc.rms_norm_eps,
            offset: self.desc.rms_norm_offset,
            kind: self.desc.norm,
            f32_weight: self.desc.rms_norm_f32_weight,
        }
    }

    /// Number of decoder layers.
    pub fn layers(&self) -> usize {
        self.desc.layers.len()
    }

    /// Number of calibration batches (run through each layer in turn).
    pub fn batches(&self) -> usize {
        self.shards.iter().map(|shard| shard.hidden.len()).sum()
    }

    /// The first device, which records the weight maxima (the resident hook gets every device's copy).
    fn device(&self) -> &candle_core::Device {
        &self.shards[0].loader.device
    }

    /// Batch runs per layer, what [`Self::step`]'s progress counts: each batch once, or twice with an AWQ search
    /// (its statistics, then its search).
    pub fn batch_runs(&self) -> usize {
        self.batches() * if self.awq.is_some() { 2 } else { 1 }
    }

    /// Loads the next layer, runs every batch through it, frees it; returns its index (None when done).
    /// `on_batch(done)` follows the batch runs within the layer, of [`Self::batch_runs`] (not called after the last:
    /// the layer is done).
    pub fn step(&mut self, on_batch: &mut dyn FnMut(usize)) -> Result<Option<usize>> {
        let Some(layer_desc) = self.desc.layers.get(self.next_layer) else { return Ok(None) };
        let device = self.device().clone();
        let clock = Instant::now();
        let section = match self.next_layer {
            0 => "first layer's weights (wait for the disk, upload)",
            _ => "layer weights (wait for the disk, upload)",
        };
        let layers = profile::section(&device, section, || self.load_layer())?;
        self.load_seconds += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        profile::section(&device, "weight maxima", || layers[0].observe_weights(&mut self.observers))?;
        self.forward_seconds += clock.elapsed().as_secs_f64();
        if let Some(hook) = self.resident {
            let clock = Instant::now();
            profile::section(&device, "quantization of the resident experts", || {
                let blocks: Vec<_> = layers.iter().map(DecoderLayer::routed_experts).collect();
                hook(self.next_layer, &blocks, &self.observers)
            })?;
            self.resident_seconds += clock.elapsed().as_secs_f64();
        }
        let clock = Instant::now();
        let searches = self.awq_searches()?;
        let awq_inputs = searches[0]
            .is_some()
            .then(|| self.shards.iter().map(|shard| (shard.hidden.clone(), shard.chosen.clone())).collect::<Vec<_>>());
        let total = self.batch_runs();
        let mut progress = Progress { on_batch, offset: 0, total };
        let inputs = layers.iter().zip(searches).collect();
        let runs = on_shards(
            &mut self.shards,
            inputs,
            |shard, (layer, awq), tick| shard.run(layer, layer_desc, awq, tick),
            &mut progress,
        )?;
        self.observers.awq = None;
        for (i, run) in runs.into_iter().enumerate() {
            match run {
                ShardRun::Done(observers) => self.observers.merge(*observers)?,
                ShardRun::NonFinite { batch, input } => return Err(self.non_finite(i, &layers[i], batch, &input)),
            }
        }
        if let Some(inputs) = awq_inputs {
            // The search's runs follow the statistics', in the same count.
            progress.offset = self.batches();
            profile::section(&device, "AWQ search", || self.awq_search_pass(&layers, inputs, &mut progress))?;
        }
        if let Some(module) = self.observers.first_infinite() {
            return Err(Error::ActivationNonFinite {
                location: format!("decoder layer {}", layer_desc.index),
                tensor: format!("the input of {module}"),
                detail: "its recorded maximum is infinite".into(),
            });
        }
        self.forward_seconds += clock.elapsed().as_secs_f64();
        self.next_layer += 1;
        Ok(Some(self.next_layer - 1))
    }

    /// The next layer on every device. The layer after it is read from disk while this one computes. On a GPU its
    /// read is queued before this one loads, so the disk goes on while this layer is copied to the device (whose
    /// host bytes are then gone: two layers' bytes at most). On the CPU the loaded layer lives in host memory, so
    /// the next one is read only once this one is loaded. Several devices load from one read of the layer, and each
    /// GPU copies the next one from one read of it while this one computes (`model::stage`).
    fn load_layer(&mut self) -> Result<Vec<DecoderLayer>> {
        let (checkpoint, desc, all_experts) = (self.checkpoint, self.desc, self.all_experts_stats);
        let layer_desc = &desc.layers[self.next_layer];
        let this = layer_prefix(desc, self.next_layer);
        let next = layer_prefix(desc, self.next_layer + 1);
        let early = self.device().is_cuda();
        if let (true, Some(next)) = (early, next) {
            checkpoint.prefetch_next(&[next]);
        }
        let several = self.shards.len() > 1;
        if let (true, Some(this)) = (several, this) {
            checkpoint.share_read_ahead(&[this]);
        }
        let norm = self.norm_style();
        let staged = self.staging.take();
        self.staged_layers += usize::from(staged.iter().all(Option::is_some));
        for (shard, staged) in self.shards.iter_mut().zip(staged) {
            shard.loader.staged = staged;
        }
        let mut quiet = |_| {};
        let mut progress = Progress { on_batch: &mut quiet, offset: 0, total: 0 };
        let inputs = vec![(); self.shards.len()];
        let layers = on_shards(
            &mut self.shards,
            inputs,
            |shard, (), _| {
                let rope = shard.rope(layer_desc)?.is_some();
                DecoderLayer::load(&shard.loader, layer_desc, norm, rope, all_experts)
            },
            &mut progress,
        );
        // What the layer left untaken (fused tensors its slices were cut from) is of no more use; nor, once every
        // device has its copy, are the shared bytes.
        for shard in &mut self.shards {
            shard.loader.staged = None;
        }
        if let Some(this) = this {
            checkpoint.release_read_ahead(&[this]);
        }
        if let (false, Some(next)) = (early, next) {
            checkpoint.prefetch_next(&[next]);
        }
        if let (Ok(_), Some(next)) = (&layers, next) {
            self.staging.start(checkpoint, next);
        }
        layers
    }

    /// The error for shard `shard`'s batch `batch` whose output of `layer` (the next one, that device's copy) is not
    /// finite, `xs` being its input: a weight of the layer that is not finite if there is one (the likeliest cause),
    /// else the first activation found not finite when the batch runs through the layer again.
    fn non_finite(&self, shard: usize, layer: &DecoderLayer, batch: usize, xs: &Tensor) -> Error {
        let index = self.desc.layers[self.next_layer].index;
        let location = format!("decoder layer {index}");
        match layer_prefix(self.desc, self.next_layer).map(|prefix| first_non_finite_weight(self.checkpoint, prefix)) {
            Some(Ok(Some((tensor, element)))) => {
                return Error::NonFinite {
                    tensor,
                    index: element,
                    context: ", and the calibration activations of its layer are no longer finite".into(),
                }
            }
            Some(Err(error)) => return error,
            _ => {}
        }
        let shard = &self.shards[shard];
        let mut trace = Observers::tracing();
        let mut chosen = shard.chosen[batch].clone();
        let rope = match shard.rope(&self.desc.layers[self.next_layer]) {
            Ok(rope) => rope,
            Err(error) => return error,
        };
        if let Err(error) = layer.forward(xs, rope, &mut chosen, &mut trace) {
            return error;
        }
        let tensor = trace.first_non_finite().map_or_else(|| format!("the output of {location}"), str::to_string);
        Error::ActivationNonFinite { location, tensor, detail: format!("calibration batch {}", shard.first + batch) }
    }
}

/// The rope a layer rotates with: its layer type's own (from `layer_ropes`), or the model's.
fn layer_rope<'r>(
    rope: &'r Option<Rope>,
    layer_ropes: &'r BTreeMap<String, Rope>,
    layer: &LayerDescriptor,
) -> Result<Option<&'r Rope>> {
    let kind = match &layer.attention {
        Some(AttentionDescriptor::Gqa(gqa)) => gqa.rope_layer_type.as_ref(),
        _ => None,
    };
    match kind {
        None => Ok(rope.as_ref()),
        Some(kind) => layer_ropes.get(kind).map(Some).ok_or_else(|| {
            Error::internal(format!("decoder layer {}: no rope for the layer type {kind}", layer.index))
        }),
    }
}

/// The first element of a floating-point tensor named `prefix…` that is NaN or infinite, as (tensor, index).
fn first_non_finite_weight(checkpoint: &Checkpoint, prefix: &str) -> Result<Option<(String, usize)>> {
    for info in checkpoint.tensors().iter().filter(|t| t.name.starts_with(prefix) && t.dtype.is_float()) {
        if let Some(index) = checkpoint.read(&info.name)?.to_f32().iter().position(|x| !x.is_finite()) {
            return Ok(Some((info.name.clone(), index)));
        }
    }
    Ok(None)
}

/// The error for a batch whose embeddings are not finite: the embedding's first element that is NaN or
/// infinite in a row the batch uses, or (finite rows overflowing the embedding multiplier) the embedding
/// itself.
fn non_finite_embedding(checkpoint: &Checkpoint, desc: &ModelDescriptor, batch: &Batch) -> Result<Error> {
    let embed = checkpoint.read(&desc.embed)?.to_f32();
    let hidden = desc.hidden_size;
    for &id in &batch.ids {
        let row = id as usize * hidden;
        if let Some(column) = embed.get(row..row + hidden).and_then(|r| r.iter().position(|x| !x.is_finite())) {
            return Ok(Error::NonFinite {
                tensor: desc.embed.clone(),
                index: row + column,
                context: format!(" (the embedding of token {id}, which the calibration data uses)"),
            });
        }
    }
    Ok(Error::ActivationNonFinite {
        location: "the embedding".into(),
        tensor: format!("the embeddings of the calibration tokens ({} × {})", desc.embed, desc.embedding_multiplier),
        detail: "the embedding multiplier overflows".into(),
    })
}

/// Starts reading what calibration needs first, the embedding and decoder layer 0, in the background; on a GPU
/// (`gpu`) decoder layer 1 too, which [`LayerStream::load_layer`] asks for before layer 0 loads: the disk goes on
/// with it while the device starts, instead of waiting for layer 0's load. A run calls this as soon as the
/// checkpoint is open; [`LayerStream::new`] asks for the same read, which then goes on.
pub fn read_ahead_first(checkpoint: &Checkpoint, desc: &ModelDescriptor, gpu: bool) {
    let mut prefixes = vec![desc.embed.as_str()];
    prefixes.extend(layer_prefix(desc, 0));
    if gpu {
        prefixes.extend(layer_prefix(desc, 1));
    }
    checkpoint.prefetch(&prefixes);
}

/// `…layers.<i>.`: the name prefix of decoder layer `index`'s tensors.
fn layer_prefix(desc: &ModelDescriptor, index: usize) -> Option<&str> {
    let layer = desc.layers.get(index)?;
    let marker = format!("layers.{}.", layer.index);
    let at = layer.input_norm.find(&marker)?;
    Some(&layer.input_norm[..at + marker.len()])
}

/// Runs the model over `batches`, one layer at a time.
pub fn run_forward(
    checkpoint: &Checkpoint,
    desc: &ModelDescriptor,
    batches: &[Batch],
    options: &ForwardOptions,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(ForwardProgress),
) -> Result<ForwardResult> {
    let started = Instant::now();
    let devices = if options.devices.is_empty() { vec![ComputeDevice::cpu()] } else { options.devices.clone() };
    let mut stream = LayerStream::new(checkpoint, desc, batches, options.all_experts_stats, &devices)?;
    if options.load_in_turn {
        stream.staging.stop();
    }
    let (layers, batches, tokens) = (stream.layers(), stream.batches(), stream.tokens);
    let mut throttle = Throttle::new(Throttle::WITHIN_LAYER);
    for layer in 0.. {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        let mut within = |batch| {
            if throttle.ready() {
                progress(ForwardProgress { layer, layers, tokens, batch, batches });
            }
        };
        let Some(done) = stream.step(&mut within)? else { break };
        progress(ForwardProgress { layer: done + 1, layers, tokens, batch: batches, batches });
    }
    let logits = if options.logits { stream.logits()? } else { Vec::new() };
    Ok(ForwardResult {
        logits,
        tokens: stream.tokens,
        observers: stream.observers,
        peak_rss_bytes: crate::memory::peak_rss_bytes(),
        seconds: started.elapsed().as_secs_f64(),
        staged_layers: stream.staged_layers,
    })
}
