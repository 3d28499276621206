//! Export: the quantized checkpoint's parts. TS decides the plan (which tensors are quantized under which
//! output names, which scales are shared, the metadata files); here the output's tensors are declared
//! (`layout`), each layer is quantized (`quantizer`, with the KV cache's scales of `kv_cache`) and written
//! (`output`). The verb that runs them over the calibration is `ops::quantize`.

pub mod awq;
pub mod compressed;
pub mod format_set;
pub mod kv_cache;
pub mod layout;
pub mod output;
mod parallel;
pub mod plan;
pub mod quantizer;
pub mod resident;

pub use compressed::Encoding;
pub use format_set::FormatSet;
pub use plan::ExportPlan;
