//! Node.js binding of moe-quant: one `#[napi]` function per operation, each a [`CoreTask`] run off the JS
//! thread. Requests and reports cross as JSON of the contract's types (`moe_quant_core::contract`, declared
//! for TypeScript in `ts/native/generated/`); a core error crosses as a JS error whose message is an
//! `ErrorPayload` (`{ code, message, details }`) as JSON. Panics are caught here and never reach the Node
//! process. Progress events are delivered one at a time: the task waits until the JS callback has run before
//! it goes on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use moe_quant_core::calib::data::Batch;
use moe_quant_core::model::ModelDescriptor;
use moe_quant_core::ops::quantize::{CalibrationSummary, RunControl};
use moe_quant_core::{ops, Error as CoreError, ErrorPayload};
use napi::bindgen_prelude::{AsyncTask, Env, Float32Array, Result, Status, Task};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;

/// Runs core work, converting its error and any panic into a JS error carrying an [`ErrorPayload`].
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
            Err(to_js_error(&CoreError::internal(message)))
        }
    }
}

fn to_js_error(error: &CoreError) -> napi::Error {
    let payload = ErrorPayload::from(error);
    // Serializing strings and numbers cannot fail; the fallback still carries the code.
    let json = serde_json::to_string(&payload)
        .unwrap_or_else(|_| format!(r#"{{"code":"{}","message":"{}","details":{{}}}}"#, error.code(), error.code()));
    napi::Error::new(Status::GenericFailure, json)
}

fn to_json<T: serde::Serialize>(value: &T) -> moe_quant_core::Result<String> {
    serde_json::to_string(value).map_err(|e| CoreError::internal(e.to_string()))
}

/// What a finished task hands to JavaScript.
pub trait Resolve: Send + Sized + 'static {
    type Js: napi::bindgen_prelude::ToNapiValue + napi::bindgen_prelude::TypeName;
    fn into_js(self) -> Self::Js;
}

/// Reports and listings: JSON text of a contract type.
impl Resolve for String {
    type Js = String;
    fn into_js(self) -> String {
        self
    }
}

/// Logits.
impl Resolve for Vec<f32> {
    type Js = Float32Array;
    fn into_js(self) -> Float32Array {
        Float32Array::new(self)
    }
}

/// Core work run once off the JS thread (errors and panics become JS errors carrying an [`ErrorPayload`]).
pub struct CoreTask<T: Resolve> {
    work: Option<Box<dyn FnOnce() -> moe_quant_core::Result<T> + Send>>,
}

impl<T: Resolve> CoreTask<T> {
    fn new(work: impl FnOnce() -> moe_quant_core::Result<T> + Send + 'static) -> AsyncTask<CoreTask<T>> {
        AsyncTask::new(CoreTask { work: Some(Box::new(work)) })
    }
}

impl<T: Resolve> Task for CoreTask<T> {
    type Output = T;
    type JsValue = T::Js;

    fn compute(&mut self) -> Result<T> {
        let work = self.work.take();
        guarded(|| work.ok_or_else(|| CoreError::internal("the task already ran"))?())
    }

    fn resolve(&mut self, _env: Env, output: T) -> Result<T::Js> {
        Ok(output.into_js())
    }
}

/// Parses a JSON request for the core, naming what it is in the error.
fn parse_request<T: serde::de::DeserializeOwned>(json: &str, what: &str) -> moe_quant_core::Result<T> {
    serde_json::from_str(json).map_err(|e| CoreError::internal(format!("invalid {what}: {e}")))
}

/// Lists config.json and every tensor header of the checkpoint in `dir`, as JSON text
/// (`{ dir, config, files, tensors: [{ name, dtype, shape, file, bytes }], other_files }`).
#[napi(ts_return_type = "Promise<string>")]
pub fn inspect_headers(dir: String) -> AsyncTask<CoreTask<String>> {
    CoreTask::new(move || to_json(&ops::inspect::inspect_headers(&dir)?))
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
    parse_request(json, "model descriptor")
}

/// Logits `[rows, seq_len, vocab]` (row-major) of the unquantized model described by `descriptor` (JSON)
/// for token ids `[rows, seq_len]`.
#[napi(ts_return_type = "Promise<Float32Array>")]
pub fn compute_logits(
    dir: String,
    descriptor: String,
    ids: Vec<u32>,
    rows: u32,
    seq_len: u32,
    cancel: Option<&CancelToken>,
) -> AsyncTask<CoreTask<Vec<f32>>> {
    let batch = Batch { ids, rows: rows as usize, seq_len: seq_len as usize };
    let cancel = cancel.map(|c| c.flag.clone()).unwrap_or_default();
    CoreTask::new(move || ops::logits::compute_logits(Path::new(&dir), &parse_descriptor(&descriptor)?, batch, &cancel))
}

/// A JS progress callback receiving one JSON event string per call.
type ProgressCallback = ThreadsafeFunction<String, (), String, Status, false>;

/// Delivers one progress event and waits until the JS callback has run: what the callback did (abort the
/// run's signal, throw) is seen by the task's next cancellation check, in particular the one right before an
/// output is published. Does not wait when the callback can no longer be called (the environment is closing).
fn emit(callback: &Option<Arc<ProgressCallback>>, event: &impl serde::Serialize) {
    let (Some(callback), Ok(json)) = (callback, serde_json::to_string(event)) else { return };
    let (delivered, wait) = std::sync::mpsc::channel::<()>();
    let status = callback.call_with_return_value(json, ThreadsafeFunctionCallMode::Blocking, move |_, _| {
        let _ = delivered.send(());
        Ok(())
    });
    if status == Status::Ok {
        // An error means the call was dropped without running, which also ends the wait.
        let _ = wait.recv();
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
) -> AsyncTask<CoreTask<String>> {
    let cancel = cancel.map(|c| c.flag.clone()).unwrap_or_default();
    let progress = on_progress.map(Arc::new);
    CoreTask::new(move || {
        let descriptor = parse_descriptor(&descriptor)?;
        let request = parse_request(&request, "calibration request")?;
        let report =
            moe_quant_core::ops::calibrate::calibrate(Path::new(&dir), &descriptor, &request, &cancel, &mut |event| {
                emit(&progress, &event)
            })?;
        to_json(&report)
    })
}

/// A JS callback receiving the calibration summary (JSON) and returning files for the output as JSON text
/// (`{ "name": "text" }`).
type FilesCallback = ThreadsafeFunction<String, String, String, Status, false>;

/// Asks the JS callback for the output's extra files and waits for its answer.
fn extra_files(
    callback: &FilesCallback,
    summary: Option<&CalibrationSummary>,
) -> moe_quant_core::Result<Vec<(String, Vec<u8>)>> {
    let (answered, answer) = std::sync::mpsc::channel::<Result<String>>();
    let status =
        callback.call_with_return_value(to_json(&summary)?, ThreadsafeFunctionCallMode::Blocking, move |result, _| {
            let _ = answered.send(result);
            Ok(())
        });
    let unanswered = || CoreError::internal("the callback making the output's extra files was not called");
    if status != Status::Ok {
        return Err(unanswered());
    }
    let text = answer.recv().map_err(|_| unanswered())?.map_err(|e| CoreError::internal(e.to_string()))?;
    let files: std::collections::BTreeMap<String, String> = parse_request(&text, "list of extra files")?;
    Ok(files.into_iter().map(|(name, text)| (name, text.into_bytes())).collect())
}

/// Quantizes `dir` as `plan` (JSON) says, calibrated with `descriptor` and `calibration` (JSON; both null
/// for a weight-only format), and writes `output` atomically; resolves to the report as JSON text.
/// `on_progress` receives JSON events `{ stage, layer, layers, tokens, bytes_written }`; `on_files`, called
/// before the output is published with the calibration summary (JSON, `null` when weight-only), returns
/// files to add to the output (`{ "name": "text" }` as JSON text).
#[napi(ts_return_type = "Promise<string>")]
#[allow(clippy::too_many_arguments)] // one per value the JS side passes
pub fn quantize(
    dir: String,
    output: String,
    descriptor: Option<String>,
    plan: String,
    calibration: Option<String>,
    cancel: Option<&CancelToken>,
    #[napi(ts_arg_type = "((event: string) => void) | undefined | null")] on_progress: Option<ProgressCallback>,
    #[napi(ts_arg_type = "((summary: string) => string) | undefined | null")] on_files: Option<FilesCallback>,
) -> AsyncTask<CoreTask<String>> {
    let cancel = cancel.map(|c| c.flag.clone()).unwrap_or_default();
    let progress = on_progress.map(Arc::new);
    CoreTask::new(move || {
        let plan: moe_quant_core::export::ExportPlan = parse_request(&plan, "export plan")?;
        let calibrated = match (descriptor, calibration) {
            (Some(descriptor), Some(calibration)) => {
                Some((parse_descriptor(&descriptor)?, parse_request(&calibration, "calibration request")?))
            }
            _ => None,
        };
        let mut files = |summary: Option<&CalibrationSummary>| match &on_files {
            Some(callback) => extra_files(callback, summary),
            None => Ok(Vec::new()),
        };
        let control = RunControl {
            cancel: &cancel,
            progress: &mut |event| emit(&progress, &event),
            extra_files: Some(&mut files),
        };
        let calibration = calibrated.as_ref().map(|(desc, request)| ops::quantize::Calibration {
            desc,
            request,
            quantize_on_device: true,
        });
        let report =
            ops::quantize::quantize_checkpoint(Path::new(&dir), Path::new(&output), &plan, calibration, control)?;
        to_json(&report)
    })
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
) -> AsyncTask<CoreTask<String>> {
    let cancel = cancel.map(|c| c.flag.clone()).unwrap_or_default();
    let progress = on_progress.map(Arc::new);
    CoreTask::new(move || {
        let original_descriptor = parse_descriptor(&original_descriptor)?;
        let quantized_descriptor = parse_descriptor(&quantized_descriptor)?;
        let request = parse_request(&request, "comparison request")?;
        let report = ops::compare::compare_models(
            Path::new(&original),
            &original_descriptor,
            Path::new(&quantized),
            &quantized_descriptor,
            &request,
            &cancel,
            &mut |event| emit(&progress, &event),
        )?;
        to_json(&report)
    })
}
