//! The forward in Rust alone, on the descriptors TS builds (committed in fixtures/descriptors): f32 logits
//! against transformers' references, and the bf16 compute path (what the GPU runs) within bf16 tolerance.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use candle_core::{DType, Device};
use moe_quant_core::calib::data::Batch;
use moe_quant_core::device::ComputeDevice;
use moe_quant_core::model::{run_forward, ForwardOptions, ModelDescriptor};
use moe_quant_core::Checkpoint;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

const DESCRIBED: [&str; 6] =
    ["qwen3_moe/hub", "qwen2_moe/fused", "mixtral/hub", "deepseek_v3/hub", "glm4_moe/fused", "granitemoe/hub"];

/// Reference ids `[2, 12]` and logits of a fixture.
fn reference(fixture: &str) -> (Batch, Vec<f32>) {
    let bytes = std::fs::read(fixtures().join(fixture).join("reference.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let ids = st.tensor("input_ids").unwrap();
    let (rows, seq_len) = (ids.shape()[0], ids.shape()[1]);
    let ids = ids.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32).collect();
    let logits = st
        .tensor("logits")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (Batch { ids, rows, seq_len }, logits)
}

fn logits(fixture: &str, compute: ComputeDevice) -> Vec<f32> {
    let name = format!("{}.json", fixture.replace('/', "_"));
    let text = std::fs::read_to_string(fixtures().join("descriptors").join(name)).unwrap();
    let descriptor: ModelDescriptor = serde_json::from_str(&text).unwrap();
    let checkpoint = Checkpoint::open(fixtures().join(fixture)).unwrap();
    let (batch, _) = reference(fixture);
    let options = ForwardOptions { logits: true, all_experts_stats: false, device: Some(compute) };
    let mut result =
        run_forward(&checkpoint, &descriptor, &[batch], &options, &AtomicBool::new(false), &mut |_| {}).unwrap();
    result.logits.pop().unwrap()
}

fn relative_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (num / den).sqrt()
}

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
