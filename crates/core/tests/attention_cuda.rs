//! The fused attention kernel (`cuda::fused_attention`) against eager attention op by op on the same GPU (q·kᵀ per
//! query head in the compute dtype, the fused masked softmax, the product with v): the same rounding points, so
//! only the order of f32 sums differs. Such a difference can move a product or a probability to the
//! neighbouring value of the compute dtype, and the output by a few units of its last place. Compiled only with
//! the `cuda` feature and run on a GPU machine:
//!
//! ```sh
//! . tools/cuda-env.sh && cargo test --release -p moe-quant-core --features cuda --test attention_cuda
//! ```
#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor};
use moe_quant_core::cuda::{self, KeyMask};
use moe_quant_core::model::blocks::attend::repeat_kv;
use moe_quant_core::model::blocks::ops::attention_mask;
use moe_quant_core::model::descriptor::AttentionMask;

fn gpu() -> Device {
    cuda::device(0).expect("these tests need a CUDA GPU")
}

/// Eager attention op by op: `q [B, H, T, D]`, `k`, `v` `[B, KV, T, D]`, sinks `[H]` f32.
fn eager(q: &Tensor, k: &Tensor, v: &Tensor, mask: AttentionMask, sinks: Option<&Tensor>, scaling: f32) -> Tensor {
    let (_, heads, t, _) = q.dims4().unwrap();
    let groups = heads / k.dim(1).unwrap();
    let k = repeat_kv(&k.contiguous().unwrap(), groups).unwrap();
    let v = repeat_kv(&v.contiguous().unwrap(), groups).unwrap();
    let scores = q.contiguous().unwrap().matmul(&k.t().unwrap().contiguous().unwrap()).unwrap();
    let mask = attention_mask(t, mask, q.device()).unwrap();
    let sinks = sinks.map(|s| s.reshape((heads, 1)).unwrap().broadcast_as((heads, t)).unwrap().contiguous().unwrap());
    let probabilities = cuda::softmax_scores(&scores, &mask, sinks.as_ref(), scaling).unwrap();
    probabilities.matmul(&v).unwrap()
}

/// (largest difference in units of the last place of `dtype` at max(|expected|, floor), share of equal values).
fn compare(got: &Tensor, expected: &Tensor, dtype: DType, floor: f32) -> (f32, f64) {
    let got = got.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let expected = expected.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(got.len(), expected.len());
    let mantissa = if dtype == DType::BF16 { 7 } else { 10 };
    let mut worst = 0f32;
    let mut equal = 0usize;
    for (g, e) in got.iter().zip(&expected) {
        assert!(g.is_finite(), "{g} against {e}");
        if g == e {
            equal += 1;
            continue;
        }
        let unit = 2f32.powi(e.abs().max(floor).log2().floor() as i32 - mantissa);
        worst = worst.max((g - e).abs() / unit);
    }
    (worst, equal as f64 / got.len().max(1) as f64)
}

#[test]
fn fused_attention_matches_eager_attention_op_by_op() {
    let device = gpu();
    let masks = [
        (KeyMask::Causal, AttentionMask::Causal),
        (KeyMask::Window(40), AttentionMask::SlidingWindow { window: 40 }),
        (KeyMask::Chunks(48), AttentionMask::Chunked { size: 48 }),
    ];
    // (sequences, query heads, kv heads, positions): one position, a partial tile, several tiles with a partial
    // last one, query groups of 1, 2 and 4.
    let shapes = [(2, 4, 2, 1), (2, 8, 2, 77), (1, 4, 4, 200), (3, 4, 1, 64), (1, 2, 1, 300)];
    for dtype in [DType::BF16, DType::F16] {
        for d in [64usize, 128] {
            for &(b, heads, kv, t) in &shapes {
                for (&(mask, eager_mask), with_sinks) in masks.iter().flat_map(|m| [(m, false), (m, true)]) {
                    let scaling = 1.0 / (d as f32).sqrt();
                    let q = Tensor::randn(0f32, 1.5, (b, heads, t, d), &device).unwrap().to_dtype(dtype).unwrap();
                    let k = Tensor::randn(0f32, 1.5, (b, kv, t, d), &device).unwrap().to_dtype(dtype).unwrap();
                    // v as a projection leaves it: [B, T, KV, D] memory viewed as [B, KV, T, D].
                    let v = Tensor::randn(0f32, 1.0, (b, t, kv, d), &device).unwrap().to_dtype(dtype).unwrap();
                    let v = v.transpose(1, 2).unwrap();
                    let sinks = with_sinks.then(|| Tensor::randn(0f32, 2.0, heads, &device).unwrap());
                    assert!(cuda::fused_attention_fits(&q, &k, &v));
                    let got = cuda::fused_attention(&q, &k, &v, scaling, mask, sinks.as_ref()).unwrap();
                    assert_eq!(got.dims(), [b, heads, t, d]);
                    let expected = eager(&q, &k, &v, eager_mask, sinks.as_ref(), scaling);
                    let (worst, equal) = compare(&got, &expected, dtype, 1.0 / 32.0);
                    let label = format!("{dtype:?} D {d} B {b} H {heads} KV {kv} T {t} {mask:?} sinks {with_sinks}");
                    println!("{label}: {worst} ulps at most, {:.4} equal", equal);
                    // Measured on an H100: at most 3.4 bf16 ulps and 16 f16 ulps (f16 ulps are 8x finer), and
                    // at least 99.9% of outputs equal, over every case.
                    let bound = if dtype == DType::BF16 { 8.0 } else { 64.0 };
                    assert!(worst <= bound && equal >= 0.99, "{label}: {worst} ulps, {equal} equal");
                    // The maximum recorded for the output is exactly the amax kernel's.
                    let recorded = cuda::known_max::known(&got).unwrap().to_scalar::<f32>().unwrap();
                    assert_eq!(recorded, cuda::amax(&got.contiguous().unwrap()).unwrap().to_scalar::<f32>().unwrap());
                }
            }
        }
    }
}

#[test]
fn fused_attention_takes_only_what_it_is_built_for() {
    let device = gpu();
    let tensor = |dims: (usize, usize, usize, usize), dtype: DType| Tensor::zeros(dims, dtype, &device).unwrap();
    let q = tensor((1, 4, 8, 64), DType::BF16);
    let kv = tensor((1, 2, 8, 64), DType::BF16);
    assert!(cuda::fused_attention_fits(&q, &kv, &kv));
    // Head sizes without a kernel, f32, kv heads that do not divide the query heads, and cross-attention.
    assert!(!cuda::fused_attention_fits(&tensor((1, 4, 8, 96), DType::BF16), &kv, &kv));
    let f32s = tensor((1, 4, 8, 64), DType::F32);
    assert!(!cuda::fused_attention_fits(&f32s, &f32s, &f32s));
    let three = tensor((1, 3, 8, 64), DType::BF16);
    assert!(!cuda::fused_attention_fits(&q, &three, &three));
    let longer = tensor((1, 2, 9, 64), DType::BF16);
    assert!(!cuda::fused_attention_fits(&q, &longer, &longer));
    let cpu = Tensor::zeros((1, 4, 8, 64), DType::BF16, &Device::Cpu).unwrap();
    assert!(!cuda::fused_attention_fits(&cpu, &cpu, &cpu));
    let error = cuda::fused_attention(&q, &three, &three, 1.0, KeyMask::Causal, None).unwrap_err();
    assert_eq!(error.code(), "E_TENSOR_SHAPE");
    let no_keys = KeyMask::Window(0);
    assert_eq!(cuda::fused_attention(&q, &kv, &kv, 1.0, no_keys, None).unwrap_err().code(), "E_TENSOR_SHAPE");
}
