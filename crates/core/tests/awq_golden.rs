//! AWQ against ModelOpt 0.47's own INT4_AWQ (W4A16_AWQ), W4A8_AWQ and NVFP4_AWQ exports (fixtures/golden/awq_*,
//! written by tools/make_awq_golden.py): a dense Qwen3 in the three formats, the same without grouped heads in
//! NVFP4_AWQ, and a Qwen3-MoE in INT4 and NVFP4_AWQ whose experts ModelOpt searched one by one. Given the statistics
//! ModelOpt's search kept (each linear's act and weight scales, its smoothing and best alpha, and the per-channel input
//! maxima), everything AWQ derives from them must be ModelOpt's byte for byte: the weight scale per channel, the
//! smoothing (within 1e-6: `pow`), `pre_quant_scale`, the smoothed weights, the q/k/v and gate/up means re-smoothing
//! each weight and folded into the norms, NVFP4_AWQ's folds into v_proj and up_proj, the experts' means over all
//! experts, the 4-bit codes and block scales (an expert's gate and up sharing their maxima), and the weight and
//! input scales.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use moe_quant_core::awq::{
    average, best_alpha, dtype_bytes, fold_into_norm, resmooth, smoothed_input_amax, smoothing, weight_scale,
    Smoothing, ALPHAS,
};
use moe_quant_core::formats::{self, AwqQuantizer, FormatName, Int4Awq, QuantFormat, WeightInput};
use moe_quant_core::numerics::e4m3::round_to_bf16;
use moe_quant_core::{Checkpoint, Dtype};

fn bf16(values: &[f32]) -> Vec<u8> {
    dtype_bytes(values, Dtype::BF16)
}

fn golden(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/golden").join(relative)
}

struct Stats {
    act_scale: Vec<f32>,
    weight_scale: Vec<f32>,
    best_scale: Vec<f32>,
    alpha: f32,
    channel_amax: Option<Vec<f32>>,
}

fn stats(dir: &str) -> BTreeMap<String, Stats> {
    let text = std::fs::read_to_string(golden(&format!("{dir}/awq.json"))).unwrap();
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
                weight_scale: floats(&entry["weight_scale"]),
                best_scale: floats(&entry["best_scale"]),
                alpha: entry["best_alpha"].as_f64().unwrap() as f32,
                channel_amax: entry.get("channel_amax").map(floats),
            };
            (name.clone(), stats)
        })
        .collect()
}

/// One linear once smoothed by its own search: its shape, bf16 values, smoothing and `pre_quant_scale`.
struct Smoothed {
    shape: Vec<usize>,
    values: Vec<f32>,
    smoothing: Smoothing,
    pqs: Vec<f32>,
}

/// The comparison of one case's tensors with ModelOpt's export.
struct Case {
    source: Checkpoint,
    export: Checkpoint,
    stats: BTreeMap<String, Stats>,
    format: Box<dyn QuantFormat>,
    /// NVFP4_AWQ: (from, into): `from`'s own smoothing multiplies `into`'s output rows.
    folds: Vec<(String, String)>,
    compared: usize,
    mismatches: Vec<String>,
}

impl Case {
    fn new(case: &str, format: &str) -> Self {
        let name = serde_json::from_value::<FormatName>(format.into()).unwrap();
        Case {
            source: Checkpoint::open(golden(&format!("{case}/source"))).unwrap(),
            export: Checkpoint::open(golden(&format!("{case}/{format}"))).unwrap(),
            stats: stats(&format!("{case}/{format}")),
            format: formats::format(name, false),
            folds: Vec::new(),
            compared: 0,
            mismatches: Vec::new(),
        }
    }

    fn same(&mut self, name: &str, dtype: Dtype, shape: &[usize], data: &[u8]) {
        let want = self.export.read(name).unwrap_or_else(|_| panic!("{name} is not in the export"));
        if want.dtype != dtype || want.shape != shape || want.data[..] != *data {
            self.mismatches
                .push(format!("{name}: {:?} {:?} exported, {dtype:?} {shape:?} made", want.dtype, want.shape));
        }
        self.compared += 1;
    }

    fn absent(&self, name: &str) {
        assert!(!self.export.contains(name), "{name} is written, though absorbed");
    }

    /// `module`'s weight (`weight` the source tensor's name) smoothed by ModelOpt's smoothing `s`; where a fold names
    /// it as `into`, its output rows multiplied by the folded linear's own smoothing. Our weight scale must be
    /// ModelOpt's exactly, and our `s` from its statistics within 1e-6 relative of its own: torch's vectorised `pow`
    /// is not correctly rounded (nor is Rust's), so the last bits of `s` may differ (and through the normalisation by
    /// its extremes, every channel's), and with them, where `1/s` lies that close to a bf16 rounding boundary, one
    /// `pre_quant_scale` element; the bytes are compared from ModelOpt's `s`.
    fn smoothed(&self, module: &str, weight: &str) -> Smoothed {
        let s = &self.stats[module];
        let view = self.source.read(weight).unwrap();
        let (shape, mut values) = (view.shape.clone(), view.to_f32());
        let block = self.format.awq().unwrap().block();
        let wscale = weight_scale(&values, [shape[0], shape[1]], block, Dtype::BF16);
        assert!(wscale == s.weight_scale, "{module}: weight scale differs from ModelOpt's");
        let ours = smoothing(&s.act_scale, &wscale, s.alpha);
        for (c, (a, b)) in ours.iter().zip(&s.best_scale).enumerate() {
            assert!((a - b).abs() <= 1e-6 * b.abs(), "{module} channel {c}: s {a} vs ModelOpt's {b}");
        }
        let smoothing = Smoothing::from_scale(&s.best_scale);
        smoothing.smooth(&mut values, Dtype::BF16);
        let pqs = smoothing.pre_quant_scale(Dtype::BF16);
        if let Some((from, _)) = self.folds.iter().find(|(_, into)| into == module) {
            let from = self.smoothed(from, &format!("{from}.weight")).pqs;
            for (row, p) in values.chunks_exact_mut(shape[1]).zip(&from) {
                row.iter_mut().for_each(|w| *w = round_to_bf16(*w * p));
            }
        }
        Smoothed { shape, values, smoothing, pqs }
    }

    fn folded(&self, module: &str) -> bool {
        self.folds.iter().any(|(from, _)| from == module)
    }

    /// Linears reading one input: each re-smoothed to the group's mean, which the norm absorbs where one produces
    /// the input (else `pre_quant_scale` is written, unless folded into the linear before); then each quantized,
    /// with the group's shared weight and input scales.
    fn group(&mut self, modules: &[String], norm: Option<&str>) {
        let mut linears: Vec<Smoothed> = modules.iter().map(|m| self.smoothed(m, &format!("{m}.weight"))).collect();
        let avg = average(&linears.iter().map(|l| l.pqs.as_slice()).collect::<Vec<_>>(), Dtype::BF16);
        for linear in &mut linears {
            resmooth(&mut linear.values, &linear.pqs, &avg, Dtype::BF16);
        }
        let weight_amax = linears.iter().flat_map(|l| l.values.iter()).fold(0.0f32, |m, v| m.max(v.abs()));
        let input_amax = modules.iter().zip(&linears).fold(0.0f32, |m, (module, linear)| {
            let channel = self.stats[module].channel_amax.clone().unwrap_or_default();
            m.max(smoothed_input_amax(&channel, &linear.smoothing, Dtype::BF16))
        });
        match norm {
            Some(norm) => {
                let view = self.source.read(norm).unwrap();
                let mut values = view.to_f32();
                fold_into_norm(&mut values, &avg, false, Dtype::BF16);
                self.same(norm, Dtype::BF16, &view.shape.clone(), &bf16(&values));
            }
            None if self.folded(&modules[0]) => self.absent(&format!("{}.pre_quant_scale", modules[0])),
            None => {
                let name = format!("{}.pre_quant_scale", modules[0]);
                self.same(&name, Dtype::BF16, &[avg.len()], &bf16(&avg));
            }
        }
        for (module, linear) in modules.iter().zip(&linears) {
            self.quantized(module, linear, None, weight_amax);
            if self.format.calibrated() {
                let scale = self.format.input_scale(input_amax).to_le_bytes();
                self.same(&format!("{module}.input_scale"), Dtype::F32, &[], &scale);
            }
            if norm.is_some() {
                self.absent(&format!("{module}.pre_quant_scale"));
            }
        }
    }

    fn quantized(&mut self, module: &str, linear: &Smoothed, int4_blocks: Option<&[f32]>, weight_amax: f32) {
        let name = format!("{module}.weight");
        let weight = WeightInput::new(&name, Dtype::BF16, &linear.shape, &linear.values).unwrap();
        let quantized = match int4_blocks {
            Some(blocks) => Int4Awq::default().quantize_blocks(&weight, blocks, weight_amax).unwrap(),
            None => self.format.quantize(&weight, weight_amax).unwrap(),
        };
        for tensor in quantized.tensors {
            self.same(&format!("{module}.{}", tensor.suffix), tensor.dtype, &tensor.shape, &tensor.data);
        }
    }

    /// A layer's routed experts: each projection's mean over the experts, then gate and up's mean, each weight
    /// re-smoothed at each step (NVFP4_AWQ: down's own smoothing folded into up's rows first, down keeping its own);
    /// an expert's gate and up quantized with their larger maxima; the layer's largest input scale.
    fn experts(&mut self, block: &str, experts: usize, fold: bool) {
        let name = |e: usize, proj: &str| format!("{block}.experts.{e}.{proj}");
        if fold {
            for e in 0..experts {
                self.folds.push((name(e, "down_proj"), name(e, "up_proj")));
            }
        }
        let mut projections: Vec<Vec<Smoothed>> = ["gate_proj", "up_proj", "down_proj"]
            .iter()
            .map(|proj| {
                (0..experts).map(|e| self.smoothed(&name(e, proj), &format!("{}.weight", name(e, proj)))).collect()
            })
            .collect();
        let mut inputs = Vec::new();
        let mut per_expert = Vec::new();
        let mut means = Vec::new();
        for (p, linears) in projections.iter_mut().enumerate() {
            // The experts' per-channel input maxima are shared (the largest) before each expert's smoothing.
            let proj = ["gate_proj", "up_proj", "down_proj"][p];
            let channels: Vec<Vec<f32>> =
                (0..experts).map(|e| self.stats[&name(e, proj)].channel_amax.clone().unwrap_or_default()).collect();
            let shared: Vec<f32> =
                (0..channels[0].len()).map(|c| channels.iter().map(|ch| ch[c]).fold(0.0f32, f32::max)).collect();
            let each: Vec<f32> =
                (0..experts).map(|e| smoothed_input_amax(&shared, &linears[e].smoothing, Dtype::BF16)).collect();
            inputs.push(each.iter().copied().fold(0.0f32, f32::max));
            per_expert.push(each);
            let avg = average(&linears.iter().map(|l| l.pqs.as_slice()).collect::<Vec<_>>(), Dtype::BF16);
            if !(fold && p == 2) {
                for linear in linears.iter_mut() {
                    resmooth(&mut linear.values, &linear.pqs, &avg, Dtype::BF16);
                    linear.pqs.clone_from(&avg);
                }
            }
            means.push(avg);
        }
        let gate_up = average(&[&means[0], &means[1]], Dtype::BF16);
        for linears in &mut projections[..2] {
            for linear in linears.iter_mut() {
                resmooth(&mut linear.values, &linear.pqs, &gate_up, Dtype::BF16);
                linear.pqs.clone_from(&gate_up);
            }
        }
        let [gates, ups, downs] = &projections[..] else { unreachable!() };
        let int4 = self.format.awq() == Some(AwqQuantizer::Int4);
        for (e, ((gate, up), down)) in gates.iter().zip(ups).zip(downs).enumerate() {
            let blocks =
                |l: &Smoothed| Int4Awq::block_amax(&WeightInput::new("w", Dtype::BF16, &l.shape, &l.values).unwrap());
            let shared: Vec<f32> = blocks(gate).iter().zip(blocks(up)).map(|(g, u)| g.max(u)).collect();
            let amax = gate.values.iter().chain(&up.values).fold(0.0f32, |m, v| m.max(v.abs()));
            for (proj, linear) in [("gate_proj", gate), ("up_proj", up)] {
                self.quantized(&name(e, proj), linear, int4.then_some(&shared[..]), amax);
                self.same(
                    &format!("{}.pre_quant_scale", name(e, proj)),
                    Dtype::BF16,
                    &[gate_up.len()],
                    &bf16(&gate_up),
                );
            }
            let down_amax = down.values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            self.quantized(&name(e, "down_proj"), down, None, down_amax);
            match fold {
                true => self.absent(&format!("{}.pre_quant_scale", name(e, "down_proj"))),
                false => {
                    let pqs = bf16(&means[2]);
                    self.same(
                        &format!("{}.pre_quant_scale", name(e, "down_proj")),
                        Dtype::BF16,
                        &[means[2].len()],
                        &pqs,
                    );
                }
            }
        }
        // ModelOpt writes each expert's own input scale (its modules are per expert): from the shared per-channel
        // maxima and the expert's smoothing (gate and up their larger). We write the layer's largest, theirs' largest.
        if self.format.calibrated() {
            for (e, gate_up) in per_expert[0].iter().zip(&per_expert[1]).map(|(g, u)| g.max(*u)).enumerate() {
                for (proj, amax) in [("gate_proj", gate_up), ("up_proj", gate_up), ("down_proj", per_expert[2][e])] {
                    let theirs = self.export.read(&format!("{}.input_scale", name(e, proj))).unwrap().to_f32()[0];
                    assert_eq!(self.format.input_scale(amax), theirs, "{}: ModelOpt's own input scale", name(e, proj));
                }
            }
            for (p, proj) in ["gate_proj", "up_proj", "down_proj"].iter().enumerate() {
                let theirs = (0..experts).fold(0.0f32, |m, e| {
                    m.max(self.export.read(&format!("{}.input_scale", name(e, proj))).unwrap().to_f32()[0])
                });
                let ours = self.format.input_scale(if p < 2 { inputs[0].max(inputs[1]) } else { inputs[2] });
                if ours != theirs {
                    self.mismatches.push(format!("{block} {proj}: input scale {ours}, ModelOpt's largest {theirs}"));
                }
                self.compared += 1;
            }
        }
    }

    fn attention_layer(&mut self, layer: usize, dense_mlp: bool) {
        let p = format!("model.layers.{layer}.");
        let names =
            |leaves: &[&str], parent: &str| leaves.iter().map(|l| format!("{p}{parent}.{l}")).collect::<Vec<_>>();
        self.group(&names(&["q_proj", "k_proj", "v_proj"], "self_attn"), Some(&format!("{p}input_layernorm.weight")));
        self.group(&names(&["o_proj"], "self_attn"), None);
        if dense_mlp {
            self.group(&names(&["gate_proj", "up_proj"], "mlp"), Some(&format!("{p}post_attention_layernorm.weight")));
            self.group(&names(&["down_proj"], "mlp"), None);
        }
    }

    /// NVFP4_AWQ's folds of a layer (ModelOpt's for Llama and Qwen3): down_proj into up_proj of a dense MLP, and
    /// o_proj into v_proj where the attention has as many key/value heads as query heads.
    fn fold_layer(&mut self, layer: usize, attention: bool, mlp: bool) {
        let p = format!("model.layers.{layer}.");
        if attention {
            self.folds.push((format!("{p}self_attn.o_proj"), format!("{p}self_attn.v_proj")));
        }
        if mlp {
            self.folds.push((format!("{p}mlp.down_proj"), format!("{p}mlp.up_proj")));
        }
    }

    fn finish(self, compared: usize) {
        assert_eq!(self.compared, compared);
        let (bad, all) = (self.mismatches.len(), self.compared);
        assert!(bad == 0, "{bad} of {all} tensors differ:\n{}", self.mismatches.join("\n"));
    }
}

#[test]
fn int4_awq_is_modelopt_byte_for_byte_given_its_statistics() {
    let mut case = Case::new("awq_qwen3", "int4_awq");
    (0..2).for_each(|layer| case.attention_layer(layer, true));
    // Per layer: 7 linears × (codes, block scales), 2 norms, 2 pre_quant_scales.
    case.finish(2 * (7 * 2 + 4));
}

#[test]
fn w4a8_awq_is_modelopt_byte_for_byte_given_its_statistics() {
    let mut case = Case::new("awq_qwen3", "w4a8_awq");
    (0..2).for_each(|layer| case.attention_layer(layer, true));
    // Per layer: 7 linears × (codes, block scales, weight_scale_2, input_scale), 2 norms, 2 pre_quant_scales.
    case.finish(2 * (7 * 4 + 4));
}

#[test]
fn int4_awq_experts_are_modelopt_byte_for_byte_given_its_statistics() {
    let mut case = Case::new("awq_qwen3_moe", "int4_awq");
    for layer in 0..2 {
        case.attention_layer(layer, false);
        case.experts(&format!("model.layers.{layer}.mlp"), 8, false);
    }
    // Per layer: 4 attention linears × 2 tensors, a norm and o_proj's pre_quant_scale; 8 experts × 3 × 3 tensors.
    case.finish(2 * (4 * 2 + 2 + 8 * 9));
}

#[test]
fn nvfp4_awq_is_modelopt_byte_for_byte_given_its_statistics() {
    // With grouped heads (o_proj keeps its smoothing) and without (o_proj's folds into v_proj); down_proj's always
    // folds into up_proj.
    for (case_name, heads_fold) in [("awq_qwen3", false), ("awq_qwen3_mha", true)] {
        let mut case = Case::new(case_name, "nvfp4_awq");
        for layer in 0..2 {
            case.fold_layer(layer, heads_fold, true);
            case.attention_layer(layer, true);
        }
        // Per layer: 7 linears × (codes, block scales, weight_scale_2, input_scale), 2 norms, o_proj's
        // pre_quant_scale unless folded.
        case.finish(2 * (7 * 4 + 2 + usize::from(!heads_fold)));
    }
}

#[test]
fn nvfp4_awq_experts_are_modelopt_byte_for_byte_given_its_statistics() {
    let mut case = Case::new("awq_qwen3_moe", "nvfp4_awq");
    for layer in 0..2 {
        case.attention_layer(layer, false);
        case.experts(&format!("model.layers.{layer}.mlp"), 8, true);
    }
    // Per layer: 4 attention linears × 4 tensors, a norm and o_proj's pre_quant_scale; 8 experts × (3 × 3 weight
    // tensors + gate/up pre_quant_scale); the three input scales.
    case.finish(2 * (4 * 4 + 2 + 8 * 11 + 3));
}

#[test]
fn shared_experts_keep_their_smoothing_as_modelopt_writes_it() {
    // Qwen2-MoE: the shared expert reads a flattened copy of the norm's output, so its gate/up mean stays on it; its
    // experts (Qwen2-MoE MLPs) fold nothing, in NVFP4_AWQ too.
    // Attention: 4 linears, the norm, o_proj's pre_quant_scale; the shared expert: 3 linears and 2 pre_quant_scales
    // (gate/up's, down's); 8 experts × 3 projections × (weight tensors + pre_quant_scale); NVFP4: each non-expert
    // linear's input scale, and the experts' 3.
    for (format, expected) in [("int4_awq", 10 + 8 + 8 * 3 * 3), ("nvfp4_awq", 18 + 14 + 8 * 3 * 4 + 3)] {
        let mut case = Case::new("awq_qwen2_moe", format);
        case.attention_layer(0, false);
        let shared = |leaf: &str| format!("model.layers.0.mlp.shared_expert.{leaf}");
        case.group(&[shared("gate_proj"), shared("up_proj")], None);
        case.group(&[shared("down_proj")], None);
        case.experts("model.layers.0.mlp", 8, false);
        case.finish(expected);
    }
}

#[test]
fn the_kept_alpha_is_the_first_smallest_loss_modelopt_recorded() {
    for dir in [
        "awq_qwen3/int4_awq",
        "awq_qwen3/w4a8_awq",
        "awq_qwen3/nvfp4_awq",
        "awq_qwen3_mha/nvfp4_awq",
        "awq_qwen3_moe/int4_awq",
        "awq_qwen3_moe/nvfp4_awq",
    ] {
        let text = std::fs::read_to_string(golden(&format!("{dir}/awq.json"))).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        for (name, entry) in json["modules"].as_object().unwrap() {
            let losses: Vec<f64> = ALPHAS.iter().map(|a| entry["loss"][format!("{a:.1}")].as_f64().unwrap()).collect();
            let kept = entry["best_alpha"].as_f64().unwrap() as f32;
            assert_eq!(ALPHAS[best_alpha(&losses)], kept, "{dir} {name}: losses {losses:?}");
        }
    }
}

#[test]
fn the_goldens_read_back_close_to_their_source_weights() {
    // Read through the loader's dequantization (pre_quant_scale applied to the columns, exactly); where a norm
    // absorbed the smoothing, the norm's ratio to the source's scales the columns instead. Either way the product
    // with the input is the original weight's, up to INT4's error (about 1.3–1.7% relative MSE on these weights).
    for (case, format) in [("awq_qwen3", "w4a8_awq"), ("awq_qwen3_moe", "int4_awq")] {
        let source = Checkpoint::open(golden(&format!("{case}/source"))).unwrap();
        let export = Checkpoint::open(golden(&format!("{case}/{format}"))).unwrap();
        let mut checked = 0;
        for info in export.tensors().iter().filter(|t| t.name.ends_with("_proj.weight")) {
            let (shape, mut values) = moe_quant_core::formats::dequantize_stored(&export, &info.name).unwrap().unwrap();
            let module = info.name.trim_end_matches(".weight");
            let norm = match () {
                _ if module.contains("self_attn") && !module.ends_with("o_proj") => Some("input_layernorm"),
                _ if !module.contains("experts") && !module.ends_with("down_proj") && module.contains(".mlp.") => {
                    Some("post_attention_layernorm")
                }
                _ => None,
            };
            if let Some(norm) = norm {
                let layer = &module[..module.find(".self_attn").or_else(|| module.find(".mlp")).unwrap()];
                let name = format!("{layer}.{norm}.weight");
                let (ours, theirs) = (export.read(&name).unwrap().to_f32(), source.read(&name).unwrap().to_f32());
                for row in values.chunks_exact_mut(shape[1]) {
                    row.iter_mut().zip(ours.iter().zip(&theirs)).for_each(|(w, (a, b))| *w *= a / b);
                }
            }
            // A weight that carries its smoothing reads back as exactly its codes times its scales times it.
            if export.contains(&format!("{module}.pre_quant_scale")) {
                let parts = ["weight", "weight_scale"].map(|s| export.read(&format!("{module}.{s}")).unwrap());
                let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
                let (_, codes) = Int4Awq::default().dequantize(&info.name, &views).unwrap();
                let pqs = export.read(&format!("{module}.pre_quant_scale")).unwrap().to_f32();
                let scaled = codes.chunks_exact(shape[1]).flat_map(|row| row.iter().zip(&pqs).map(|(w, p)| w * p));
                assert!(
                    scaled.eq(values.iter().copied()),
                    "{case} {}: not codes × scales × pre_quant_scale",
                    info.name
                );
            }
            let original = source.read(&info.name).unwrap().to_f32();
            let error: f64 = values.iter().zip(&original).map(|(a, b)| f64::from(a - b).powi(2)).sum();
            let energy: f64 = original.iter().map(|b| f64::from(*b).powi(2)).sum();
            assert!(error / energy < 0.03, "{case} {}: relative MSE {}", info.name, error / energy);
            checked += 1;
        }
        assert!(checked >= 14, "{case}: {checked} weights");
    }
}
