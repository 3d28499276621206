//! The next layer's weights copied to each GPU while the current layer computes. A helper thread per device
//! takes each plain bf16, f16 or f32 tensor of that layer from the read-ahead as the disk delivers it and copies it
//! through pinned buffers on the device's copy stream ([`cuda::Uploader`]); when the layer loads, the loader takes
//! these copies instead of copying on the compute stream. A tensor of three or more dimensions is copied as its
//! slices along the first (one per expert of a fused `[E, …]` tensor), which is how the loader asks for it. The
//! read-ahead keeps the bytes, so several devices copy from one read of the layer, and whatever is not staged (a
//! failure, a tensor asked for whole after all) loads as before.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::{DType, Device, Tensor};

use super::loader::native_dtype;
use crate::checkpoint::{AheadBytes, Checkpoint};
use crate::cuda::Uploader;
use crate::error::{Error, Result};

/// A layer's tensors on the device, by name.
#[derive(Default)]
pub struct Staged {
    whole: HashMap<String, Tensor>,
    slices: HashMap<String, Vec<Tensor>>,
}

impl Staged {
    /// The tensor, as stored, when it was copied whole.
    pub fn tensor(&self, name: &str) -> Option<Tensor> {
        self.whole.get(name).cloned()
    }

    /// Slice `index` along the first dimension, as stored, when the tensor was copied as slices.
    pub fn slice(&self, name: &str, index: usize) -> Option<Tensor> {
        self.slices.get(name).and_then(|slices| slices.get(index)).cloned()
    }
}

/// One tensor to copy: its name, dtype, shape, bytes, and whether it goes as slices.
#[derive(Clone)]
struct Wanted {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    bytes: usize,
    sliced: bool,
}

/// The copy of the next layer under way.
struct NextLayer {
    thread: Option<JoinHandle<(Uploader, Result<Staged>)>>,
}

impl NextLayer {
    /// Starts copying `wanted` (read ahead through `ahead`) with `uploader` on a thread of its own.
    fn start(mut uploader: Uploader, ahead: AheadBytes, wanted: Vec<Wanted>) -> Self {
        let spawned = std::thread::Builder::new().name("moe-quant-upload".into()).spawn(move || {
            let staged = copy(&mut uploader, &ahead, &wanted);
            (uploader, staged)
        });
        // No thread: the layer loads as before (the uploader went with the closure).
        NextLayer { thread: spawned.ok() }
    }

    /// Waits for the copies: the staged tensors (none if anything failed; the loader then reads as before) and the
    /// uploader for the next layer (none if its thread failed).
    pub fn join(mut self) -> (Option<Uploader>, Option<Staged>) {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok((uploader, Ok(staged)))) => (Some(uploader), Some(staged)),
            Some(Ok((_, Err(_)))) | Some(Err(_)) | None => (None, None),
        }
    }
}

impl Drop for NextLayer {
    /// A run that stops early lets the copy finish before the device goes.
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Copies each wanted tensor the read-ahead holds (waiting for those on their way), then collects them.
fn copy(uploader: &mut Uploader, ahead: &AheadBytes, wanted: &[Wanted]) -> Result<Staged> {
    let mut copied = Vec::new();
    for w in wanted {
        let Some(bytes) = ahead.get(&w.name) else { continue };
        if !w.sliced {
            uploader.upload(&bytes, w.dtype, &w.shape)?;
            copied.push((w, 1));
            continue;
        }
        let count = w.shape[0];
        let stride = bytes.len() / count;
        for slice in bytes.chunks_exact(stride.max(1)).take(count) {
            uploader.upload(slice, w.dtype, &w.shape[1..])?;
        }
        copied.push((w, count));
    }
    let mut tensors = uploader.finish()?.into_iter();
    let mut staged = Staged::default();
    for (w, count) in copied {
        let taken: Vec<Tensor> = tensors.by_ref().take(count).collect();
        if taken.len() != count {
            return Err(Error::internal(format!("stage: {} of {count} copies of {}", taken.len(), w.name)));
        }
        if w.sliced {
            staged.slices.insert(w.name.clone(), taken);
        } else {
            staged.whole.extend(taken.into_iter().next().map(|t| (w.name.clone(), t)));
        }
    }
    Ok(staged)
}

/// A layer stream's copies ahead, one lane per device: on each GPU the next layer copied from one read of it.
pub(crate) struct Staging {
    lanes: Vec<Lane>,
}

/// One device's copies ahead: the uploader between layers, the copy under way.
struct Lane {
    device: Device,
    uploader: Option<Uploader>,
    next: Option<NextLayer>,
    /// False once an uploader could not be made (no CUDA device, no pinned memory): layers load as before.
    enabled: bool,
}

impl Staging {
    /// Copies ahead on each of `devices` that is a CUDA device.
    pub fn new<'d>(devices: impl IntoIterator<Item = &'d Device>) -> Self {
        let lane =
            |device: &Device| Lane { device: device.clone(), uploader: None, next: None, enabled: device.is_cuda() };
        Staging { lanes: devices.into_iter().map(lane).collect() }
    }

    /// Copies nothing ahead from now on: each layer loads when its turn comes.
    pub fn stop(&mut self) {
        for lane in &mut self.lanes {
            lane.enabled = false;
        }
    }

    /// Each device's layer copied while the last one computed, if one was.
    pub fn take(&mut self) -> Vec<Option<Arc<Staged>>> {
        self.lanes
            .iter_mut()
            .map(|lane| {
                let (uploader, staged) = lane.next.take()?.join();
                lane.uploader = uploader;
                staged.map(Arc::new)
            })
            .collect()
    }

    /// Starts copying the tensors under `prefix` (the next layer) to each device while this one computes, on a
    /// thread per device, unless their bytes would not fit twice in that device's free memory (the layer that
    /// computes meanwhile needs its room). Every device copies from the same read of the layer.
    pub fn start(&mut self, checkpoint: &Checkpoint, prefix: &str) {
        if !self.lanes.iter().any(|lane| lane.enabled) {
            return;
        }
        let (wanted, ahead) = wanted(checkpoint, prefix);
        let bytes: usize = wanted.iter().map(|w| w.bytes).sum();
        for lane in self.lanes.iter_mut().filter(|lane| lane.enabled) {
            let uploader = match lane.uploader.take().map_or_else(|| Uploader::new(&lane.device), Ok) {
                Ok(uploader) => uploader,
                Err(_) => {
                    lane.enabled = false;
                    continue;
                }
            };
            if wanted.is_empty() || !uploader.fits(2 * bytes) {
                lane.uploader = Some(uploader);
                continue;
            }
            lane.next = Some(NextLayer::start(uploader, ahead.clone(), wanted.clone()));
        }
    }
}

/// The plain bf16, f16 and f32 tensors under `prefix`, in the order the disk delivers them, and the read-ahead that
/// holds their bytes.
fn wanted(checkpoint: &Checkpoint, prefix: &str) -> (Vec<Wanted>, AheadBytes) {
    let (plain, ahead) = checkpoint.plain_read_ahead(&[prefix]);
    let mut wanted: Vec<_> = plain
        .into_iter()
        .filter_map(|info| {
            let (dtype, bytes) = (native_dtype(info.dtype)?, info.bytes());
            let sliced = info.shape.len() >= 3 && info.shape[0] > 0;
            Some(((info.file, info.start), Wanted { name: info.name, dtype, shape: info.shape, bytes, sliced }))
        })
        .collect();
    wanted.sort_by_key(|(at, _)| *at);
    (wanted.into_iter().map(|(_, w)| w).collect(), ahead)
}
