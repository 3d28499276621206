//! Running the forward on the committed fixture descriptors and comparing logits with transformers'.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use moe_quant_core::calib::data::Batch;
use moe_quant_core::device::ComputeDevice;
use moe_quant_core::model::{run_forward, ForwardOptions, ForwardResult, ModelDescriptor};
use moe_quant_core::Checkpoint;

/// Fixtures whose descriptors are committed in fixtures/descriptors (tools/write_descriptors.mjs).
pub const DESCRIBED: &[&str] = &[
    "qwen3_moe/hub",
    "qwen2_moe/fused",
    "mixtral/hub",
    "deepseek_v3/hub",
    "glm4_moe/fused",
    "granitemoe/hub",
    "gpt_oss/hub",
    "llama4_text/hub",
    // Gated DeltaNet layers: projections grouped by key head (Qwen3-Next) and split (Qwen3.5).
    "families/qwen3_next/hub",
    "families/qwen3_5_moe_text/fused",
    // Mamba-2 layers: Granite-4.0-H (attention without rope) and Nemotron-H (one mixer per layer).
    "families/granitemoehybrid/hub",
    "families/nemotron_h/hub",
    // MLA restricted by DeepSeek sparse attention: DeepSeek-V3.2, and GLM-5 with a layer reusing another's keys.
    "families/deepseek_v32/hub",
    "families/glm_moe_dsa/fused",
    // Mamba layers with dt/B/C norms and attention without rope (Jamba).
    "families/jamba/hub",
    // Gated short convolutions and attention with q/k norms (LFM2-MoE).
    "families/lfm2_moe/hub",
    // Lightning attention, softmax attention, the residual taken after the norm and weighted (MiniMax-Text-01).
    "families/minimax/hub",
    // Two MLA and two MLP sublayers per layer with the MoE as a shortcut, zero-computation experts (LongCat-Flash).
    "families/longcat_flash/hub",
    // Sandwich norms, attention by layer type (keys as values, proportional rope), a dense MLP beside the experts,
    // a scaled router, GELU (Gemma 4).
    "families/gemma4_text/hub",
    // Kimi Delta Attention (a decay per key channel) and MLA without rope (Kimi-Linear).
    "families/kimi_linear/hub",
];

/// Described fixtures whose bf16 logits are not a measure of the forward: bf16 flips the choices of their tiny
/// random models (GPT-OSS's routers; DeepSeek-V3.2's indexer keys, scores 1e-3 apart at the top-k boundary), so
/// that transformers itself, run in bf16, is 9e-2 and 6e-2 away from its own f32 logits; Gemma 4's tiny model
/// (q·k unscaled, logits capped at 0.25) likewise, 2e-1.
pub const BF16_UNSTABLE: &[&str] = &["gpt_oss/hub", "families/deepseek_v32/hub", "families/gemma4_text/hub"];

/// The fixtures folder (MOE_QUANT_FIXTURES overrides it, for test binaries run elsewhere).
pub fn fixtures() -> PathBuf {
    std::env::var_os("MOE_QUANT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures"))
}

/// Reference ids `[2, 12]` and transformers' f32 logits of a fixture.
pub fn reference(fixture: &str) -> (Batch, Vec<f32>) {
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

/// Our logits of a fixture's reference ids, computed on `compute`.
pub fn logits(fixture: &str, compute: ComputeDevice) -> Vec<f32> {
    edited_logits(fixture, compute, |_| {})
}

/// A fixture's committed descriptor, as JSON.
fn descriptor_json(fixture: &str) -> serde_json::Value {
    let name = format!("{}.json", fixture.replace('/', "_"));
    let text = std::fs::read_to_string(fixtures().join("descriptors").join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A fixture's committed descriptor.
pub fn described(fixture: &str) -> ModelDescriptor {
    serde_json::from_value(descriptor_json(fixture)).unwrap()
}

/// Our logits of a fixture's reference ids with its committed descriptor changed by `edit`.
pub fn edited_logits(fixture: &str, compute: ComputeDevice, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<f32> {
    let mut json = descriptor_json(fixture);
    edit(&mut json);
    let descriptor: ModelDescriptor = serde_json::from_value(json).unwrap();
    let checkpoint = Checkpoint::open(fixtures().join(fixture)).unwrap();
    let (batch, _) = reference(fixture);
    let options =
        ForwardOptions { logits: true, all_experts_stats: false, devices: vec![compute], load_in_turn: false };
    let mut result =
        run_forward(&checkpoint, &descriptor, &[batch], &options, &AtomicBool::new(false), &mut |_| {}).unwrap();
    result.logits.pop().unwrap()
}

/// The forward of a fixture over `batches`, split over `devices` (one device: the ordinary run), with logits.
pub fn forward_on(fixture: &str, batches: &[Batch], devices: Vec<ComputeDevice>) -> ForwardResult {
    forward_with(
        fixture,
        batches,
        ForwardOptions { logits: true, all_experts_stats: false, devices, load_in_turn: false },
    )
}

/// As [`forward_on`], each layer loaded when its turn comes (no copies to the GPUs ahead of it).
pub fn forward_in_turn(fixture: &str, batches: &[Batch], devices: Vec<ComputeDevice>) -> ForwardResult {
    forward_with(
        fixture,
        batches,
        ForwardOptions { logits: true, all_experts_stats: false, devices, load_in_turn: true },
    )
}

fn forward_with(fixture: &str, batches: &[Batch], options: ForwardOptions) -> ForwardResult {
    let descriptor = described(fixture);
    let checkpoint = Checkpoint::open(fixtures().join(fixture)).unwrap();
    run_forward(&checkpoint, &descriptor, batches, &options, &AtomicBool::new(false), &mut |_| {}).unwrap()
}

/// Four batches from a fixture's reference ids: each row whole, then each row's first half.
pub fn four_batches(fixture: &str) -> Vec<Batch> {
    let (batch, _) = reference(fixture);
    let half = batch.seq_len / 2;
    let row = |r: usize, len: usize| Batch { ids: batch.row(r).unwrap()[..len].to_vec(), rows: 1, seq_len: len };
    let whole = (0..batch.rows).map(|r| row(r, batch.seq_len));
    whole.chain((0..batch.rows).map(|r| row(r, half))).collect()
}

/// ‖a − b‖ / ‖b‖.
pub fn relative_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (num / den).sqrt()
}
