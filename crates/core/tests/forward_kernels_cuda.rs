//! The forward's fused CUDA kernels (`cuda::softmax_scores`, `cuda::combine_routed`) against the op-by-op candle
//! computation they replace, on the same GPU and in the same dtypes: the same rounding points, so only the order
//! of f32 sums differs, which moves a bf16/f16 result by at most one unit in its last place (and an f32 one by a
//! few ulps). Compiled only with the `cuda` feature and run on a GPU machine:
//!
//! ```sh
//! . tools/cuda-env.sh && cargo test --release -p moe-quant-core --features cuda --test forward_kernels_cuda
//! ```
#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor, D};
use moe_quant_core::cuda;

fn gpu() -> Device {
    cuda::device(0).expect("these tests need a CUDA GPU")
}

/// Largest difference between `got` and `expected` in units of the last place of `dtype` at the expected value.
fn ulps(got: &Tensor, expected: &Tensor, dtype: DType) -> f32 {
    let got = got.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let expected = expected.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(got.len(), expected.len());
    let mantissa = match dtype {
        DType::BF16 => 7,
        DType::F16 => 10,
        _ => 23,
    };
    got.iter()
        .zip(&expected)
        .map(|(g, e)| {
            if g == e {
                return 0.0;
            }
            assert!(g.is_finite() && e.is_finite(), "{g} against {e}");
            let unit = 2f32.powi(e.abs().max(f32::MIN_POSITIVE).log2().floor() as i32 - mantissa);
            (g - e).abs() / unit
        })
        .fold(0.0, f32::max)
}

/// The op-by-op path: scores to f32, scaled, masked, softmax (with a sink column), back to the scores' dtype.
fn softmax_reference(scores: &Tensor, mask: &Tensor, sinks: Option<&Tensor>, scaling: f64) -> Tensor {
    let scaled = (scores.to_dtype(DType::F32).unwrap() * scaling).unwrap().broadcast_add(mask).unwrap();
    let (b, h, q, k) = scaled.dims4().unwrap();
    let with_sinks = match sinks {
        None => scaled,
        Some(sinks) => {
            let column = sinks.reshape((1, h, q, 1)).unwrap().broadcast_as((b, h, q, 1)).unwrap().contiguous().unwrap();
            Tensor::cat(&[&scaled, &column], 3).unwrap()
        }
    };
    let max = with_sinks.max_keepdim(D::Minus1).unwrap();
    let exp = with_sinks.broadcast_sub(&max).unwrap().exp().unwrap();
    let probabilities = exp.broadcast_div(&exp.sum_keepdim(D::Minus1).unwrap()).unwrap();
    probabilities.narrow(3, 0, k).unwrap().to_dtype(scores.dtype()).unwrap()
}

fn causal_window_mask(len: usize, window: usize, device: &Device) -> Tensor {
    let mask: Vec<f32> = (0..len)
        .flat_map(|q| (0..len).map(move |k| if k <= q && k + window > q { 0.0 } else { f32::NEG_INFINITY }))
        .collect();
    Tensor::from_vec(mask, (len, len), device).unwrap()
}

#[test]
fn softmax_scores_matches_the_op_by_op_path() {
    let device = gpu();
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        // Key counts below, at and above a warp's width, a sliding window, and sinks.
        for (len, window, with_sinks) in [(5, 5, false), (32, 32, true), (77, 16, false), (200, 200, true)] {
            let (b, heads) = (3, 4);
            let scores = Tensor::randn(0f32, 3.0, (b, heads, len, len), &device).unwrap().to_dtype(dtype).unwrap();
            let mask = causal_window_mask(len, window, &device);
            let sinks = with_sinks.then(|| {
                let per_head = Tensor::randn(0f32, 1.0, (heads, 1), &device).unwrap();
                per_head.broadcast_as((heads, len)).unwrap().contiguous().unwrap()
            });
            let got = cuda::softmax_scores(&scores, &mask, sinks.as_ref(), 0.125).unwrap();
            let expected = softmax_reference(&scores, &mask, sinks.as_ref(), 0.125);
            let worst = ulps(&got, &expected, dtype);
            let bound = if dtype == DType::F32 { 8.0 } else { 1.0 };
            assert!(worst <= bound, "{dtype:?} len {len} window {window} sinks {with_sinks}: {worst} ulps");
            // Masked keys get exactly zero.
            let first_row = got.to_dtype(DType::F32).unwrap().flatten_all().unwrap().narrow(0, 0, len).unwrap();
            let first_row = first_row.to_vec1::<f32>().unwrap();
            assert!(first_row[1..].iter().all(|&p| p == 0.0), "query 0 sees only key 0");
        }
    }
}

#[test]
fn combine_routed_matches_the_op_by_op_path() {
    let device = gpu();
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        let (tokens, top_k, hidden) = (37, 3, 300);
        let slots = tokens * top_k;
        let routed = Tensor::randn(0f32, 1.0, (slots, hidden), &device).unwrap().to_dtype(dtype).unwrap();
        let weights = Tensor::rand(0f32, 1.0, slots, &device).unwrap().to_dtype(dtype).unwrap();
        // Each token's slots, scattered over the routed rows (a permutation, as grouping by expert makes).
        let mut order: Vec<u32> = (0..slots as u32).collect();
        order.sort_by_key(|&s| (s * 7919) % slots as u32);
        let rows = Tensor::from_vec(order.clone(), slots, &device).unwrap();
        for weighted in [true, false] {
            let got = cuda::combine_routed(&routed, &rows, weighted.then_some(&weights), top_k).unwrap();
            let scaled = if weighted {
                routed.broadcast_mul(&weights.reshape((slots, 1)).unwrap()).unwrap()
            } else {
                routed.clone()
            };
            let expected = scaled
                .index_select(&rows, 0)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .reshape((tokens, top_k, hidden))
                .unwrap()
                .sum(1)
                .unwrap();
            assert_eq!(got.dims(), [tokens, hidden]);
            // The same products in the same dtype; sums of top_k f32 terms in another order differ by at most a
            // few units of the last place of the terms' magnitude.
            let magnitude = scaled
                .index_select(&rows, 0)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap()
                .abs()
                .unwrap()
                .reshape((tokens, top_k, hidden))
                .unwrap()
                .sum(1)
                .unwrap();
            let excess = ((got - &expected).unwrap().abs().unwrap() - (magnitude * 2f64.powi(-21)).unwrap()).unwrap();
            let worst = excess.flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(worst <= 0.0, "{dtype:?} weighted {weighted}: off by {worst} beyond the bound");
        }
    }
}

#[test]
fn fused_kernels_check_their_arguments() {
    let device = gpu();
    let scores = Tensor::zeros((1, 2, 4, 4), DType::BF16, &device).unwrap();
    let wrong_mask = Tensor::zeros((4, 5), DType::F32, &device).unwrap();
    assert_eq!(cuda::softmax_scores(&scores, &wrong_mask, None, 1.0).unwrap_err().code(), "E_TENSOR_SHAPE");
    let routed = Tensor::zeros((6, 8), DType::BF16, &device).unwrap();
    let rows = Tensor::zeros(6, DType::U32, &device).unwrap();
    assert_eq!(cuda::combine_routed(&routed, &rows, None, 4).unwrap_err().code(), "E_TENSOR_SHAPE");
    let f32_weights = Tensor::zeros(6, DType::F32, &device).unwrap();
    assert_eq!(cuda::combine_routed(&routed, &rows, Some(&f32_weights), 3).unwrap_err().code(), "E_TENSOR_SHAPE");
}
