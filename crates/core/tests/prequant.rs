//! Checkpoints stored pre-quantized (GPT-OSS' MXFP4 experts, FP8 with block scales `weight_scale_inv`) read
//! dequantized, against transformers 5.25's own dequantization: fixtures/vectors/prequant.safetensors and
//! fixtures/prequant/, written by tools/make_prequant_vectors.py (see its docstring for the cases and for the
//! rounding rules). Every value must have transformers' bits; a NaN (never in a real checkpoint) only has to be a
//! NaN, since torch writes its bits differently in its vectorised and scalar casts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

mod common;

use std::path::{Path, PathBuf};

use common::{assert_error, expect_err, temp_dir, write_valid, Tensor};
use moe_quant_core::{Checkpoint, Dtype, StoredForm, TensorView};
use safetensors::SafeTensors;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn stored(file: &SafeTensors, name: &str) -> Tensor {
    let view = file.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    Tensor::new(name, Dtype::from_safetensors(view.dtype()).unwrap(), view.shape(), view.data().to_vec())
}

fn renamed(tensor: &Tensor, name: &str) -> Tensor {
    Tensor::new(name, tensor.dtype, &tensor.shape, tensor.data.clone())
}

/// The first element where `ours` and `expected` (both of `dtype`) differ, a NaN matching any NaN.
fn first_difference(dtype: Dtype, ours: &[u8], expected: &[u8]) -> Option<(usize, f32, f32)> {
    assert_eq!(ours.len(), expected.len());
    let size = dtype.size();
    let (a, b) = (
        moe_quant_core::checkpoint::bytes_to_f32(dtype, ours),
        moe_quant_core::checkpoint::bytes_to_f32(dtype, expected),
    );
    (0..a.len()).find_map(|i| {
        let same =
            ours[i * size..(i + 1) * size] == expected[i * size..(i + 1) * size] || (a[i].is_nan() && b[i].is_nan());
        (!same).then_some((i, a[i], b[i]))
    })
}

fn assert_same(what: &str, dtype: Dtype, ours: &[u8], expected: &[u8]) {
    if let Some((index, a, b)) = first_difference(dtype, ours, expected) {
        panic!("{what}: element {index} is {a:e}, transformers has {b:e}");
    }
}

/// A one-file checkpoint of `tensors` with `config` as config.json.
fn checkpoint(dir: &Path, tensors: &[Tensor], config: serde_json::Value) -> Checkpoint {
    write_valid(&dir.join("model.safetensors"), tensors);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    Checkpoint::open(dir).unwrap()
}

#[test]
fn every_case_equals_transformers() {
    let bytes =
        std::fs::read(fixtures().join("vectors/prequant.safetensors")).expect("run tools/make_prequant_vectors.py");
    let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
    let about: serde_json::Value = serde_json::from_str(&metadata.metadata().as_ref().unwrap()["prequant"]).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let cases = about["cases"].as_object().unwrap();
    assert!(cases.len() >= 10, "{cases:?}");
    for (case, facts) in cases {
        let case = case.as_str();
        let tmp = temp_dir();
        let dtype = &facts["dtype"];
        let expected = stored(&file, &format!("{case}.expected"));
        if case.starts_with("mxfp4.") {
            let tensors = [
                renamed(&stored(&file, &format!("{case}.blocks")), "experts.gate_up_proj_blocks"),
                renamed(&stored(&file, &format!("{case}.scales")), "experts.gate_up_proj_scales"),
            ];
            let checkpoint = checkpoint(tmp.path(), &tensors, serde_json::json!({ "dtype": dtype }));
            let read = checkpoint.read("experts.gate_up_proj").unwrap();
            assert_eq!((read.dtype, &read.shape), (expected.dtype, &expected.shape), "{case}");
            assert_same(case, read.dtype, &read.data, &expected.data);
            let stride = expected.data.len() / expected.shape[0];
            for e in 0..expected.shape[0] {
                let slice = checkpoint.read_slice_first("experts.gate_up_proj", e).unwrap();
                assert_eq!(slice.shape, expected.shape[1..]);
                assert_same(
                    &format!("{case} expert {e}"),
                    read.dtype,
                    &slice.data,
                    &expected.data[e * stride..][..stride],
                );
            }
        } else {
            let block = &facts["block"];
            let tensors = [
                renamed(&stored(&file, &format!("{case}.weight")), "layer.weight"),
                renamed(&stored(&file, &format!("{case}.scale_inv")), "layer.weight_scale_inv"),
            ];
            let config = serde_json::json!({
                "dtype": dtype,
                "quantization_config": { "quant_method": "fp8", "weight_block_size": block },
            });
            let checkpoint = checkpoint(tmp.path(), &tensors, config);
            let read = checkpoint.read("layer.weight").unwrap();
            assert_eq!((read.dtype, &read.shape), (expected.dtype, &expected.shape), "{case}");
            assert_same(case, read.dtype, &read.data, &expected.data);
            assert!(!checkpoint.contains("layer.weight_scale_inv"), "{case}: the scales are consumed");
        }
    }
}

#[test]
fn tiny_gpt_oss_reads_what_transformers_loads() {
    let dir = fixtures().join("prequant/gpt_oss_mxfp4");
    let checkpoint = Checkpoint::open(&dir).unwrap();
    let bytes = std::fs::read(dir.join("dequantized.safetensors")).unwrap();
    let expected = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(expected.len(), 4);
    for (name, view) in expected.tensors() {
        let info = checkpoint.info(&name).unwrap();
        assert!(matches!(info.form, StoredForm::Mxfp4 { .. }), "{name}");
        assert_eq!((info.dtype, info.shape.as_slice()), (Dtype::BF16, view.shape()), "{name}");
        assert_same(&name, Dtype::BF16, &checkpoint.read(&name).unwrap().data, view.data());
        assert!(!checkpoint.contains(&format!("{name}_blocks")) && !checkpoint.contains(&format!("{name}_scales")));
    }
    // Everything else is read as stored.
    for info in checkpoint.tensors().iter().filter(|t| t.form == StoredForm::Plain) {
        assert!(checkpoint.stored_tensors().iter().any(|s| s.name == info.name && s.dtype == info.dtype));
    }
    assert_eq!(checkpoint.tensors().len() + 4, checkpoint.stored_tensors().len());
    // A read-ahead of the layer feeds both whole reads and one expert's slices.
    let name = "model.layers.1.mlp.experts.down_proj";
    let whole = TensorView::to_f32(&checkpoint.read(name).unwrap().view());
    checkpoint.prefetch(&["model.layers.1."]);
    let expert = checkpoint.read_slice_first(name, 3).unwrap();
    let stride = whole.len() / 4;
    assert_eq!(expert.to_f32(), whole[3 * stride..4 * stride]);
    assert_eq!(checkpoint.read(name).unwrap().to_f32(), whole);
}

#[test]
fn tiny_deepseek_fp8_lists_dequantized_weights() {
    let dir = fixtures().join("prequant/deepseek_v3_fp8");
    let checkpoint = Checkpoint::open(&dir).unwrap();
    let listing: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("dequantized.json")).unwrap()).unwrap();
    let tensors = listing["tensors"].as_object().unwrap();
    let names: Vec<&str> = checkpoint.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names.len(), tensors.len());
    for (name, expected) in tensors {
        let info = checkpoint.info(name).unwrap();
        assert_eq!(info.dtype.name(), expected["dtype"].as_str().unwrap(), "{name}");
        let shape: Vec<usize> = serde_json::from_value(expected["shape"].clone()).unwrap();
        assert_eq!(info.shape, shape, "{name}");
        assert_eq!(info.bytes(), checkpoint.read(name).unwrap().data.len(), "{name}");
    }
    let dense = checkpoint.info("model.layers.0.mlp.down_proj.weight").unwrap();
    assert_eq!(dense.form, StoredForm::Fp8Block { scale_inv: format!("{}_scale_inv", dense.name), block: [128, 128] });
    let norm = checkpoint.info("model.layers.0.input_layernorm.weight").unwrap();
    assert_eq!(norm.form, StoredForm::Plain);
}

#[test]
fn scales_that_do_not_fit_their_codes_are_refused() {
    let tmp = temp_dir();
    let fp8 = [
        Tensor::new("m.weight", Dtype::F8E4M3, &[200, 144], vec![0x38; 200 * 144]),
        Tensor::new("m.weight_scale_inv", Dtype::F32, &[1, 2], vec![0; 8]),
    ];
    write_valid(&tmp.path().join("model.safetensors"), &fp8);
    std::fs::write(tmp.path().join("config.json"), "{}").unwrap();
    assert_error(&expect_err(Checkpoint::open(tmp.path())), "E_TENSOR_SHAPE", &["m.weight", "[2, 2]", "128x128"]);

    let tmp = temp_dir();
    let config = serde_json::json!({ "quantization_config": { "weight_block_size": [128] } });
    std::fs::write(tmp.path().join("config.json"), config.to_string()).unwrap();
    write_valid(&tmp.path().join("model.safetensors"), &fp8);
    assert_error(&expect_err(Checkpoint::open(tmp.path())), "E_CONFIG_INVALID", &["weight_block_size"]);

    let tmp = temp_dir();
    let mxfp4 = [
        Tensor::new("e.gate_up_proj_blocks", Dtype::U8, &[2, 4, 1, 16], vec![0; 128]),
        Tensor::new("e.gate_up_proj_scales", Dtype::U8, &[2, 4, 2], vec![127; 16]),
    ];
    write_valid(&tmp.path().join("model.safetensors"), &mxfp4);
    assert_error(&expect_err(Checkpoint::open(tmp.path())), "E_TENSOR_SHAPE", &["e.gate_up_proj_blocks", "[2, 4, 1]"]);
}

#[test]
fn without_config_the_block_is_128_and_the_dtype_bf16() {
    let tmp = temp_dir();
    // Two row blocks: rows 0..128 scaled by 2, rows 128..130 by 3 (E4M3 0x38 is 1.0).
    let tensors = [
        Tensor::new("m.weight", Dtype::F8E4M3, &[130, 4], vec![0x38; 130 * 4]),
        Tensor::new(
            "m.weight_scale_inv",
            Dtype::F32,
            &[2, 1],
            [2f32, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
    ];
    write_valid(&tmp.path().join("model.safetensors"), &tensors);
    let checkpoint = Checkpoint::open(tmp.path()).unwrap();
    let read = checkpoint.read("m.weight").unwrap();
    assert_eq!(read.dtype, Dtype::BF16);
    let values = read.to_f32();
    assert_eq!((values[127 * 4], values[128 * 4]), (2.0, 3.0));
}
