//! Data-parallel calibration: the batches split over devices in order, each device holding its share's hidden states
//! and running them through its own copy of each layer; the layer's bytes are read from disk once and copied to every
//! device. What the devices record merges in batch order (see `Observers::merge`), into what one device records
//! over all the batches. With one device this is the ordinary layer stream, run on the calling thread.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::mpsc;

use candle_core::Tensor;

use super::layer_rope;
use crate::awq::search::AwqSearch;
use crate::calib::data::Batch;
use crate::checkpoint::{Checkpoint, TensorData};
use crate::device::ComputeDevice;
use crate::error::{Error, Result};
use crate::model::blocks::key_selection::ChosenKeys;
use crate::model::blocks::ops::all_finite;
use crate::model::blocks::rope::Rope;
use crate::model::decoder::DecoderLayer;
use crate::model::descriptor::{LayerDescriptor, ModelDescriptor};
use crate::model::loader::WeightLoader;
use crate::model::observe::Observers;
use crate::model::profile;

/// One device's share of the calibration batches.
pub(super) struct Shard<'a> {
    pub loader: WeightLoader<'a>,
    pub rope: Option<Rope>,
    /// The ropes of the layer types that have their own (`layer_type_ropes`).
    pub layer_ropes: BTreeMap<String, Rope>,
    /// Its batches' hidden states, in order.
    pub hidden: Vec<Tensor>,
    /// Per batch, the keys the last layer with a sparse-attention indexer chose.
    pub chosen: Vec<ChosenKeys>,
    /// The index of its first batch among all the batches.
    pub first: usize,
}

/// The batches of each device: contiguous ranges in order, their sizes differing by at most one (the first devices
/// take the larger). Devices beyond the number of batches get none and are left out.
pub(super) fn split(batches: usize, devices: usize) -> Vec<Range<usize>> {
    let devices = devices.clamp(1, batches.max(1));
    let (each, extra) = (batches / devices, batches % devices);
    let mut start = 0;
    (0..devices)
        .map(|d| {
            let len = each + usize::from(d < extra);
            start += len;
            start - len..start
        })
        .collect()
}

/// The embedding the batches are looked up in. On the CPU it is kept as read, and each batch's rows are gathered
/// from its bytes before they are converted: converted whole, a bf16 vocabulary would be held twice more in f32.
/// On a GPU it is uploaded once and the device gathers the rows.
enum Embedding {
    Read(TensorData),
    Loaded(Tensor),
}

impl Embedding {
    fn load(loader: &WeightLoader<'_>, desc: &ModelDescriptor) -> Result<Self> {
        let (name, shape) = (&desc.embed, [desc.vocab_size, desc.hidden_size]);
        // An embedding stored quantized in ModelOpt's form is dequantized whole.
        let quantized = loader.check_shape(name, &shape)?;
        if loader.device.is_cuda() || quantized {
            return Ok(Embedding::Loaded(loader.tensor_shaped(name, &shape)?));
        }
        Ok(Embedding::Read(loader.checkpoint.read(name)?))
    }

    /// The rows of `ids`, `[ids.len(), hidden]` in the compute dtype.
    fn rows(&self, loader: &WeightLoader<'_>, ids: Vec<u32>) -> Result<Tensor> {
        match self {
            Embedding::Read(read) => loader.rows(read, &ids),
            Embedding::Loaded(embed) => {
                let len = ids.len();
                let ids = Tensor::from_vec(ids, len, &loader.device)?;
                Ok(embed.index_select(&ids, 0)?)
            }
        }
    }
}

impl<'a> Shard<'a> {
    /// Embeds `batches` (the batches from index `first` on) on `compute`'s device, with ropes for sequences of up
    /// to `max_len` tokens. Errors name the first batch whose embedding is not finite.
    pub fn new(
        checkpoint: &'a Checkpoint,
        desc: &ModelDescriptor,
        batches: &[Batch],
        first: usize,
        compute: &ComputeDevice,
        max_len: usize,
    ) -> Result<Self> {
        let device = compute.device.clone();
        let loader = WeightLoader::with_dtype(checkpoint, device.clone(), compute.dtype);
        let embed = Embedding::load(&loader, desc)?;
        let hidden = batches
            .iter()
            .map(|batch| {
                let ids = match &desc.embed_as {
                    Some(replace) => {
                        batch.ids.iter().map(|id| if replace.ids.contains(id) { replace.by } else { *id }).collect()
                    }
                    None => batch.ids.clone(),
                };
                let xs = embed.rows(&loader, ids)?.reshape((batch.rows, batch.seq_len, desc.hidden_size))?;
                let xs = (xs * desc.embedding_multiplier)?;
                if !all_finite(&xs)? {
                    return Err(super::non_finite_embedding(checkpoint, desc, batch)?);
                }
                Ok(xs)
            })
            .collect::<Result<Vec<_>>>()?;
        let rope =
            desc.rope.as_ref().map(|rope| Rope::new(rope, max_len.max(1), &device, compute.dtype)).transpose()?;
        let layer_ropes = desc
            .layer_type_ropes
            .iter()
            .map(|(kind, rope)| Ok((kind.clone(), Rope::new(rope, max_len.max(1), &device, compute.dtype)?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        Ok(Shard { loader, rope, layer_ropes, chosen: vec![ChosenKeys::default(); hidden.len()], hidden, first })
    }

    /// The rope `layer` rotates with on this device.
    pub fn rope(&self, layer: &LayerDescriptor) -> Result<Option<&Rope>> {
        layer_rope(&self.rope, &self.layer_ropes, layer)
    }
}

/// Batch runs done, reported to the layer stream's progress.
pub(super) struct Progress<'p> {
    pub on_batch: &'p mut dyn FnMut(usize),
    /// Runs done before this pass (the statistics pass's, during an AWQ search).
    pub offset: usize,
    /// Runs of the whole layer: the last is not reported (the layer is done).
    pub total: usize,
}

impl Progress<'_> {
    fn report(&mut self, done: usize) {
        if self.offset + done < self.total {
            (self.on_batch)(self.offset + done);
        }
    }
}

/// Runs `work` on every shard with its input (one thread per shard when there are several: each device works on its
/// own share), `tick` being called after each batch; returns the shards' results in order, or the first shard's
/// error in order.
pub(super) fn on_shards<I, T, F>(
    shards: &mut [Shard<'_>],
    inputs: Vec<I>,
    work: F,
    progress: &mut Progress<'_>,
) -> Result<Vec<T>>
where
    I: Send,
    T: Send,
    F: Fn(&mut Shard<'_>, I, &dyn Fn()) -> Result<T> + Sync,
{
    if inputs.len() != shards.len() {
        return Err(Error::internal(format!("{} inputs for {} devices", inputs.len(), shards.len())));
    }
    if let ([shard], [_]) = (&mut *shards, inputs.as_slice()) {
        let done = std::cell::Cell::new(0);
        let progress = std::cell::RefCell::new(progress);
        let tick = || {
            done.set(done.get() + 1);
            progress.borrow_mut().report(done.get());
        };
        let input = inputs.into_iter().next().ok_or_else(|| Error::internal("no input"))?;
        return Ok(vec![work(shard, input, &tick)?]);
    }
    let (sender, ticks) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = shards
            .iter_mut()
            .zip(inputs)
            .map(|(shard, input)| {
                let sender = sender.clone();
                scope.spawn(move || {
                    let tick = move || {
                        // The stream stops listening only once every shard is done.
                        let _ = sender.send(());
                    };
                    work(shard, input, &tick)
                })
            })
            .collect();
        drop(sender);
        let mut done = 0;
        while ticks.recv().is_ok() {
            done += 1;
            progress.report(done);
        }
        let results: Vec<Result<T>> = handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|_| Err(Error::internal("a device's worker panicked"))))
            .collect();
        results.into_iter().collect()
    })
}

/// What a device's run of a layer over its batches gave.
pub(super) enum ShardRun {
    /// What its observers recorded (the AWQ search's statistics attached).
    Done(Box<Observers>),
    /// Its batch `batch` (counted within the shard) came out of the layer not finite; `input` was that batch's input.
    NonFinite { batch: usize, input: Tensor },
}

impl Shard<'_> {
    /// Runs the shard's batches through `layer` (its copy on this device) on observers of their own, with the AWQ
    /// search's statistics pass attached when there is one; each batch's output replaces its input.
    pub fn run(
        &mut self,
        layer: &DecoderLayer,
        desc: &LayerDescriptor,
        awq: Option<AwqSearch>,
        tick: &dyn Fn(),
    ) -> Result<ShardRun> {
        let rope = layer_rope(&self.rope, &self.layer_ropes, desc)?;
        let mut observers = Observers::default();
        observers.awq = awq;
        for batch in 0..self.hidden.len() {
            let ys = layer.forward(&self.hidden[batch], rope, &mut self.chosen[batch], &mut observers)?;
            if !profile::section(&self.loader.device, "finite check", || all_finite(&ys))? {
                return Ok(ShardRun::NonFinite { batch, input: self.hidden[batch].clone() });
            }
            self.hidden[batch] = ys;
            tick();
        }
        Ok(ShardRun::Done(Box::new(observers)))
    }

    /// The AWQ search pass of the shard's batches: `inputs` (each batch's input of the layer, with the keys chosen
    /// before it) run through `layer` again with `search` attached; returns the search.
    pub fn search(
        &self,
        layer: &DecoderLayer,
        desc: &LayerDescriptor,
        search: AwqSearch,
        (inputs, mut chosen): (Vec<Tensor>, Vec<ChosenKeys>),
        tick: &dyn Fn(),
    ) -> Result<AwqSearch> {
        let rope = self.rope(desc)?;
        let mut scratch = Observers::default();
        scratch.awq = Some(search);
        for (xs, chosen) in inputs.iter().zip(&mut chosen) {
            layer.forward(xs, rope, chosen, &mut scratch)?;
            tick();
        }
        scratch.awq.take().ok_or_else(|| Error::internal("the AWQ search was lost"))
    }
}
