//! Node.js binding of moe-quant: one `#[napi]` function per operation, each an async task off the JS
//! thread. Core errors cross as JS errors whose message starts with `[E_CODE]`; the TypeScript layer turns
//! that into `MoeQuantError.code`. Panics are caught here and never reach the Node process.

use std::panic::{catch_unwind, AssertUnwindSafe};

use moe_quant_core::Error as CoreError;
use napi::bindgen_prelude::{AsyncTask, Env, Result, Status, Task};
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
