//! The KV cache's scales against ModelOpt's own: fed the key and value maxima ModelOpt's quantizers recorded
//! (amax.json of the KV goldens, written by tools/make_golden.py --kv-cache), `kv_scale` gives the f32 bits ModelOpt
//! wrote for every attention's `k_proj.k_scale` and `v_proj.v_scale`, under the names `kv_scale_names` gives.

// clippy.toml's allow-*-in-tests covers `#[test]` functions only; the helpers here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use moe_quant_core::export::kv_cache::{kv_scale, kv_scale_names};
use moe_quant_core::export::Encoding;
use moe_quant_core::{Checkpoint, Dtype};

fn golden(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/golden").join(relative)
}

#[test]
fn kv_scales_are_modelopts_bits_from_its_maxima() {
    // Grouped-query attention (Qwen3-MoE) and MLA (DeepSeek-V3), with FP8 and NVFP4 weights alike.
    let cases = [
        "qwen3_moe_hub_f32/fp8_kv_fp8",
        "qwen3_moe_hub_f32/nvfp4_kv_fp8",
        "deepseek_v3_hub/fp8_kv_fp8",
        "deepseek_v3_hub/nvfp4_kv_fp8",
    ];
    for case in cases {
        let dir = golden(case);
        let info: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("amax.json")).unwrap()).unwrap();
        let checkpoint = Checkpoint::open(&dir).unwrap();
        let mut compared = 0;
        for (name, quantizer) in info["quantizers"].as_object().unwrap() {
            let Some(attention) = name.strip_suffix(".k_bmm_quantizer") else { continue };
            let value_amax = &info["quantizers"][format!("{attention}.v_bmm_quantizer")]["amax"];
            let maxima = [quantizer["amax"].as_f64().unwrap() as f32, value_amax.as_f64().unwrap() as f32];
            for (tensor, amax) in kv_scale_names(attention, Encoding::ModelOpt).iter().zip(maxima) {
                let view = checkpoint.read(tensor).unwrap();
                assert_eq!((view.dtype, view.shape.len()), (Dtype::F32, 0), "{case}: {tensor}");
                assert_eq!(view.to_f32()[0].to_bits(), kv_scale(amax).to_bits(), "{case}: {tensor} from amax {amax}");
                compared += 1;
            }
        }
        assert_eq!(compared, 4, "{case}: two attentions, a key and a value scale each");
    }
}
