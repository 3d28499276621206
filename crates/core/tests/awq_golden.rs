//! AWQ against ModelOpt 0.47's own INT4_AWQ (W4A16_AWQ) and W4A8_AWQ exports of a dense Qwen3
//! (fixtures/golden/awq_qwen3, written by tools/make_awq_golden.py). Given the statistics ModelOpt's search kept
//! (each linear's act_scale and best alpha, and W4A8's per-channel input maxima), everything AWQ derives from them
//! must be ModelOpt's byte for byte: the weight scale per channel, the smoothing, `pre_quant_scale`, the smoothed
//! weights, the q/k/v and gate/up averages re-smoothing each weight and folded into the norms, the INT4 codes and
//! block scales, and W4A8's FP8 weight and input scales.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use moe_quant_core::awq::{
    average, best_alpha, fold_into_norm, resmooth, smoothed_input_amax, smoothing, weight_scale, Smoothing, ALPHAS,
};
use moe_quant_core::formats::{Int4Awq, WeightInput, INT4_BLOCK};
use moe_quant_core::{Checkpoint, Dtype};

fn golden(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/golden/awq_qwen3").join(relative)
}

struct Stats {
    act_scale: Vec<f32>,
    alpha: f32,
    channel_amax: Option<Vec<f32>>,
}

fn stats(format: &str) -> BTreeMap<String, Stats> {
    let text = std::fs::read_to_string(golden(&format!("{format}/awq.json"))).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
    };
    json["modules"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, entry)| {
            assert_eq!(entry["enabled"], true, "{name}");
            let stats = Stats {
                act_scale: floats(&entry["act_scale"]),
                alpha: entry["best_alpha"].as_f64().unwrap() as f32,
                channel_amax: entry.get("channel_amax").map(floats),
            };
            (name.clone(), stats)
        })
        .collect()
}

fn f32s(checkpoint: &Checkpoint, name: &str) -> (Vec<usize>, Vec<f32>) {
    let view = checkpoint.read(name).unwrap();
    (view.shape.clone(), view.to_f32())
}

/// The groups of linears reading one input (with the norm that produces it) and the linears alone, per layer.
fn groups(layer: usize) -> Vec<(Vec<String>, Option<String>)> {
    let p = format!("model.layers.{layer}.");
    let names = |leaves: &[&str], parent: &str| leaves.iter().map(|l| format!("{p}{parent}.{l}")).collect::<Vec<_>>();
    vec![
        (names(&["q_proj", "k_proj", "v_proj"], "self_attn"), Some(format!("{p}input_layernorm.weight"))),
        (names(&["o_proj"], "self_attn"), None),
        (names(&["gate_proj", "up_proj"], "mlp"), Some(format!("{p}post_attention_layernorm.weight"))),
        (names(&["down_proj"], "mlp"), None),
    ]
}

/// Compares one tensor of the export; returns whether it is identical.
fn same(export: &Checkpoint, name: &str, dtype: Dtype, shape: &[usize], data: &[u8], mismatches: &mut Vec<String>) {
    let want = export.read(name).unwrap_or_else(|_| panic!("{name} is not in the export"));
    if want.dtype != dtype || want.shape != shape || &want.data[..] != data {
        mismatches.push(format!("{name}: {:?} {:?} exported, {dtype:?} {shape:?} made", want.dtype, want.shape));
    }
}

fn check(format_dir: &str, fp8_activations: bool) {
    let source = Checkpoint::open(golden("source")).unwrap();
    let export = Checkpoint::open(golden(format_dir)).unwrap();
    let stats = stats(format_dir);
    let format = Int4Awq { fp8_activations };
    let bytes = |values: &[f32]| values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    let mut mismatches = Vec::new();
    let mut compared = 0;
    for layer in 0..2 {
        for (modules, norm) in groups(layer) {
            // Each linear smoothed by its own search's result.
            let mut weights = Vec::new();
            let mut scales = Vec::new();
            let mut smoothings = Vec::new();
            for module in &modules {
                let s = &stats[module];
                let (shape, mut values) = f32s(&source, &format!("{module}.weight"));
                let wscale = weight_scale(&values, [shape[0], shape[1]], INT4_BLOCK);
                let smoothing = Smoothing::from_scale(&smoothing(&s.act_scale, &wscale, s.alpha));
                smoothing.smooth(&mut values);
                weights.push((shape, values));
                scales.push(smoothing.pre_quant_scale());
                smoothings.push(smoothing);
            }
            // The group's mean, each weight re-smoothed to it.
            let refs: Vec<&[f32]> = scales.iter().map(Vec::as_slice).collect();
            let avg = average(&refs);
            for ((_, values), own) in weights.iter_mut().zip(&scales) {
                resmooth(values, own, &avg);
            }
            let weight_amax = weights.iter().flat_map(|(_, v)| v.iter()).fold(0.0f32, |m, v| m.max(v.abs()));
            // W4A8: each linear's input max smoothed by its own smoothing; the group's largest.
            let input_amax = modules.iter().zip(&smoothings).fold(0.0f32, |m, (module, own)| {
                let channel = stats[module].channel_amax.as_ref().map_or(&[][..], Vec::as_slice);
                m.max(smoothed_input_amax(channel, own))
            });
            match &norm {
                Some(norm) => {
                    let (shape, mut values) = f32s(&source, norm);
                    fold_into_norm(&mut values, &avg, false);
                    same(
                        &export,
                        norm,
                        Dtype::BF16,
                        &shape,
                        &moe_quant_core::awq::bf16_bytes(&values),
                        &mut mismatches,
                    );
                }
                None => {
                    let name = format!("{}.pre_quant_scale", modules[0]);
                    same(
                        &export,
                        &name,
                        Dtype::BF16,
                        &[avg.len()],
                        &moe_quant_core::awq::bf16_bytes(&avg),
                        &mut mismatches,
                    );
                }
            }
            for (module, (shape, values)) in modules.iter().zip(&weights) {
                let name = format!("{module}.weight");
                let weight = WeightInput::new(&name, Dtype::BF16, shape, values).unwrap();
                for tensor in format.quantize(&weight, weight_amax).unwrap().tensors {
                    same(
                        &export,
                        &format!("{module}.{}", tensor.suffix),
                        tensor.dtype,
                        &tensor.shape,
                        &tensor.data,
                        &mut mismatches,
                    );
                    compared += 1;
                }
                if fp8_activations {
                    let scale = format.input_scale(input_amax);
                    same(&export, &format!("{module}.input_scale"), Dtype::F32, &[], &bytes(&[scale]), &mut mismatches);
                    compared += 1;
                }
                if norm.is_some() {
                    assert!(!export.contains(&format!("{module}.pre_quant_scale")), "{module}: folded into the norm");
                }
            }
        }
    }
    let per_linear = if fp8_activations { 4 } else { 2 };
    assert_eq!(compared, 2 * 7 * per_linear);
    assert!(mismatches.is_empty(), "{} of {compared} tensors differ:\n{}", mismatches.len(), mismatches.join("\n"));
}

#[test]
fn int4_awq_is_modelopt_byte_for_byte_given_its_statistics() {
    check("int4_awq", false);
}

#[test]
fn w4a8_awq_is_modelopt_byte_for_byte_given_its_statistics() {
    check("w4a8_awq", true);
}

#[test]
fn the_kept_alpha_is_the_first_smallest_loss_modelopt_recorded() {
    for format in ["int4_awq", "w4a8_awq"] {
        let text = std::fs::read_to_string(golden(&format!("{format}/awq.json"))).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        for (name, entry) in json["modules"].as_object().unwrap() {
            let losses: Vec<f64> = ALPHAS.iter().map(|a| entry["loss"][format!("{a:.1}")].as_f64().unwrap()).collect();
            let kept = entry["best_alpha"].as_f64().unwrap() as f32;
            assert_eq!(ALPHAS[best_alpha(&losses)], kept, "{format} {name}: losses {losses:?}");
        }
    }
}
