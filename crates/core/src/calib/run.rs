//! One calibration run: load the calibration sequences, run the layer-streamed forward over them with
//! observers, and report what was recorded.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};

use super::data::{load_calibration, CalibrationOptions, CalibrationSet, CalibrationSource};
use super::documents::Document;
use super::observers::Observers;
use crate::checkpoint::Checkpoint;
use crate::device::ComputeDevice;
use crate::error::Result;
use crate::model::stream::{run_forward, ForwardOptions, ForwardProgress};
use crate::model::ModelDescriptor;

/// Where the calibration sequences come from, as the TS side sends it.
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceSpec {
    Jsonl { path: PathBuf },
    Json { path: PathBuf },
    Text { path: PathBuf },
    Documents { documents: Vec<Document> },
    Ids { ids: Vec<Vec<u32>> },
}

impl SourceSpec {
    /// The source this names.
    pub fn source(&self) -> CalibrationSource {
        match self {
            SourceSpec::Jsonl { path } => CalibrationSource::Jsonl(path.clone()),
            SourceSpec::Json { path } => CalibrationSource::Json(path.clone()),
            SourceSpec::Text { path } => CalibrationSource::Text(path.clone()),
            SourceSpec::Documents { documents } => CalibrationSource::Documents(documents.clone()),
            SourceSpec::Ids { ids } => CalibrationSource::Ids(ids.clone()),
        }
    }
}

/// A calibration request (options already validated and defaulted by TS).
#[derive(Debug, Clone, Deserialize, ts_rs::TS)]
#[ts(optional_fields)]
pub struct CalibrationRequest {
    pub source: SourceSpec,
    pub samples: usize,
    pub seq_len: usize,
    pub batch_size: usize,
    /// Route every token through every expert for statistics only.
    #[serde(default)]
    pub all_experts: bool,
    /// `cpu` (default), `cuda` or `cuda:N`.
    #[serde(default)]
    pub device: Option<String>,
}

impl CalibrationRequest {
    /// The device the forward runs on.
    pub fn compute_device(&self) -> Result<ComputeDevice> {
        ComputeDevice::parse(self.device.as_deref().unwrap_or("cpu"))
    }
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

/// Loads the calibration sequences a request names (tokenizing text with the model's tokenizer).
pub fn load_request(
    dir: &Path,
    request: &CalibrationRequest,
    vocab_size: usize,
    cancel: &AtomicBool,
) -> Result<CalibrationSet> {
    let source = request.source.source();
    let options =
        CalibrationOptions { samples: request.samples, seq_len: request.seq_len, batch_size: request.batch_size };
    load_calibration(dir, &source, &options, vocab_size, cancel)
}

/// Runs the calibration forward of the checkpoint in `dir` described by `desc`.
pub fn calibrate(
    dir: &Path,
    desc: &ModelDescriptor,
    request: &CalibrationRequest,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(ForwardProgress),
) -> Result<CalibrationReport> {
    let set = load_request(dir, request, desc.vocab_size, cancel)?;
    let checkpoint = Checkpoint::open(dir)?;
    let forward_options = ForwardOptions {
        logits: false,
        all_experts_stats: request.all_experts,
        device: Some(request.compute_device()?),
    };
    let result = run_forward(&checkpoint, desc, &set.batches, &forward_options, cancel, progress)?;
    Ok(CalibrationReport {
        observers: result.observers,
        samples: set.sample_count(),
        requested_samples: set.requested_samples,
        seq_len: request.seq_len,
        tokens: result.tokens,
        peak_rss_bytes: result.peak_rss_bytes,
        seconds: result.seconds,
    })
}
