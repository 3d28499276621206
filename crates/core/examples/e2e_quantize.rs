//! The moe-quant side of the end-to-end race (benches/e2e): quantize a checkpoint from disk to disk with a
//! descriptor and export plan that the TypeScript side built, on a given device, and print the report
//! (without per-module statistics) as JSON. Node is not needed where this runs. With `MOE_QUANT_PROFILE=1` the
//! report also says where the forward's time went (a device synchronisation around each section).
//!
//! With `MOE_QUANT_QUANTIZE_ON_HOST=1` every weight is quantized on the CPU, as before quantization on the GPU.
//!
//! usage: e2e_quantize MODEL_DIR OUTPUT_DIR DESCRIPTOR.json PLAN.json CALIB_IDS.json DEVICE BATCH_SIZE

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use moe_quant_core::calib::data::{CalibrationSource, SequenceRequest};
use moe_quant_core::export::ExportPlan;
use moe_quant_core::model::ModelDescriptor;
use moe_quant_core::ops::calibrate::CalibrationRequest;
use moe_quant_core::ops::quantize::{quantize_checkpoint, Calibration, RunControl};

fn main() {
    // When the process entered and left `main` (Unix seconds), against which a caller's clock shows what the
    // process's start and exit took.
    eprintln!("main entered at {:.3}", unix_seconds());
    if let Err(message) = run() {
        eprintln!("e2e_quantize: {message}");
        std::process::exit(1);
    }
    eprintln!("main returns at {:.3}", unix_seconds());
}

fn unix_seconds() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn read<T: serde::de::DeserializeOwned>(path: &str) -> Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, output, descriptor, plan, ids, device, batch_size] = args.as_slice() else {
        return Err(
            "usage: e2e_quantize MODEL_DIR OUTPUT_DIR DESCRIPTOR.json PLAN.json CALIB_IDS.json DEVICE BATCH_SIZE"
                .into(),
        );
    };
    let descriptor: ModelDescriptor = read(descriptor)?;
    let plan: ExportPlan = read(plan)?;
    let ids: Vec<Vec<u32>> = read(ids)?;
    let sequences = SequenceRequest {
        samples: ids.len(),
        seq_len: ids.first().map_or(0, Vec::len),
        batch_size: batch_size.parse().map_err(|e| format!("batch size: {e}"))?,
        // `cuda:0,cuda:1`: the batches split over several devices.
        device: (!device.contains(',')).then(|| device.clone()),
        devices: device.contains(',').then(|| device.split(',').map(str::to_string).collect()),
        source: CalibrationSource::Ids { ids },
    };
    let request = CalibrationRequest { sequences, all_experts: false };
    // MOE_QUANT_QUANTIZE_ON_HOST=1: quantize every weight on the CPU (the path before quantization on the GPU).
    let quantize_on_device = std::env::var_os("MOE_QUANT_QUANTIZE_ON_HOST").is_none();
    let started = Instant::now();
    let report = quantize_checkpoint(
        model.as_ref(),
        output.as_ref(),
        &plan,
        Some(Calibration { desc: &descriptor, request: &request, quantize_on_device }),
        RunControl {
            cancel: &AtomicBool::new(false),
            progress: &mut |event| {
                eprintln!(
                    "{:?} layer {}/{} ({:.2} s)",
                    event.stage,
                    event.layer,
                    event.layers,
                    started.elapsed().as_secs_f64()
                )
            },
            extra_files: None,
        },
    )
    .map_err(|e| format!("[{}] {e}", e.code()))?;
    let calibration = report.calibration.as_ref().ok_or("a calibrated run reports its calibration")?;
    let uncalibrated: usize =
        calibration.observers.experts.values().map(|s| s.tokens.iter().filter(|&&n| n == 0).count()).sum();
    let summary = serde_json::json!({
        "wall_seconds": started.elapsed().as_secs_f64(),
        "seconds": report.seconds,
        "tokens": calibration.tokens,
        "layers": report.layers,
        "quantized_tensors": report.quantized_tensors,
        "quantized_on_device": report.quantized_on_device,
        "output_bytes": report.files.values().sum::<u64>(),
        "peak_rss_bytes": report.peak_rss_bytes,
        "uncalibrated_experts": uncalibrated,
        // With MOE_QUANT_PROFILE set: seconds per forward section, each synchronised (see model::profile).
        "profile": moe_quant_core::model::profile::report(),
    });
    println!("{summary}");
    Ok(())
}
