//! Data-parallel calibration on several CPU "devices": the layer stream splits the calibration batches between
//! devices in order, each running its share through its own copy of every layer on its own thread, and merges what they
//! record. For every committed descriptor (MoE routing, KV maxima, each family's mixers), two and three devices
//! record exactly what one records (maxima, token counts) and give the same logits, bit for bit; quantizing on
//! devices the caller opened writes what the request's devices write.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

mod common;

use common::forward::{forward_on, four_batches, DESCRIBED};
use common::quantize::{assert_same_files, quantize_fixture, Devices};
use moe_quant_core::calib::data::Batch;
use moe_quant_core::device::ComputeDevice;
use moe_quant_core::model::layers::ForwardResult;
use moe_quant_core::model::observe::Observers;

fn forward(fixture: &str, batches: &[Batch], devices: usize) -> ForwardResult {
    forward_on(fixture, batches, vec![ComputeDevice::cpu(); devices])
}

fn recorded(observers: &Observers) -> serde_json::Value {
    serde_json::to_value(observers).unwrap()
}

#[test]
fn several_devices_record_and_compute_what_one_does() {
    for fixture in DESCRIBED {
        let batches = four_batches(fixture);
        assert_eq!(batches.len(), 4, "{fixture}");
        let one = forward(fixture, &batches, 1);
        // Shares of 2 + 2 and 2 + 1 + 1 batches.
        for devices in [2, 3] {
            let split = forward(fixture, &batches, devices);
            assert_eq!(recorded(&split.observers), recorded(&one.observers), "{fixture} on {devices} devices");
            assert_eq!(split.logits, one.logits, "{fixture} on {devices} devices");
        }
    }
}

#[test]
fn the_merge_is_needed_each_share_alone_records_less() {
    for fixture in DESCRIBED {
        let batches = four_batches(fixture);
        let whole = forward(fixture, &batches, 1).observers;
        let share = forward(fixture, &batches[..batches.len() / 2], 1).observers;
        let tokens = |o: &Observers| o.experts.values().flat_map(|s| s.tokens.iter()).sum::<u64>();
        if !whole.experts.is_empty() {
            assert!(tokens(&share) < tokens(&whole), "{fixture}");
        }
    }
}

#[test]
fn devices_are_checked() {
    let parse = |specs: &[&str]| ComputeDevice::parse_all(&specs.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(parse(&["cpu", "cpu", "cpu"]).unwrap().len(), 3);
    for (specs, message) in [
        (&[][..], "empty"),
        (&["cpu", "cuda:0"][..], "mixes GPUs and the CPU"),
        (&["cuda:1", "cuda:1"][..], "names cuda:1 twice"),
        (&["cuda", "cuda:0"][..], "names cuda:0 twice"),
    ] {
        let error = parse(specs).unwrap_err();
        assert_eq!(error.code(), "E_CALIBRATION_OPTIONS", "{specs:?}");
        assert!(error.to_string().contains(message), "{specs:?}: {error}");
    }
    assert_eq!(parse(&["cpu", "gpu"]).unwrap_err().code(), "E_DEVICE_UNAVAILABLE");
}

#[test]
fn quantizing_on_devices_opened_by_the_caller_writes_what_the_request_s_devices_write() {
    let dir = common::temp_dir();
    let out = |name: &str| dir.path().join(name);
    let cpu = ComputeDevice::cpu();
    for format in ["fp8", "nvfp4"] {
        let fixture = "qwen3_moe/hub";
        quantize_fixture(fixture, format, false, Devices::Requested(&["cpu"]), &out("one")).unwrap();
        quantize_fixture(fixture, format, false, Devices::Requested(&["cpu", "cpu"]), &out("requested")).unwrap();
        quantize_fixture(fixture, format, false, Devices::Opened(&[cpu.clone(), cpu.clone()]), &out("opened")).unwrap();
        assert_same_files(&out("requested"), &out("one"), &format!("{format}: two requested devices"));
        assert_same_files(&out("opened"), &out("one"), &format!("{format}: two opened devices"));
        for name in ["one", "requested", "opened"] {
            std::fs::remove_dir_all(out(name)).unwrap();
        }
    }
    let error = common::expect_err(quantize_fixture("qwen3_moe/hub", "fp8", false, Devices::Opened(&[]), &out("none")));
    common::assert_error(&error, "E_CALIBRATION_OPTIONS", &["devices", "empty"]);
    assert!(!out("none").exists());
}
