//! The forward on the GPU (bf16 with f32 accumulation) against the CPU f32 path and transformers'
//! references, on the committed descriptors. Built and run only with the `cuda` feature on a GPU machine.

#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use moe_quant_core::calib::data::Batch;
use moe_quant_core::device::ComputeDevice;
use moe_quant_core::model::{run_forward, ForwardOptions, ModelDescriptor};
use moe_quant_core::Checkpoint;

fn fixtures() -> PathBuf {
    std::env::var_os("MOE_QUANT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures"))
}

const DESCRIBED: [&str; 6] =
    ["qwen3_moe/hub", "qwen2_moe/fused", "mixtral/hub", "deepseek_v3/hub", "glm4_moe/fused", "granitemoe/hub"];

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
    let num: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (num / den).sqrt()
}

#[test]
fn gpu_logits_agree_with_the_cpu_path_within_bf16_tolerance() {
    for fixture in DESCRIBED {
        let gpu = logits(fixture, ComputeDevice::parse("cuda:0").unwrap());
        let cpu = logits(fixture, ComputeDevice::cpu());
        let vs_cpu = relative_l2(&gpu, &cpu);
        let vs_transformers = relative_l2(&gpu, &reference(fixture).1);
        println!("{fixture}: GPU bf16 vs CPU f32 {vs_cpu:.3e}, vs transformers f32 {vs_transformers:.3e}");
        assert!(vs_cpu < 3e-2 && vs_transformers < 3e-2, "{fixture}: {vs_cpu} / {vs_transformers}");
    }
}
