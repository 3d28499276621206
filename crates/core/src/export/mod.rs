//! Export: the quantized checkpoint. TS decides the plan (which tensors are quantized under which output
//! names, which scales are shared, the metadata files); this module runs calibration layer by layer,
//! quantizes each layer as soon as its statistics are complete, and writes everything atomically.

pub mod plan;
pub mod run;

pub use plan::ExportPlan;
pub use run::{
    quantize_checkpoint, CalibrationSummary, ExtraFiles, QuantizeProgress, QuantizeReport, QuantizeStage, RunControl,
};
