//! Logits: the unquantized model's logits for one batch of token ids (what tests compare with transformers).

use std::path::Path;
use std::sync::atomic::AtomicBool;

use crate::calib::data::Batch;
use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::model::layers::{run_forward, ForwardOptions};
use crate::model::ModelDescriptor;

/// Logits `[rows, seq_len, vocab]` (row-major, f32) of the model in `dir` described by `desc` for `batch`.
pub fn compute_logits(dir: &Path, desc: &ModelDescriptor, batch: Batch, cancel: &AtomicBool) -> Result<Vec<f32>> {
    let checkpoint = Checkpoint::open(dir)?;
    let options = ForwardOptions { logits: true, ..ForwardOptions::default() };
    let mut result = run_forward(&checkpoint, desc, &[batch], &options, cancel, &mut |_| {})?;
    Ok(result.logits.pop().unwrap_or_default())
}
