//! The gated activations of experts and dense MLPs, `act(gate) · up`, against transformers' `ACT2FN` (silu, the
//! exact GELU, and its tanh approximation as `gelu_pytorch_tanh` and `gelu_new`): fixtures/vectors/
//! activations.safetensors, written by tools/make_activation_vectors.py. Each activation runs through a dense MLP
//! and through an MoE block of one expert whose projections only move values (identity blocks and zeros, exact in
//! any dtype), in f32 and (`gelu`, `gelu_pytorch_tanh`) in bf16.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{temp_dir, write_valid};
use moe_quant_core::model::blocks::mlp::Mlp;
use moe_quant_core::model::blocks::moe::MoeBlock;
use moe_quant_core::model::blocks::norm::NormStyle;
use moe_quant_core::model::descriptor::{DenseMlpDescriptor, MoeDescriptor, NormKind};
use moe_quant_core::model::loader::WeightLoader;
use moe_quant_core::model::observe::Observers;
use moe_quant_core::{Checkpoint, Dtype};
use safetensors::SafeTensors;

/// transformers' names and the activation the descriptor calls them.
const CASES: [(&str, &str); 4] =
    [("silu", "silu"), ("gelu", "gelu"), ("gelu_pytorch_tanh", "gelu_tanh"), ("gelu_new", "gelu_tanh")];

fn vectors() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/vectors/activations.safetensors");
    std::fs::read(path).unwrap()
}

/// The vector `name` as an f32 tensor `[1, N]` in `dtype` (the bf16 vectors are stored as bf16).
fn vector(file: &SafeTensors, name: &str, dtype: DType) -> Tensor {
    let view = file.tensor(name).unwrap();
    let stored = if name.ends_with(".bf16") { DType::BF16 } else { DType::F32 };
    let n = view.shape()[0];
    Tensor::from_raw_buffer(view.data(), stored, &[1, n], &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

/// bf16 `[rows, cols]` whose block at (`row`, `col`) is the identity of size `n`, zeros elsewhere.
fn identity_block(name: &str, rows: usize, cols: usize, at: (usize, usize), n: usize) -> common::Tensor {
    let mut values = vec![0u16; rows * cols];
    for i in 0..n {
        values[(at.0 + i) * cols + at.1 + i] = 0x3f80; // 1.0 in bf16
    }
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    common::Tensor::new(name, Dtype::BF16, &[rows, cols], bytes)
}

/// A checkpoint in `dir` holding a dense MLP (`mlp.*`, input `[gate | up]` of `2n`, intermediate `n`, down the
/// identity) and the fused experts of one MoE layer of one expert with the same projections (`moe.*`).
fn checkpoint(dir: &Path, n: usize) -> Checkpoint {
    let mut experts_gate_up = identity_block("moe.experts.gate_up_proj", 2 * n, 2 * n, (0, 0), 2 * n);
    experts_gate_up.shape = vec![1, 2 * n, 2 * n];
    let mut experts_down = identity_block("moe.experts.down_proj", 2 * n, n, (0, 0), n);
    experts_down.shape = vec![1, 2 * n, n];
    let tensors = [
        identity_block("mlp.gate_proj.weight", n, 2 * n, (0, 0), n),
        identity_block("mlp.up_proj.weight", n, 2 * n, (0, n), n),
        identity_block("mlp.down_proj.weight", n, n, (0, 0), n),
        experts_gate_up,
        experts_down,
        common::Tensor::new("moe.router.weight", Dtype::BF16, &[1, 2 * n], vec![0; 4 * n]),
    ];
    write_valid(&dir.join("model.safetensors"), &tensors);
    std::fs::write(dir.join("config.json"), "{}").unwrap();
    Checkpoint::open(dir).unwrap()
}

fn mlp_descriptor(activation: &str) -> DenseMlpDescriptor {
    let json = serde_json::json!({
        "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj", "activation": activation,
    });
    serde_json::from_value(json).unwrap()
}

fn moe_descriptor(activation: &str, n: usize) -> MoeDescriptor {
    let json = serde_json::json!({
        "block": "moe", "layout": "fused", "experts": 1, "hidden": 2 * n, "intermediate": n,
        "gate_up": "moe.experts.gate_up_proj", "down": "moe.experts.down_proj", "top_k": 1,
        "activation": activation, "router": { "kind": "softmax_topk_norm", "weight": "moe.router.weight" },
    });
    serde_json::from_value(json).unwrap()
}

/// The largest difference between `got` and `want` in units of `want`'s magnitude, or of `floor` where `want` is
/// smaller (near GELU's and silu's negative tail, `1 + erf` and `1 + tanh` cancel in f32, in torch as here).
fn worst_relative(got: &Tensor, want: &Tensor, floor: f32) -> f32 {
    let got = got.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let want = want.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(got.len(), want.len());
    got.iter().zip(&want).map(|(g, w)| (g - w).abs() / w.abs().max(floor)).fold(0.0, f32::max)
}

#[test]
fn gated_activations_of_mlps_and_experts_equal_transformers() {
    let bytes = vectors();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let n = file.tensor("gate").unwrap().shape()[0];
    let dir = temp_dir();
    let checkpoint = checkpoint(dir.path(), n);
    // f32: erf and tanh are computed by other code than torch's (the exact GELU differs by up to 3e-6 where
    // `1 + erf` cancels), ten times below the smallest difference between two of the activations (the test
    // below); bf16: one bf16 ulp.
    for (dtype, suffix, floor, tolerance) in [(DType::F32, "", 1.0, 1e-5f32), (DType::BF16, ".bf16", 1e-2, 1.0 / 128.0)]
    {
        let loader = WeightLoader::with_dtype(&checkpoint, Device::Cpu, dtype);
        let style = NormStyle { eps: 1e-6, offset: 0.0, kind: NormKind::Rms, f32_weight: false };
        let xs = Tensor::cat(
            &[vector(&file, &format!("gate{suffix}"), dtype), vector(&file, &format!("up{suffix}"), dtype)],
            1,
        )
        .unwrap()
        .reshape((1, 1, 2 * n))
        .unwrap();
        for (transformers, ours) in CASES {
            // In bf16 silu stays candle's own (rounded at each step), and transformers' `gelu_new` is a Python
            // formula rounded to bf16 at each of its steps: only `gelu` and `gelu_pytorch_tanh` are torch kernels
            // computed in f32 and rounded once, as the GELUs are here.
            if dtype == DType::BF16 && (ours == "silu" || transformers == "gelu_new") {
                continue;
            }
            let want = vector(&file, &format!("{transformers}{suffix}"), DType::F32);
            let mlp = Mlp::load(&loader, &mlp_descriptor(ours)).unwrap();
            let got = mlp.forward(&xs, &mut Observers::default()).unwrap();
            assert_eq!(got.dtype(), dtype);
            let worst = worst_relative(&got, &want, floor);
            assert!(worst <= tolerance, "{transformers} ({dtype:?}): the MLP is off by {worst:e} relative");
            let moe = MoeBlock::load(&loader, &moe_descriptor(ours, n), style, false).unwrap();
            let got = moe.forward(&xs, &mut Observers::default()).unwrap().narrow(2, 0, n).unwrap();
            let worst = worst_relative(&got, &want, floor);
            assert!(worst <= tolerance, "{transformers} ({dtype:?}): the experts are off by {worst:e} relative");
        }
    }
}

#[test]
fn the_activations_differ_where_transformers_says_they_do() {
    // The oracle tells the three apart: an activation swapped for another would not pass the test above.
    let bytes = vectors();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let get = |name: &str| vector(&file, name, DType::F32);
    assert!(worst_relative(&get("gelu"), &get("gelu_pytorch_tanh"), 1.0) > 1e-4);
    assert!(worst_relative(&get("gelu"), &get("silu"), 1.0) > 1e-1);
    assert!(worst_relative(&get("gelu_new"), &get("gelu_pytorch_tanh"), 1.0) < 1e-6);
}
