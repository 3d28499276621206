//! The forward in Rust alone, on the descriptors TS builds (committed in fixtures/descriptors): f32 logits
//! against transformers' references, and the bf16 compute path (what the GPU runs) within bf16 tolerance.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests

mod common;

use candle_core::{DType, Device};
use common::forward::{edited_logits, logits, reference, relative_l2, BF16_UNSTABLE, DESCRIBED};
use moe_quant_core::device::ComputeDevice;
use moe_quant_core::model::layers::read_ahead_first;

#[test]
fn f32_logits_match_transformers() {
    for fixture in DESCRIBED {
        let error = relative_l2(&logits(fixture, ComputeDevice::cpu()), &reference(fixture).1);
        assert!(error < 1e-5, "{fixture}: relative L2 {error}");
    }
}

#[test]
fn bf16_compute_agrees_within_bf16_tolerance() {
    for fixture in DESCRIBED.iter().filter(|f| !BF16_UNSTABLE.contains(f)) {
        let bf16 = ComputeDevice { device: Device::Cpu, dtype: DType::BF16 };
        let error = relative_l2(&logits(fixture, bf16), &reference(fixture).1);
        // bf16 has 8 bits of mantissa (relative step 2^-8 ≈ 4e-3); two layers stay well inside 3e-2.
        assert!(error < 3e-2, "{fixture}: relative L2 {error}");
        assert!(error > 0.0, "{fixture}: bf16 should not be bit-identical to f32");
    }
}

/// Gemma 4's blocks, each left out in turn: every one moves the logits past the bound of the test above, ten times
/// the f32 noise of the forward (transformers' own f32 logits are 2e-6 from its f64 ones on this fixture).
#[test]
fn every_part_of_gemma4_counts() {
    const FIXTURE: &str = "families/gemma4_text/hub";
    type Edit = fn(&mut serde_json::Value);
    fn each_layer(d: &mut serde_json::Value, edit: impl Fn(&mut serde_json::Value)) {
        d["layers"].as_array_mut().unwrap().iter_mut().for_each(edit);
    }
    let edits: [(&str, Edit); 10] = [
        ("the embedding scale", |d| d["embedding_multiplier"] = 1.0.into()),
        ("the soft-capping of the logits", |d| d["final_logit_softcapping"] = serde_json::Value::Null),
        ("the layer scalar", |d| each_layer(d, |l| l["output_scale"] = serde_json::Value::Null)),
        ("the v norm", |d| each_layer(d, |l| l["attention"]["v_norm"] = false.into())),
        ("the unscaled q·k", |d| each_layer(d, |l| l["attention"]["scaling"] = 0.25.into())),
        ("the proportional rope", |d| {
            d["layer_type_ropes"]["full_attention"]["proportional_angles"] = serde_json::Value::Null
        }),
        ("the router's input scale", |d| {
            each_layer(d, |l| l["mlp"]["router"]["input_scale"] = serde_json::Value::Null)
        }),
        ("the per-expert scale", |d| {
            each_layer(d, |l| l["mlp"]["router"]["per_expert_scale"] = serde_json::Value::Null)
        }),
        ("the tanh GELU", |d| {
            each_layer(d, |l| {
                l["mlp"]["activation"] = "gelu".into();
                l["mlp"]["shared"]["mlp"]["activation"] = "gelu".into();
            })
        }),
        ("the branch norms", |d| {
            each_layer(d, |l| {
                let norms = &mut l["mlp"]["branch_norms"];
                let output = norms["experts_output"].clone();
                norms["experts_output"] = norms["shared_output"].clone();
                norms["shared_output"] = output;
            })
        }),
    ];
    let want = reference(FIXTURE).1;
    for (part, edit) in edits {
        let error = relative_l2(&edited_logits(FIXTURE, ComputeDevice::cpu(), edit), &want);
        assert!(error > 2e-5, "without {part} the logits are still within {error} of transformers'");
    }
}

/// Applies `edit` to the sparse attention of every layer of a descriptor.
fn each_sparse_layer(d: &mut serde_json::Value, edit: impl Fn(&mut serde_json::Value)) {
    for layer in d["layers"].as_array_mut().unwrap() {
        edit(&mut layer["attention"]["sparse"]);
    }
}

#[test]
fn every_part_of_sparse_attention_counts() {
    // Without any one of these, the logits are far from transformers' (which the descriptors reproduce).
    type Edit = fn(&mut serde_json::Value);
    let variants: [(&str, &str, Edit); 4] = [
        ("families/deepseek_v32/hub", "every key kept", |d| each_sparse_layer(d, |s| s["top_k"] = 100.into())),
        ("families/deepseek_v32/hub", "the indexer's rope on pairs", |d| {
            each_sparse_layer(d, |s| s["indexer"]["rope_interleaved"] = true.into())
        }),
        ("families/glm_moe_dsa/fused", "the indexer's rope on halves", |d| {
            d["layers"][0]["attention"]["sparse"]["indexer"]["rope_interleaved"] = false.into()
        }),
        ("families/glm_moe_dsa/fused", "layer 1 attending to every key", |d| {
            d["layers"][1]["attention"].as_object_mut().unwrap().remove("sparse");
        }),
    ];
    for (fixture, what, edit) in variants {
        let error = relative_l2(&edited_logits(fixture, ComputeDevice::cpu(), edit), &reference(fixture).1);
        assert!(error > 1e-3, "{fixture} with {what}: relative L2 {error}");
    }
}

/// Applies `edit` to both attentions of every LongCat-Flash layer.
fn each_longcat_attention(d: &mut serde_json::Value, edit: impl Fn(&mut serde_json::Value)) {
    for layer in d["layers"].as_array_mut().unwrap() {
        edit(&mut layer["attention"]);
        edit(&mut layer["double"]["attention"]);
    }
}

#[test]
fn every_part_of_longcat_flash_counts() {
    // Without any one of these, the logits are far from transformers' (which the descriptor reproduces).
    type Edit = fn(&mut serde_json::Value);
    let variants: [(&str, Edit); 4] = [
        ("no LoRA scaling", |d| each_longcat_attention(d, |a| _ = a.as_object_mut().unwrap().remove("lora_scales"))),
        ("the router renormalising", |d| {
            for layer in d["layers"].as_array_mut().unwrap() {
                layer["mlp"]["router"]["kind"] = "softmax_bias_topk".into();
            }
        }),
        ("the second dense MLP's weights in the first", |d| {
            for layer in d["layers"].as_array_mut().unwrap() {
                layer["double"]["first_mlp"] = layer["double"]["second_mlp"].clone();
            }
        }),
        ("the rope on halves", |d| d["rope"]["interleaved"] = false.into()),
    ];
    for (what, edit) in variants {
        let fixture = "families/longcat_flash/hub";
        let error = relative_l2(&edited_logits(fixture, ComputeDevice::cpu(), edit), &reference(fixture).1);
        assert!(error > 1e-3, "{fixture} with {what}: relative L2 {error}");
    }
}

/// Runs the qwen3_moe/hub fixture's forward with its descriptor changed by `edit`; the error it stops with.
fn forward_error(edit: impl FnOnce(&mut serde_json::Value)) -> moe_quant_core::Error {
    let dir = common::forward::fixtures().join("qwen3_moe/hub");
    let text = std::fs::read_to_string(common::forward::fixtures().join("descriptors/qwen3_moe_hub.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut json);
    let descriptor: moe_quant_core::model::ModelDescriptor = serde_json::from_value(json).unwrap();
    let checkpoint = moe_quant_core::Checkpoint::open(dir).unwrap();
    let (batch, _) = reference("qwen3_moe/hub");
    let options = moe_quant_core::model::ForwardOptions::default();
    let cancel = std::sync::atomic::AtomicBool::new(false);
    match moe_quant_core::model::run_forward(&checkpoint, &descriptor, &[batch], &options, &cancel, &mut |_| {}) {
        Ok(_) => panic!("the forward succeeded"),
        Err(error) => error,
    }
}

#[test]
fn a_forward_that_stops_being_finite_names_the_layer_and_the_first_activation() {
    // A negative epsilon makes every normalised hidden state NaN: the first activation is the attention input.
    let error = forward_error(|d| d["rms_norm_eps"] = (-1.0).into());
    assert_eq!(error.code(), "E_ACTIVATION_NON_FINITE", "{error}");
    let message = error.to_string();
    assert!(message.contains("decoder layer 0"), "{message}");
    let projections =
        "model.layers.0.self_attn.q_proj, model.layers.0.self_attn.k_proj, model.layers.0.self_attn.v_proj";
    assert!(message.contains(&format!("the input of {projections}")), "{message}");
    // A rope theta of 0 makes the rotated queries and keys NaN: attention's output, o_proj's input.
    let error = forward_error(|d| d["rope"]["theta"] = 0.0.into());
    assert_eq!(error.code(), "E_ACTIVATION_NON_FINITE", "{error}");
    assert!(error.to_string().contains("the input of model.layers.0.self_attn.o_proj"), "{error}");
}

#[test]
fn a_run_on_a_gpu_reads_layer_1_while_the_device_starts() {
    // What the read-ahead holds before anything is taken: the embedding and layer 0, and on a GPU layer 1 too (which
    // the layer stream asks for before layer 0 loads), so that the disk goes on while the device starts.
    let fixture = "qwen3_moe/hub";
    let desc = common::forward::described(fixture);
    let dir = common::forward::fixtures().join(fixture);
    let names =
        moe_quant_core::Checkpoint::open(&dir).unwrap().tensors().iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    let count = |prefix: &str| names.iter().filter(|name| name.starts_with(prefix)).count();
    let (layer0, layer1) = (count("model.layers.0."), count("model.layers.1."));
    assert!(layer0 > 0 && layer1 > 0);
    for (gpu, expected) in [(false, 1 + layer0), (true, 1 + layer0 + layer1)] {
        let checkpoint = moe_quant_core::Checkpoint::open(&dir).unwrap();
        read_ahead_first(&checkpoint, &desc, gpu);
        assert_eq!(checkpoint.prefetched(), expected, "gpu: {gpu}");
        // The layer stream asks for the same read, which goes on.
        read_ahead_first(&checkpoint, &desc, gpu);
        assert_eq!(checkpoint.prefetched(), expected, "gpu: {gpu}");
    }
}
