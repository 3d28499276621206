//! Calibrate: load the calibration sequences, run the layer-streamed forward over them with observers, and
//! report what was recorded.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use crate::calib::data::SequenceRequest;
use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::model::layers::{read_ahead_first, run_forward, ForwardOptions, ForwardProgress};
use crate::model::observe::Observers;
use crate::model::ModelDescriptor;

/// A calibration request (options already validated and defaulted by TS).
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
pub struct CalibrationRequest {
    #[serde(flatten)]
    pub sequences: SequenceRequest,
    /// Route every token through every expert for statistics only.
    #[serde(default)]
    pub all_experts: bool,
}

/// What a calibration run recorded.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
pub struct CalibrationReport {
    pub observers: Observers,
    pub samples: usize,
    pub requested_samples: usize,
    pub seq_len: usize,
    pub tokens: usize,
    pub peak_rss_bytes: Option<u64>,
    pub seconds: f64,
}

/// Runs the calibration forward of the checkpoint in `dir` described by `desc`.
pub fn calibrate(
    dir: &Path,
    desc: &ModelDescriptor,
    request: &CalibrationRequest,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(ForwardProgress),
) -> Result<CalibrationReport> {
    let checkpoint = Checkpoint::open(dir)?;
    // The disk starts on the first layers while the calibration data loads and the devices start.
    read_ahead_first(&checkpoint, desc, request.sequences.names_gpu());
    let set = request.sequences.load(dir, desc.vocab_size, cancel)?;
    let forward_options = ForwardOptions {
        logits: false,
        all_experts_stats: request.all_experts,
        devices: request.sequences.compute_devices()?,
        load_in_turn: false,
    };
    let result = run_forward(&checkpoint, desc, &set.batches, &forward_options, cancel, progress)?;
    Ok(CalibrationReport {
        observers: result.observers,
        samples: set.sample_count(),
        requested_samples: set.requested_samples,
        seq_len: request.sequences.seq_len,
        tokens: result.tokens,
        peak_rss_bytes: result.peak_rss_bytes,
        seconds: result.seconds,
    })
}
