//! The forward in Rust alone, on the descriptors TS builds (committed in fixtures/descriptors): f32 logits
//! against transformers' references, and the bf16 compute path (what the GPU runs) within bf16 tolerance.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

mod common;

use candle_core::{DType, Device};
use common::forward::{logits, reference, relative_l2, DESCRIBED};
use moe_quant_core::device::ComputeDevice;

#[test]
fn f32_logits_match_transformers() {
    for fixture in DESCRIBED {
        let error = relative_l2(&logits(fixture, ComputeDevice::cpu()), &reference(fixture).1);
        assert!(error < 1e-4, "{fixture}: relative L2 {error}");
    }
}

#[test]
fn bf16_compute_agrees_within_bf16_tolerance() {
    for fixture in DESCRIBED {
        let bf16 = ComputeDevice { device: Device::Cpu, dtype: DType::BF16 };
        let error = relative_l2(&logits(fixture, bf16), &reference(fixture).1);
        // bf16 has 8 bits of mantissa (relative step 2^-8 ≈ 4e-3); two layers stay well inside 3e-2.
        assert!(error < 3e-2, "{fixture}: relative L2 {error}");
        assert!(error > 0.0, "{fixture}: bf16 should not be bit-identical to f32");
    }
}
