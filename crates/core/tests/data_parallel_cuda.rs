//! Data-parallel calibration on GPUs: the batches split between devices, each on its own thread, record exactly what
//! one device records and give the same logits, bit for bit (the same kernels on the same shapes). Each GPU copies
//! each next layer to itself while the current one computes, alone or beside others, and the bits are those of
//! loading each layer in turn. With two GPUs the split goes over `cuda:0` and `cuda:1`; with one, two shares run on
//! `cuda:0` from two threads (the threading and merging of the multi-GPU path, on the one card). Built and run only
//! with the `cuda` feature on a GPU machine.

#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

mod common;

use common::forward::{forward_in_turn, forward_on, four_batches, DESCRIBED};
use moe_quant_core::device::ComputeDevice;

fn check(devices: &[ComputeDevice], what: &str) {
    for fixture in DESCRIBED {
        let batches = four_batches(fixture);
        let one = forward_on(fixture, &batches, vec![devices[0].clone()]);
        let split = forward_on(fixture, &batches, devices.to_vec());
        let in_turn = forward_in_turn(fixture, &batches, devices.to_vec());
        let recorded = |r: &moe_quant_core::model::ForwardResult| serde_json::to_value(&r.observers).unwrap();
        for (run, how) in [(&split, "split"), (&in_turn, "split, each layer loaded in turn")] {
            assert_eq!(recorded(run), recorded(&one), "{fixture}: {what}, {how}");
            assert_eq!(run.logits, one.logits, "{fixture}: {what}, {how}");
        }
        // Each GPU copies each layer after the first while the one before computes, unless told to load in turn.
        let layers = common::forward::described(fixture).layers.len();
        let staged = (one.staged_layers, split.staged_layers, in_turn.staged_layers);
        assert_eq!(staged, (layers - 1, layers - 1, 0), "{fixture}: layers copied ahead");
        println!("{fixture}: {what}: the same observers and logits");
    }
}

#[test]
fn two_shares_on_one_gpu_record_and_compute_what_one_does() {
    let gpu = ComputeDevice::parse("cuda:0").unwrap();
    check(&[gpu.clone(), gpu], "two threads on cuda:0");
}

#[test]
fn two_gpus_record_and_compute_what_one_does() {
    let Ok(second) = ComputeDevice::parse("cuda:1") else {
        println!("SKIPPED: one GPU only (cuda:1 cannot be opened); the two-GPU identity check needs two");
        return;
    };
    check(&[ComputeDevice::parse("cuda:0").unwrap(), second], "cuda:0 and cuda:1");
}
