//! Quantizing a committed fixture with its committed export plan (fixtures/descriptors/plans, written by
//! tools/write_descriptors.mjs) and twelve calibration sequences, and comparing output folders.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use super::files;
use super::forward::{described, fixtures};
use moe_quant_core::calib::data::{CalibrationSource, SequenceRequest};
use moe_quant_core::device::ComputeDevice;
use moe_quant_core::export::ExportPlan;
use moe_quant_core::ops::calibrate::CalibrationRequest;
use moe_quant_core::ops::quantize::{
    quantize_checkpoint, quantize_checkpoint_on, Calibration, QuantizeReport, RunControl,
};
use moe_quant_core::Result;

/// Where a run's devices come from.
pub enum Devices<'a> {
    /// The request's `devices` (or its `device`, for one entry), checked and opened by the run.
    Requested(&'a [&'a str]),
    /// Opened by the caller and handed to [`quantize_checkpoint_on`] (one GPU may appear more than once).
    Opened(&'a [ComputeDevice]),
}

/// Quantizes `fixture` in `format` into `output`, calibrated on twelve sequences of 24 ids in batches of 4 (so that
/// each of three devices gets a batch), its experts quantized on the GPU while resident if `on_device`.
pub fn quantize_fixture(
    fixture: &str,
    format: &str,
    on_device: bool,
    devices: Devices<'_>,
    output: &Path,
) -> Result<QuantizeReport> {
    let descriptor = described(fixture);
    let plan_file = fixtures().join(format!("descriptors/plans/{}.{format}.json", fixture.replace('/', "_")));
    let mut plan: ExportPlan = serde_json::from_str(&std::fs::read_to_string(plan_file).unwrap()).unwrap();
    plan.copy.clear();
    let vocab = descriptor.vocab_size as u32;
    let ids: Vec<Vec<u32>> = (0..12u32).map(|s| (0..24u32).map(|i| (s * 131 + i * 17 + 3) % vocab).collect()).collect();
    let (device, requested) = match devices {
        Devices::Requested([one]) => (Some(one.to_string()), None),
        Devices::Requested(list) => (None, Some(list.iter().map(|d| d.to_string()).collect())),
        Devices::Opened(_) => (None, None),
    };
    let sequences = SequenceRequest {
        samples: ids.len(),
        seq_len: 24,
        batch_size: 4,
        device,
        devices: requested,
        source: CalibrationSource::Ids { ids },
    };
    let request = CalibrationRequest { sequences, all_experts: false };
    let calibration = Calibration { desc: &descriptor, request: &request, quantize_on_device: on_device };
    let control = RunControl { cancel: &AtomicBool::new(false), progress: &mut |_| {}, extra_files: None };
    let model = fixtures().join(fixture);
    match devices {
        Devices::Requested(_) => quantize_checkpoint(&model, output, &plan, Some(calibration), control),
        Devices::Opened(opened) => quantize_checkpoint_on(&model, output, &plan, calibration, opened, control),
    }
}

/// Asserts that the output folder `dir` holds the files of `expected`, byte for byte.
pub fn assert_same_files(dir: &Path, expected: &Path, context: &str) {
    let (got, want) = (files(dir), files(expected));
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{context}");
    for (name, bytes) in &got {
        assert!(bytes == &want[name], "{context}: {name} differs");
    }
}
