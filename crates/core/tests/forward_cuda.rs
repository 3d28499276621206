//! The forward on the GPU (bf16 with f32 accumulation) against the CPU f32 path and transformers'
//! references, on the committed descriptors. Built and run only with the `cuda` feature on a GPU machine.

#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

mod common;

use common::forward::{logits, reference, relative_l2, BF16_UNSTABLE, DESCRIBED};
use moe_quant_core::device::ComputeDevice;

#[test]
fn gpu_logits_agree_with_the_cpu_path_within_bf16_tolerance() {
    for fixture in DESCRIBED.iter().filter(|f| !BF16_UNSTABLE.contains(f)) {
        let gpu = logits(fixture, ComputeDevice::parse("cuda:0").unwrap());
        let cpu = logits(fixture, ComputeDevice::cpu());
        let vs_cpu = relative_l2(&gpu, &cpu);
        let vs_transformers = relative_l2(&gpu, &reference(fixture).1);
        println!("{fixture}: GPU bf16 vs CPU f32 {vs_cpu:.3e}, vs transformers f32 {vs_transformers:.3e}");
        assert!(vs_cpu < 3e-2 && vs_transformers < 3e-2, "{fixture}: {vs_cpu} / {vs_transformers}");
    }
}
