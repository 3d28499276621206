//! Reading quantized checkpoints: ModelOpt's own NVFP4 and FP8 exports of fixtures/qwen3_moe/hub_f32
//! (fixtures/golden, written by tools/make_golden.py) dequantize close to the source weights and exactly onto
//! the scaled grids, and `WeightLoader` returns every quantized weight dequantized with its logical shape while
//! reading everything else as before.

// clippy.toml's allow-*-in-tests covers `#[test]` functions only; the helpers here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use candle_core::Device;
use common::{temp_dir, write_valid, Tensor};
use moe_quant_core::formats::{stored_format, FormatName, Fp8, Nvfp4, QuantFormat, WeightInput};
use moe_quant_core::model::loader::WeightLoader;
use moe_quant_core::numerics::e2m1::E2M1_GRID;
use moe_quant_core::numerics::e4m3::{e4m3_to_f32, f32_to_e4m3};
use moe_quant_core::{Checkpoint, Dtype};

fn fixture(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(relative)
}

fn values(loader: &WeightLoader, name: &str) -> (Vec<usize>, Vec<f32>) {
    let tensor = loader.tensor(name).unwrap();
    (tensor.dims().to_vec(), tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap())
}

fn scalar(checkpoint: &Checkpoint, name: &str) -> f32 {
    let view = checkpoint.read(name).unwrap();
    assert_eq!((view.dtype, view.shape.len()), (Dtype::F32, 0), "{name}");
    view.to_f32()[0]
}

/// The quantized weights of a golden export, by name.
fn quantized_weights(checkpoint: &Checkpoint) -> Vec<String> {
    checkpoint
        .tensors()
        .iter()
        .filter(|t| stored_format(checkpoint, &t.name).unwrap().is_some())
        .map(|t| t.name.clone())
        .collect()
}

/// Σ(a − b)² / Σ b².
fn relative_mse(got: &[f32], want: &[f32]) -> f64 {
    let error: f64 = got.iter().zip(want).map(|(a, b)| f64::from(a - b).powi(2)).sum();
    let energy: f64 = want.iter().map(|b| f64::from(*b).powi(2)).sum();
    error / energy
}

#[test]
fn golden_nvfp4_dequantizes_close_to_the_source_and_onto_the_grid() {
    let source = Checkpoint::open(fixture("qwen3_moe/hub_f32")).unwrap();
    let golden = Checkpoint::open(fixture("golden/qwen3_moe_hub_f32/nvfp4")).unwrap();
    let (source_loader, loader) = (WeightLoader::new(&source, Device::Cpu), WeightLoader::new(&golden, Device::Cpu));
    let names = quantized_weights(&golden);
    // 2 layers × (4 attention projections + 8 experts × 3).
    assert_eq!(names.len(), 2 * (4 + 8 * 3));
    let mut worst = 0f64;
    for name in &names {
        let module = name.strip_suffix(".weight").unwrap();
        let (shape, got) = values(&loader, name);
        let (source_shape, want) = values(&source_loader, name);
        assert_eq!(shape, source_shape, "{name}: logical shape");
        let stored = golden.info(name).unwrap();
        assert_eq!((stored.dtype, stored.shape[1] * 2), (Dtype::U8, shape[1]), "{name}");
        worst = worst.max(relative_mse(&got, &want));

        let scale_2 = scalar(&golden, &format!("{module}.weight_scale_2"));
        let block_scales = golden.read(&format!("{module}.weight_scale")).unwrap();
        let blocks = got.chunks_exact(16).zip(block_scales.data.iter());
        for (index, (block, &scale_byte)) in blocks.enumerate() {
            let block_scale = e4m3_to_f32(scale_byte) * scale_2;
            for &v in block {
                assert!(
                    E2M1_GRID.iter().any(|g| g * block_scale == v.abs()),
                    "{name} block {index}: {v} is not on the grid scaled by {block_scale}"
                );
            }
        }
    }
    // Measured 0.0098 (NVFP4 of Gaussian-like weights is ~1% relative MSE).
    assert!(worst > 0.0 && worst < 0.02, "worst relative MSE {worst}");
}

#[test]
fn golden_fp8_dequantizes_close_to_the_source_and_onto_the_grid() {
    let source = Checkpoint::open(fixture("qwen3_moe/hub_f32")).unwrap();
    let golden = Checkpoint::open(fixture("golden/qwen3_moe_hub_f32/fp8")).unwrap();
    let (source_loader, loader) = (WeightLoader::new(&source, Device::Cpu), WeightLoader::new(&golden, Device::Cpu));
    let names = quantized_weights(&golden);
    assert_eq!(names.len(), 2 * (4 + 8 * 3));
    let mut worst = 0f64;
    for name in &names {
        let module = name.strip_suffix(".weight").unwrap();
        let (shape, got) = values(&loader, name);
        let (source_shape, want) = values(&source_loader, name);
        assert_eq!(shape, source_shape, "{name}");
        worst = worst.max(relative_mse(&got, &want));
        let scale = scalar(&golden, &format!("{module}.weight_scale"));
        for &v in &got {
            assert_eq!(e4m3_to_f32(f32_to_e4m3(v / scale)) * scale, v, "{name}: {v} is not an E4M3 value × {scale}");
        }
    }
    // Measured 0.0007 (E4M3 keeps 3 mantissa bits).
    assert!(worst > 0.0 && worst < 0.002, "worst relative MSE {worst}");
}

#[test]
fn golden_unquantized_tensors_read_as_stored() {
    let golden = Checkpoint::open(fixture("golden/qwen3_moe_hub_f32/nvfp4")).unwrap();
    let source = Checkpoint::open(fixture("qwen3_moe/hub_f32")).unwrap();
    let (loader, source_loader) = (WeightLoader::new(&golden, Device::Cpu), WeightLoader::new(&source, Device::Cpu));
    for name in ["model.embed_tokens.weight", "lm_head.weight", "model.layers.1.mlp.gate.weight", "model.norm.weight"] {
        assert!(stored_format(&golden, name).unwrap().is_none(), "{name}");
        assert_eq!(values(&loader, name), values(&source_loader, name), "{name}");
    }
    // Scale tensors themselves are plain tensors.
    let (shape, _) = values(&loader, "model.layers.0.self_attn.q_proj.weight_scale");
    assert_eq!(shape, [64, 4]);
    let q_proj = loader.tensor_shaped("model.layers.0.self_attn.q_proj.weight", &[64, 64]).unwrap();
    assert_eq!(q_proj.dims(), [64, 64]);
    let err = loader.tensor_shaped("model.layers.0.self_attn.q_proj.weight", &[64, 32]).unwrap_err();
    assert_eq!(err.code(), "E_TENSOR_SHAPE");
}

#[test]
fn weight_loader_dequantizes_what_the_formats_write() {
    let dir = temp_dir();
    let weights: Vec<f32> = (0..32 * 64).map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0).collect();
    let input = WeightInput::new("w", Dtype::F32, &[32, 64], &weights).unwrap();
    let mut tensors = Vec::new();
    for (module, format) in [("nvfp4", &Nvfp4 as &dyn QuantFormat), ("fp8", &Fp8::default())] {
        for t in format.quantize(&input, 50.0 / 64.0).unwrap().tensors {
            tensors.push(Tensor::new(&format!("{module}.{}", t.suffix), t.dtype, &t.shape, t.data));
        }
    }
    // Look-alikes that must read as stored: U8 without scales, F8_E4M3 without a scale, and a U8 weight whose
    // weight_scale is not E4M3.
    tensors.push(Tensor::new("plain_u8.weight", Dtype::U8, &[2, 2], vec![1, 2, 3, 250]));
    tensors.push(Tensor::new("plain_f8.weight", Dtype::F8E4M3, &[2], vec![0x38, 0xC0]));
    tensors.push(Tensor::new("odd.weight", Dtype::U8, &[1, 2], vec![7, 8]));
    tensors.push(Tensor::new("odd.weight_scale", Dtype::F32, &[], 2f32.to_le_bytes().to_vec()));
    tensors.push(Tensor::new("odd.weight_scale_2", Dtype::F32, &[], 2f32.to_le_bytes().to_vec()));
    write_valid(&dir.path().join("model.safetensors"), &tensors);

    let checkpoint = Checkpoint::open(dir.path()).unwrap();
    let loader = WeightLoader::new(&checkpoint, Device::Cpu);
    let stored = |name: &str| stored_format(&checkpoint, name).unwrap().map(|format| format.name());
    assert_eq!(stored("nvfp4.weight"), Some(FormatName::Nvfp4));
    assert_eq!(stored("fp8.weight"), Some(FormatName::Fp8));
    for module in ["nvfp4", "fp8"] {
        let (shape, got) = values(&loader, &format!("{module}.weight"));
        assert_eq!(shape, [32, 64], "{module}");
        let error = relative_mse(&got, &weights);
        assert!(error > 0.0 && error < 0.02, "{module}: relative MSE {error}");
    }
    assert_eq!(values(&loader, "plain_u8.weight"), (vec![2, 2], vec![1.0, 2.0, 3.0, 250.0]));
    assert_eq!(values(&loader, "plain_f8.weight"), (vec![2], vec![1.0, -2.0]));
    assert_eq!(values(&loader, "odd.weight"), (vec![1, 2], vec![7.0, 8.0]));
    // A weight_scale read on its own is what is stored.
    assert_eq!(values(&loader, "fp8.weight_scale").0, Vec::<usize>::new());
}

#[test]
fn malformed_scales_name_the_tensor() {
    let dir = temp_dir();
    write_valid(
        &dir.path().join("model.safetensors"),
        &[
            Tensor::new("layer.w.weight", Dtype::U8, &[2, 8], vec![0; 16]),
            Tensor::new("layer.w.weight_scale", Dtype::F8E4M3, &[2, 2], vec![0x38; 4]),
            Tensor::new("layer.w.weight_scale_2", Dtype::F32, &[], 1f32.to_le_bytes().to_vec()),
            Tensor::new("fp8.weight", Dtype::F8E4M3, &[2, 2], vec![0x38; 4]),
            Tensor::new("fp8.weight_scale", Dtype::F32, &[3], vec![0; 12]),
        ],
    );
    let checkpoint = Checkpoint::open(dir.path()).unwrap();
    let loader = WeightLoader::new(&checkpoint, Device::Cpu);
    for name in ["layer.w.weight", "fp8.weight"] {
        let err = loader.tensor(name).unwrap_err();
        assert_eq!(err.code(), "E_TENSOR_SHAPE", "{err}");
        assert!(err.to_string().contains(name.trim_end_matches(".weight")), "{err}");
    }
}
