//! Quantization on the GPU while the forward holds the experts (`export::resident`) against quantizing every
//! weight on the CPU in the same GPU run: every output file byte for byte equal, on the fixtures whose export
//! plans are committed (fixtures/descriptors/plans, written by tools/write_descriptors.mjs). Built and run only
//! with the `cuda` feature on a GPU machine.

#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

mod common;

use std::path::Path;

use common::quantize::{assert_same_files, quantize_fixture, Devices};
use moe_quant_core::device::ComputeDevice;
use moe_quant_core::ops::quantize::QuantizeReport;

/// The fixtures with committed plans (`PLANNED` of tools/write_descriptors.mjs), and whether their experts are
/// written one by one (quantized on the GPU) or as whole stacks (GPT-OSS: on the CPU).
const PLANNED: &[(&str, bool)] = &[
    ("qwen3_moe/hub", true),
    ("mixtral/hub", true),
    ("qwen2_moe/fused", true),
    ("deepseek_v3/hub", true),
    ("gpt_oss/hub", false),
    ("families/nemotron_h/hub", true),
];

/// On cuda:0, as a user's request names it.
fn quantize(fixture: &str, format: &str, on_device: bool, output: &Path) -> QuantizeReport {
    quantize_fixture(fixture, format, on_device, Devices::Requested(&["cuda:0"]), output).unwrap()
}

/// As [`quantize`], the batches (and the experts quantized while resident) split over `devices`, opened here: the
/// request's `devices` may not name cuda:0 twice, as the shares on a one-GPU machine do.
fn quantize_on(fixture: &str, format: &str, on_device: bool, devices: &[&str], output: &Path) -> QuantizeReport {
    let devices: Vec<ComputeDevice> = devices.iter().map(|d| ComputeDevice::parse(d).unwrap()).collect();
    quantize_fixture(fixture, format, on_device, Devices::Opened(&devices), output).unwrap()
}

/// The layers of `a` whose reported error is more than `relative` away from `b`'s, or whose tensor counts differ.
fn error_mismatches(a: &QuantizeReport, b: &QuantizeReport, relative: f64, context: &str) -> Vec<String> {
    a.layers
        .iter()
        .zip(&b.layers)
        .filter(|(x, y)| {
            (x.relative_mse - y.relative_mse).abs() > relative * y.relative_mse.max(1e-12) || x.tensors != y.tensors
        })
        .map(|(x, y)| format!("{context} layer {}: {x:?} vs {y:?}", x.layer))
        .collect()
}

#[test]
fn experts_quantized_on_the_gpu_write_the_bytes_of_the_cpu_quantization() {
    let mut failures = Vec::new();
    for &(fixture, per_expert) in PLANNED {
        for format in ["fp8", "nvfp4"] {
            let dir = tempfile::tempdir().unwrap();
            let (gpu, cpu) = (dir.path().join("gpu"), dir.path().join("cpu"));
            let on_gpu = quantize(fixture, format, true, &gpu);
            let on_cpu = quantize(fixture, format, false, &cpu);
            println!(
                "{fixture} {format}: {} of {} weights quantized on the GPU",
                on_gpu.quantized_on_device, on_gpu.quantized_tensors
            );
            assert_eq!(on_cpu.quantized_on_device, 0);
            assert_eq!(on_gpu.quantized_on_device > 0, per_expert, "{fixture} {format}");
            assert_eq!(on_gpu.quantized_tensors, on_cpu.quantized_tensors);
            assert_same_files(&gpu, &cpu, &format!("{fixture} {format}"));
            // The error is summed in f32 on the GPU, in f64 on the CPU.
            failures.extend(error_mismatches(&on_gpu, &on_cpu, 1e-4, &format!("{fixture} {format}")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn experts_quantized_by_several_devices_write_the_bytes_of_one() {
    // Two and three shares of this GPU (three batches: each share has one): each quantizes its stacks of experts
    // from its own copy of the layer.
    let mut failures = Vec::new();
    for &(fixture, _) in PLANNED.iter().filter(|(_, per_expert)| *per_expert) {
        for format in ["fp8", "nvfp4"] {
            let dir = tempfile::tempdir().unwrap();
            let one_dir = dir.path().join("one");
            let one = quantize(fixture, format, true, &one_dir);
            for devices in [&["cuda:0", "cuda:0"][..], &["cuda:0", "cuda:0", "cuda:0"]] {
                let context = format!("{fixture} {format} on {} shares", devices.len());
                let out = dir.path().join(format!("shares-{}", devices.len()));
                let shared = quantize_on(fixture, format, true, devices, &out);
                assert!(shared.quantized_on_device > 0, "{context}");
                assert_eq!(shared.quantized_on_device, one.quantized_on_device, "{context}");
                assert_same_files(&out, &one_dir, &context);
                // The stacks are smaller with several shares, so their f32 error sums round differently.
                failures.extend(error_mismatches(&shared, &one, 1e-5, &context));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
