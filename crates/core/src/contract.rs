//! The contract with TypeScript: every type that crosses the N-API boundary, gathered here. Each derives
//! `ts_rs::TS` where it is declared; `cargo test` regenerates their TypeScript declarations in
//! `ts/native/generated/` (committed, and checked for drift in CI), so the two sides cannot disagree.
//!
//! Requests and descriptions go to Rust as JSON; reports and progress events come back as JSON; errors come
//! back as an [`ErrorPayload`].

pub use crate::calib::data::CalibrationSource;
pub use crate::calib::documents::Document;
pub use crate::error::{ErrorCode, ErrorPayload};
pub use crate::export::plan::{AwqFoldPlan, AwqNormPlan, ExpertPlan, ExportPlan, KeptTensor, KvScalePlan, LinearPlan};
pub use crate::model::descriptor::ModelDescriptor;
pub use crate::model::layers::ForwardProgress;
pub use crate::model::observe::{ExpertStats, KvAmax, Observers};
pub use crate::ops::calibrate::{CalibrationReport, CalibrationRequest};
pub use crate::ops::compare::{ComparisonProgress, ComparisonReport, ComparisonRequest, Side};
pub use crate::ops::inspect::{DequantizedTensors, HeaderListing, TensorHeader};
pub use crate::ops::quantize::{
    CalibrationSummary, LayerError, QuantizeProgress, QuantizeReport, QuantizeStage, StageSeconds,
};

#[cfg(test)]
mod tests {
    use std::path::Path;

    use ts_rs::{Config, TS};

    use super::*;

    /// Writes the TypeScript declarations of the contract (and of every type they use).
    #[test]
    fn typescript_declarations_are_generated() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ts/native/generated");
        // Sizes and counts are far below 2^53: plain numbers, not bigints, on the TypeScript side.
        let cfg = Config::new().with_out_dir(&dir).with_large_int("number");
        // A type that left the contract must not leave its declaration behind.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.path().extension().is_some_and(|e| e == "ts") {
                    std::fs::remove_file(entry.path()).unwrap();
                }
            }
        }
        let exports = [
            ModelDescriptor::export_all(&cfg),
            ExportPlan::export_all(&cfg),
            CalibrationRequest::export_all(&cfg),
            CalibrationReport::export_all(&cfg),
            ComparisonRequest::export_all(&cfg),
            ComparisonProgress::export_all(&cfg),
            ComparisonReport::export_all(&cfg),
            ForwardProgress::export_all(&cfg),
            QuantizeProgress::export_all(&cfg),
            QuantizeReport::export_all(&cfg),
            CalibrationSummary::export_all(&cfg),
            HeaderListing::export_all(&cfg),
            ErrorPayload::export_all(&cfg),
        ];
        for export in exports {
            if let Err(error) = export {
                panic!("cannot write the TypeScript contract into {}: {error}", dir.display());
            }
        }
    }
}
