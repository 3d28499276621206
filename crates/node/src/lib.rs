//! Node.js binding of moe-quant: one `#[napi]` function per operation, each an async task off the JS
//! thread. Core errors cross as JS errors whose message starts with `[E_CODE]`; the TypeScript layer turns
//! that into `MoeQuantError.code`. Panics are caught here and never reach the Node process.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use moe_quant_core::calib::data::Batch;
use moe_quant_core::model::{run_forward, ForwardOptions, ModelDescriptor};
use moe_quant_core::{Checkpoint, Error as CoreError};
use napi::bindgen_prelude::{AsyncTask, Env, Float32Array, Result, Status, Task};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

/// Runs core work, converting its error and any panic into a coded JS error.
fn guarded<T>(work: impl FnOnce() -> moe_quant_core::Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(to_js_error(&error)),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(to_js_error(&CoreError::Internal(message)))
        }
    }
}

fn to_js_error(error: &CoreError) -> napi::Error {
    napi::Error::new(Status::GenericFailure, format!("[{}] {error}", error.code()))
}

fn to_json<T: serde::Serialize>(value: &T) -> moe_quant_core::Result<String> {
    serde_json::to_string(value).map_err(|e| CoreError::Internal(e.to_string()))
}

pub struct InspectHeadersTask {
    dir: String,
}

impl Task for InspectHeadersTask {
    type Output = String;
    type JsValue = String;

    fn compute(&mut self) -> Result<String> {
        guarded(|| to_json(&moe_quant_core::inspect_headers(&self.dir)?))
    }

    fn resolve(&mut self, _env: Env, output: String) -> Result<String> {
        Ok(output)
    }
}

/// Lists config.json and every tensor header of the checkpoint in `dir`, as JSON text
/// (`{ dir, config, files, tensors: [{ name, dtype, shape, file, bytes }], other_files }`).
#[napi(ts_return_type = "Promise<string>")]
pub fn inspect_headers(dir: String) -> AsyncTask<InspectHeadersTask> {
    AsyncTask::new(InspectHeadersTask { dir })
}

/// Every error code the native core can produce.
#[napi]
pub fn error_codes() -> Vec<String> {
    CoreError::CODES.iter().map(|c| c.to_string()).collect()
}

/// A flag that a running task checks between steps; `cancel()` makes it stop with `E_CANCELLED`.
#[napi]
#[derive(Default)]
pub struct CancelToken {
    flag: Arc<AtomicBool>,
}

#[napi]
impl CancelToken {
    #[napi(constructor)]
    pub fn new() -> Self {
        CancelToken::default()
    }

    /// Asks the task holding this token to stop.
    #[napi]
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Relaxed);
    }
}

fn parse_descriptor(json: &str) -> moe_quant_core::Result<ModelDescriptor> {
    serde_json::from_str(json).map_err(|e| CoreError::Internal(format!("invalid model descriptor: {e}")))
}

pub struct ComputeLogitsTask {
    dir: String,
    descriptor: String,
    batch: Batch,
    cancel: Arc<AtomicBool>,
}

impl Task for ComputeLogitsTask {
    type Output = Vec<f32>;
    type JsValue = Float32Array;

    fn compute(&mut self) -> Result<Vec<f32>> {
        guarded(|| {
            let descriptor = parse_descriptor(&self.descriptor)?;
            let checkpoint = Checkpoint::open(&self.dir)?;
            let options = ForwardOptions { logits: true, ..ForwardOptions::default() };
            let batches = std::slice::from_ref(&self.batch);
            let mut result = run_forward(&checkpoint, &descriptor, batches, &options, &self.cancel, &mut |_| {})?;
            Ok(result.logits.pop().unwrap_or_default())
        })
    }

    fn resolve(&mut self, _env: Env, output: Vec<f32>) -> Result<Float32Array> {
        Ok(Float32Array::new(output))
    }
}

/// Logits `[rows, seq_len, vocab]` (row-major) of the unquantized model described by `descriptor` (JSON)
/// for token ids `[rows, seq_len]`.
#[napi]
pub fn compute_logits(
    dir: String,
    descriptor: String,
    ids: Vec<u32>,
    rows: u32,
    seq_len: u32,
    cancel: Option<&CancelToken>,
) -> AsyncTask<ComputeLogitsTask> {
    let batch = Batch { ids, rows: rows as usize, seq_len: seq_len as usize };
    let cancel = cancel.map(|c| c.flag.clone()).unwrap_or_default();
    AsyncTask::new(ComputeLogitsTask { dir, descriptor, batch, cancel })
}

/// A JS progress callback receiving one JSON event string per call.
type ProgressCallback = ThreadsafeFunction<String, (), String, Status, false>;

fn emit(callback: &Option<Arc<ProgressCallback>>, event: &impl serde::Serialize) {
    if let (Some(callback), Ok(json)) = (callback, serde_json::to_string(event)) {
        callback.call(json, ThreadsafeFunctionCallMode::NonBlocking);
    }
}

pub struct CalibrateTask {
    dir: String,
    descriptor: String,
    request: String,
    cancel: Arc<AtomicBool>,
    progress: Option<Arc<ProgressCallback>>,
}

impl Task for CalibrateTask {
    type Output = String;
    type JsValue = String;

    fn compute(&mut self) -> Result<String> {
        guarded(|| {
            let descriptor = parse_descriptor(&self.descriptor)?;
            let request: moe_quant_core::calib::run::CalibrationRequest = serde_json::from_str(&self.request)
                .map_err(|e| CoreError::Internal(format!("invalid calibration request: {e}")))?;
            let progress = self.progress.clone();
            let report = moe_quant_core::calib::run::calibrate(
                std::path::Path::new(&self.dir),
                &descriptor,
                &request,
                &self.cancel,
                &mut |event| emit(&progress, &event),
            )?;
            to_json(&report)
        })
    }

    fn resolve(&mut self, _env: Env, output: String) -> Result<String> {
        Ok(output)
    }
}

/// Runs the calibration forward; resolves to the report as JSON text. `on_progress` receives JSON events
/// `{ layer, layers, tokens }`.
#[napi(ts_return_type = "Promise<string>")]
pub fn calibrate(
    dir: String,
    descriptor: String,
    request: String,
    cancel: Option<&CancelToken>,
    #[napi(ts_arg_type = "((event: string) => void) | undefined | null")] on_progress: Option<ProgressCallback>,
) -> AsyncTask<CalibrateTask> {
    let cancel = cancel.map(|c| c.flag.clone()).unwrap_or_default();
    AsyncTask::new(CalibrateTask { dir, descriptor, request, cancel, progress: on_progress.map(Arc::new) })
}

pub struct QuantizeTask {
    dir: String,
    output: String,
    descriptor: String,
    plan: String,
    calibration: String,
    cancel: Arc<AtomicBool>,
    progress: Option<Arc<ProgressCallback>>,
}

impl Task for QuantizeTask {
    type Output = String;
    type JsValue = String;

    fn compute(&mut self) -> Result<String> {
        guarded(|| {
            let descriptor = parse_descriptor(&self.descriptor)?;
            let plan: moe_quant_core::export::ExportPlan = serde_json::from_str(&self.plan)
                .map_err(|e| CoreError::Internal(format!("invalid export plan: {e}")))?;
            let calibration: moe_quant_core::calib::run::CalibrationRequest =
                serde_json::from_str(&self.calibration)
                    .map_err(|e| CoreError::Internal(format!("invalid calibration request: {e}")))?;
            let progress = self.progress.clone();
            let report = moe_quant_core::export::quantize_checkpoint(
                std::path::Path::new(&self.dir),
                std::path::Path::new(&self.output),
                &descriptor,
                &plan,
                &calibration,
                &self.cancel,
                &mut |event| emit(&progress, &event),
            )?;
            to_json(&report)
        })
    }

    fn resolve(&mut self, _env: Env, output: String) -> Result<String> {
        Ok(output)
    }
}

/// Calibrates `dir`, quantizes it as `plan` (JSON) says and writes `output` atomically; resolves to the
/// report as JSON text. `on_progress` receives JSON events `{ stage, layer, layers, tokens, bytes_written }`.
#[napi(ts_return_type = "Promise<string>")]
pub fn quantize(
    dir: String,
    output: String,
    descriptor: String,
    plan: String,
    calibration: String,
    cancel: Option<&CancelToken>,
    #[napi(ts_arg_type = "((event: string) => void) | undefined | null")] on_progress: Option<ProgressCallback>,
) -> AsyncTask<QuantizeTask> {
    let cancel = cancel.map(|c| c.flag.clone()).unwrap_or_default();
    let progress = on_progress.map(Arc::new);
    AsyncTask::new(QuantizeTask { dir, output, descriptor, plan, calibration, cancel, progress })
}

pub struct CompareModelsTask {
    original: String,
    original_descriptor: String,
    quantized: String,
    quantized_descriptor: String,
    request: String,
    cancel: Arc<AtomicBool>,
    progress: Option<Arc<ProgressCallback>>,
}

impl Task for CompareModelsTask {
    type Output = String;
    type JsValue = String;

    fn compute(&mut self) -> Result<String> {
        guarded(|| {
            let original = parse_descriptor(&self.original_descriptor)?;
            let quantized = parse_descriptor(&self.quantized_descriptor)?;
            let request: moe_quant_core::model::compare::ComparisonRequest = serde_json::from_str(&self.request)
                .map_err(|e| CoreError::Internal(format!("invalid comparison request: {e}")))?;
            let progress = self.progress.clone();
            let report = moe_quant_core::model::compare::compare_models(
                std::path::Path::new(&self.original),
                &original,
                std::path::Path::new(&self.quantized),
                &quantized,
                &request,
                &self.cancel,
                &mut |event| emit(&progress, &event),
            )?;
            to_json(&report)
        })
    }

    fn resolve(&mut self, _env: Env, output: String) -> Result<String> {
        Ok(output)
    }
}

/// Runs the models `original` and `quantized` (each with its descriptor, JSON) over the sequences `request`
/// names and compares their next-token distributions; resolves to the summary as JSON text. `on_progress`
/// receives JSON events `{ model, batch, batches, layer, layers }`.
#[napi(ts_return_type = "Promise<string>")]
pub fn compare_models(
    original: String,
    original_descriptor: String,
    quantized: String,
    quantized_descriptor: String,
    request: String,
    cancel: Option<&CancelToken>,
    #[napi(ts_arg_type = "((event: string) => void) | undefined | null")] on_progress: Option<ProgressCallback>,
) -> AsyncTask<CompareModelsTask> {
    let cancel = cancel.map(|c| c.flag.clone()).unwrap_or_default();
    AsyncTask::new(CompareModelsTask {
        original,
        original_descriptor,
        quantized,
        quantized_descriptor,
        request,
        cancel,
        progress: on_progress.map(Arc::new),
    })
}
