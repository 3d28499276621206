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

use candle_core::{DType, Tensor};
use serde::Serialize;

use super::blocks::key_selection::ChosenKeys;
use super::blocks::linear::Linear;
use super::blocks::norm::NormStyle;
use super::blocks::ops::all_finite;
use super::blocks::rope::Rope;
use super::decoder::DecoderLayer;
use super::descriptor::{AttentionDescriptor, LayerDescriptor, ModelDescriptor};
use super::loader::{ExpertWeights, WeightLoader};
use crate::calib::data::Batch;
use crate::checkpoint::Checkpoint;
use crate::device::ComputeDevice;
use crate::error::{Error, Result};
use crate::model::observe::Observers;
use crate::model::profile;

mod awq;
pub use awq::AwqPlan;

#[derive(Debug, Clone, Default)]
pub struct ForwardOptions {
    /// Compute and return the logits `[rows, seq_len, vocab]` of every batch.
    pub logits: bool,
    /// Route every token through every expert for statistics (outputs unchanged).
    pub all_experts_stats: bool,
    /// Where the forward runs (CPU f32 by default).
    pub device: Option<ComputeDevice>,
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
}

/// The calibration batches' hidden states moving through the decoder one layer at a time.
pub struct LayerStream<'a> {
    loader: WeightLoader<'a>,
    desc: &'a ModelDescriptor,
    rope: Option<Rope>,
    /// The ropes of the layer types that have their own (`layer_type_ropes`).
    layer_ropes: BTreeMap<String, Rope>,
    hidden: Vec<Tensor>,
    /// Per batch, the keys the last layer with a sparse-attention indexer chose.
    chosen: Vec<ChosenKeys>,
    all_experts_stats: bool,
    next_layer: usize,
    pub observers: Observers,
    /// Tokens per layer (all batches).
    pub tokens: usize,
    /// Seconds spent loading layers (waiting for their bytes, converting, copying to the device) and running
    /// the batches through them.
    pub load_seconds: f64,
    pub forward_seconds: f64,
    /// Called for each layer once its weights are resident and their maxima recorded, before the batches run.
    resident: Option<&'a ResidentHook<'a>>,
    /// Seconds spent in that call.
    pub resident_seconds: f64,
    /// The AWQ search, when the plan has AWQ formats.
    awq: Option<AwqPlan>,
}

/// What a layer's resident weights are handed to (see [`LayerStream::on_resident`]): the layer's position, each
/// MoE block's name and routed experts as the forward holds them, and the observers (the weight maxima of this
/// layer recorded).
pub type ResidentHook<'h> = dyn Fn(usize, &[(&str, &[ExpertWeights])], &Observers) -> Result<()> + Sync + 'h;

impl<'a> LayerStream<'a> {
    /// Checks the batches and embeds them on `compute`'s device.
    pub fn new(
        checkpoint: &'a Checkpoint,
        desc: &'a ModelDescriptor,
        batches: &[Batch],
        all_experts_stats: bool,
        compute: &ComputeDevice,
    ) -> Result<Self> {
        let device = compute.device.clone();
        // The embedding and the first layer are read from disk while the batches are checked (a run started
        // this read before it opened its device; it then goes on).
        read_ahead_first(checkpoint, desc);
        let loader = WeightLoader::with_dtype(checkpoint, device.clone(), compute.dtype);
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
        let hidden = {
            let embed = loader.tensor_shaped(&desc.embed, &[desc.vocab_size, desc.hidden_size])?;
            batches
                .iter()
                .map(|batch| {
                    let ids = match &desc.embed_as {
                        Some(replace) => {
                            batch.ids.iter().map(|id| if replace.ids.contains(id) { replace.by } else { *id }).collect()
                        }
                        None => batch.ids.clone(),
                    };
                    let ids = Tensor::from_vec(ids, batch.ids.len(), &device)?;
                    let xs = embed.index_select(&ids, 0)?.reshape((batch.rows, batch.seq_len, desc.hidden_size))?;
                    let xs = (xs * desc.embedding_multiplier)?;
                    if !all_finite(&xs)? {
                        return Err(non_finite_embedding(checkpoint, desc, batch)?);
                    }
                    Ok(xs)
                })
                .collect::<Result<Vec<_>>>()?
        };
        let max_len = batches.iter().map(|b| b.seq_len).max().unwrap_or(0);
        let rope =
            desc.rope.as_ref().map(|rope| Rope::new(rope, max_len.max(1), &device, compute.dtype)).transpose()?;
        let layer_ropes = desc
            .layer_type_ropes
            .iter()
            .map(|(kind, rope)| Ok((kind.clone(), Rope::new(rope, max_len.max(1), &device, compute.dtype)?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        Ok(LayerStream {
            loader,
            desc,
            rope,
            layer_ropes,
            chosen: vec![ChosenKeys::default(); hidden.len()],
            hidden,
            all_experts_stats,
            next_layer: 0,
            observers: Observers::default(),
            tokens: batches.iter().map(|b| b.rows * b.seq_len).sum(),
            load_seconds: 0.0,
            forward_seconds: 0.0,
            resident: None,
            resident_seconds: 0.0,
            awq: None,
        })
    }

    /// Hands each layer's resident weights to `hook` from the next layer on: once the layer is loaded and its
    /// weight maxima recorded, before its batches run (an error stops the run).
    pub fn on_resident(&mut self, hook: &'a ResidentHook<'a>) {
        self.resident = Some(hook);
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
        self.hidden.len()
    }

    /// Batch runs per layer, what [`Self::step`]'s progress counts: each batch once, or twice with an AWQ search
    /// (its statistics, then its search).
    pub fn batch_runs(&self) -> usize {
        self.hidden.len() * if self.awq.is_some() { 2 } else { 1 }
    }

    /// Loads the next layer, runs every batch through it, frees it; returns its index (None when done).
    /// `on_batch(done)` follows the batch runs within the layer, of [`Self::batch_runs`] (not called after the last:
    /// the layer is done).
    pub fn step(&mut self, on_batch: &mut dyn FnMut(usize)) -> Result<Option<usize>> {
        let Some(layer_desc) = self.desc.layers.get(self.next_layer) else { return Ok(None) };
        let clock = Instant::now();
        // The next layer is read from disk while this one computes. On a GPU its read is queued before this one
        // loads, so the disk goes on while this layer is copied to the device (whose host bytes are then gone:
        // two layers' bytes at most). On the CPU the loaded layer lives in host memory, so the next one is read
        // only once this one is loaded.
        let checkpoint = self.loader.checkpoint;
        let next = layer_prefix(self.desc, self.next_layer + 1);
        let early = self.loader.device.is_cuda();
        if let (true, Some(next)) = (early, next) {
            checkpoint.prefetch_next(&[next]);
        }
        let rope = layer_rope(&self.rope, &self.layer_ropes, layer_desc)?;
        let layer = profile::section(&self.loader.device, "layer weights (wait for the disk, upload)", || {
            DecoderLayer::load(&self.loader, layer_desc, self.norm_style(), rope.is_some(), self.all_experts_stats)
        })?;
        // What the layer left untaken (fused tensors its slices were cut from) is of no more use.
        if let Some(this) = layer_prefix(self.desc, self.next_layer) {
            checkpoint.release_read_ahead(&[this]);
        }
        if let (false, Some(next)) = (early, next) {
            checkpoint.prefetch_next(&[next]);
        }
        self.load_seconds += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        profile::section(&self.loader.device, "weight maxima", || layer.observe_weights(&mut self.observers))?;
        self.forward_seconds += clock.elapsed().as_secs_f64();
        if let Some(hook) = self.resident {
            let clock = Instant::now();
            profile::section(&self.loader.device, "quantization of the resident experts", || {
                hook(self.next_layer, &layer.routed_experts(), &self.observers)
            })?;
            self.resident_seconds += clock.elapsed().as_secs_f64();
        }
        let clock = Instant::now();
        self.observers.awq = self.awq_search()?;
        let awq_inputs = self.observers.awq.as_ref().map(|_| (self.hidden.clone(), self.chosen.clone()));
        for batch in 0..self.hidden.len() {
            let ys = layer.forward(&self.hidden[batch], rope, &mut self.chosen[batch], &mut self.observers)?;
            if !profile::section(&self.loader.device, "finite check", || all_finite(&ys))? {
                return Err(self.non_finite(&layer, batch, &self.hidden[batch]));
            }
            self.hidden[batch] = ys;
            if batch + 1 < self.batch_runs() {
                on_batch(batch + 1);
            }
        }
        if let Some((inputs, chosen)) = awq_inputs {
            // The search's runs follow the statistics', in the same count.
            let mut searched = |run: usize| on_batch(inputs.len() + run);
            profile::section(&self.loader.device, "AWQ search", || {
                Self::awq_search_pass(&mut self.observers, &layer, rope, &inputs, chosen, &mut searched)
            })?;
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

    /// The error for batch `batch` whose output of `layer` (the next one) is not finite, `xs` being its input:
    /// a weight of the layer that is not finite if there is one (the likeliest cause), else the first
    /// activation found not finite when the batch runs through the layer again.
    fn non_finite(&self, layer: &DecoderLayer, batch: usize, xs: &Tensor) -> Error {
        let index = self.desc.layers[self.next_layer].index;
        let location = format!("decoder layer {index}");
        let checkpoint = self.loader.checkpoint;
        match layer_prefix(self.desc, self.next_layer).map(|prefix| first_non_finite_weight(checkpoint, prefix)) {
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
        let mut trace = Observers::tracing();
        let mut chosen = self.chosen[batch].clone();
        let rope = match layer_rope(&self.rope, &self.layer_ropes, &self.desc.layers[self.next_layer]) {
            Ok(rope) => rope,
            Err(error) => return error,
        };
        if let Err(error) = layer.forward(xs, rope, &mut chosen, &mut trace) {
            return error;
        }
        let tensor = trace.first_non_finite().map_or_else(|| format!("the output of {location}"), str::to_string);
        Error::ActivationNonFinite { location, tensor, detail: format!("calibration batch {batch}") }
    }

    /// Final norm and lm_head over every batch (after the last layer), soft-capped where the model caps them:
    /// logits `[rows, seq_len, vocab]`.
    pub fn logits(&mut self) -> Result<Vec<Vec<f32>>> {
        let desc = self.desc;
        let norm = self.norm_style().hidden(&self.loader, &desc.final_norm)?;
        let weight = self.loader.tensor_shaped(&desc.lm_head, &[desc.vocab_size, desc.hidden_size])?;
        let bias = desc.lm_head_bias.as_ref().map(|b| self.loader.tensor_shaped(b, &[desc.vocab_size])).transpose()?;
        let head = Linear::from_weight("lm_head", weight, bias);
        let mut logits = Vec::with_capacity(self.hidden.len());
        for xs in &self.hidden {
            let normed = norm.forward(xs)?;
            self.observers.record_input(&["lm_head"], &normed)?;
            let mut ys = head.forward(&normed)?;
            if let Some(cap) = desc.final_logit_softcapping {
                ys = ((ys / cap)?.tanh()? * cap)?;
            }
            let ys = (ys.to_dtype(DType::F32)? / desc.logits_scaling)?;
            logits.push(ys.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(logits)
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

/// Starts reading what calibration needs first, the embedding and decoder layer 0, in the background. A run
/// calls this as soon as the checkpoint is open, so the disk works while the device starts;
/// [`LayerStream::new`] asks for the same read, which then goes on.
pub fn read_ahead_first(checkpoint: &Checkpoint, desc: &ModelDescriptor) {
    let mut prefixes = vec![desc.embed.as_str()];
    prefixes.extend(layer_prefix(desc, 0));
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
    let compute = options.device.clone().unwrap_or_else(ComputeDevice::cpu);
    let mut stream = LayerStream::new(checkpoint, desc, batches, options.all_experts_stats, &compute)?;
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
    })
}
