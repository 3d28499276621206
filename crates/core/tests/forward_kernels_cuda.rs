//! The forward's CUDA kernels (`cuda::softmax_scores`, `cuda::combine_routed`, `cuda::route`) against the
//! computation they replace (op by op in candle; the host router for the routing), on the same GPU and in the same dtypes: the same rounding points, so only the order
//! of f32 sums differs, which moves a bf16/f16 result by at most one unit in its last place (and an f32 one by a
//! few ulps). Compiled only with the `cuda` feature and run on a GPU machine:
//!
//! ```sh
//! . tools/cuda-env.sh && cargo test --release -p moe-quant-core --features cuda --test forward_kernels_cuda
//! ```
#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{DType, Device, Tensor, D};
use moe_quant_core::cuda::{self, DeviceRouter};
use moe_quant_core::model::blocks::router::route;
use moe_quant_core::model::descriptor::{RouterDescriptor, RouterKind};

fn gpu() -> Device {
    cuda::device(0).expect("these tests need a CUDA GPU")
}

/// Largest difference between `got` and `expected` in units of the last place of `dtype` at the expected value
/// (at `floor` for values smaller than that, where a sum cancelled).
fn ulps_above(got: &Tensor, expected: &Tensor, dtype: DType, floor: f32) -> f32 {
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
            let unit = 2f32.powi(e.abs().max(floor).max(f32::MIN_POSITIVE).log2().floor() as i32 - mantissa);
            (g - e).abs() / unit
        })
        .fold(0.0, f32::max)
}

fn ulps(got: &Tensor, expected: &Tensor, dtype: DType) -> f32 {
    ulps_above(got, expected, dtype, 0.0)
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

/// A router descriptor of `kind` for the host path.
fn router(kind: RouterKind, norm: bool, groups: usize, kept: usize, scaling: f64) -> RouterDescriptor {
    RouterDescriptor {
        kind,
        weight: String::new(),
        bias: None,
        correction_bias: None,
        norm_topk_prob: norm,
        n_group: groups,
        topk_group: kept,
        routed_scaling_factor: scaling,
        norm_min: 0.0,
        norm_eps: None,
        jitter_eps: 0.0,
        input_scale: None,
        per_expert_scale: None,
    }
}

/// Logits whose values within a row are distinct (a permutation of a spaced grid), so every choice is clear.
fn spaced_logits(tokens: usize, experts: usize, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    let mut logits = Vec::with_capacity(tokens * experts);
    for _ in 0..tokens {
        let mut row: Vec<f32> = (0..experts).map(|e| (e as f32 - experts as f32 / 2.0) * 0.013).collect();
        for i in (1..experts).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            row.swap(i, (state % (i as u64 + 1)) as usize);
        }
        logits.extend(row);
    }
    logits
}

#[test]
fn routing_on_the_gpu_chooses_as_the_host_and_groups_by_expert() {
    let device = gpu();
    let cases = [
        (RouterKind::SoftmaxTopk, false, 1, 1, 1.0, 128, 8, None),
        (RouterKind::SoftmaxTopk, true, 1, 1, 1.0, 60, 4, None),
        (RouterKind::SoftmaxTopkNorm, true, 1, 1, 1.0, 512, 10, None),
        (RouterKind::SigmoidGroupTopk, true, 8, 4, 2.5, 256, 8, Some(0.05f32)),
        (RouterKind::SigmoidGroupTopk, false, 1, 1, 1.0, 64, 6, None),
    ];
    for (kind, norm, groups, kept, scaling, experts, top_k, bias_scale) in cases {
        let tokens = 1000 + experts; // partial tiles
        let logits = spaced_logits(tokens, experts, 0x9E37_79B9_7F4A_7C15 ^ experts as u64);
        let bias: Option<Vec<f32>> = bias_scale.map(|s| (0..experts).map(|e| ((e * 37) % 11) as f32 * s).collect());
        let desc = router(kind, norm, groups, kept, scaling);
        let host = route(&desc, &logits, experts, top_k, bias.as_deref());
        let device_router = match kind {
            RouterKind::SigmoidGroupTopk => DeviceRouter::SigmoidGroups {
                normalise: norm,
                norm_eps: 1e-20,
                scaling: scaling as f32,
                groups,
                kept_groups: kept,
            },
            RouterKind::SoftmaxTopkNorm => DeviceRouter::Softmax { normalise: true },
            _ => DeviceRouter::Softmax { normalise: norm },
        };
        let gpu_logits = Tensor::from_vec(logits.clone(), (tokens, experts), &device).unwrap();
        let gpu_bias = bias.as_ref().map(|b| Tensor::from_slice(b, experts, &device).unwrap());
        let routing = cuda::route(&gpu_logits, top_k, &device_router, gpu_bias.as_ref()).unwrap();
        let slot_tokens = routing.tokens.to_vec1::<u32>().unwrap();
        let slot_weights = routing.weights.to_vec1::<f32>().unwrap();
        let rows = routing.rows.to_vec1::<u32>().unwrap();
        let label = format!("{kind:?} norm {norm} groups {groups}/{kept} E {experts} K {top_k}");
        // Ranges tile the slots in expert order; tokens ascend within an expert.
        let mut next = 0;
        let mut expert_of = vec![0usize; tokens * top_k];
        for (e, range) in routing.ranges.iter().enumerate() {
            assert_eq!(range.start, next, "{label}");
            next = range.end;
            expert_of[range.clone()].iter_mut().for_each(|x| *x = e);
            assert!(slot_tokens[range.clone()].windows(2).all(|w| w[0] < w[1]), "{label}: expert {e}");
        }
        assert_eq!(next, tokens * top_k, "{label}");
        for t in 0..tokens {
            let mut expected: Vec<(usize, f32)> =
                (0..top_k).map(|j| (host.experts[t * top_k + j], host.weights[t * top_k + j])).collect();
            expected.sort_by_key(|&(e, _)| e);
            for (j, &(e, w)) in expected.iter().enumerate() {
                let slot = rows[t * top_k + j] as usize;
                assert_eq!(slot_tokens[slot] as usize, t, "{label}: token {t}");
                assert_eq!(expert_of[slot], e, "{label}: token {t} choice {j}");
                let got = slot_weights[slot];
                assert!((got - w).abs() <= 1e-5 * w.abs().max(1e-6), "{label}: token {t} expert {e}: {got} vs {w}");
            }
        }
    }
    let logits = Tensor::zeros((3, 600), DType::F32, &device).unwrap();
    let too_many = cuda::route(&logits, 4, &DeviceRouter::Softmax { normalise: true }, None);
    assert_eq!(too_many.err().map(|e| e.code()), Some("E_TENSOR_SHAPE"));
}

/// The op-by-op heads: RMSNorm per head (f32 statistics, rounded, times the weight), to `[B, H, T, D]`, then the
/// rope by halves on the leading `cos.dim(1)` dimensions.
fn heads_reference(xs: &Tensor, norm: Option<(&Tensor, f32)>, rope: Option<(&Tensor, &Tensor)>) -> Tensor {
    let mut ys = xs.clone();
    if let Some((weight, eps)) = norm {
        let x = xs.to_dtype(DType::F32).unwrap();
        let variance = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        let inverse = (variance + eps as f64).unwrap().sqrt().unwrap().recip().unwrap();
        ys = x.broadcast_mul(&inverse).unwrap().to_dtype(xs.dtype()).unwrap().broadcast_mul(weight).unwrap();
    }
    let ys = ys.transpose(1, 2).unwrap().contiguous().unwrap();
    let Some((cos, sin)) = rope else { return ys };
    let (_, _, t, d) = ys.dims4().unwrap();
    let rotary = cos.dim(1).unwrap();
    let (cos, sin) = (cos.narrow(0, 0, t).unwrap(), sin.narrow(0, 0, t).unwrap());
    let rotated = ys.narrow(3, 0, rotary).unwrap().contiguous().unwrap();
    let half = rotary / 2;
    let x1 = rotated.narrow(3, 0, half).unwrap();
    let x2 = rotated.narrow(3, half, half).unwrap();
    let rotate_half = Tensor::cat(&[&x2.neg().unwrap(), &x1], 3).unwrap();
    let out = (rotated.broadcast_mul(&cos).unwrap() + rotate_half.broadcast_mul(&sin).unwrap()).unwrap();
    if rotary == d {
        out
    } else {
        Tensor::cat(&[&out, &ys.narrow(3, rotary, d - rotary).unwrap()], 3).unwrap()
    }
}

#[test]
fn head_norm_rope_matches_the_op_by_op_path() {
    let device = gpu();
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        // Full and partial rotary, with and without a norm, a rope-less layer, and a head wider than a warp's 32.
        for (heads, dim, rotary, with_norm) in
            [(4, 128, Some(128), true), (2, 64, Some(32), true), (3, 96, None, true), (4, 128, Some(64), false)]
        {
            let (b, t) = (2, 37);
            let xs = Tensor::randn(0f32, 2.0, (b, t, heads, dim), &device).unwrap().to_dtype(dtype).unwrap();
            let weight = Tensor::randn(1f32, 0.3, dim, &device).unwrap().to_dtype(dtype).unwrap();
            let tables = rotary.map(|r| {
                let angles = Tensor::randn(0f32, 3.0, (t + 5, r / 2), &device).unwrap();
                let angles = Tensor::cat(&[&angles, &angles], 1).unwrap();
                (angles.cos().unwrap().to_dtype(dtype).unwrap(), angles.sin().unwrap().to_dtype(dtype).unwrap())
            });
            let norm = with_norm.then_some((&weight, 1e-6f32));
            let rope = tables.as_ref().map(|(c, s)| (c, s));
            let got = cuda::head_norm_rope(&xs, norm, rope).unwrap();
            let expected = heads_reference(&xs, norm, rope);
            assert_eq!(got.dims(), [b, heads, t, dim]);
            // Normalised heads are of order 1: differences are measured in units at 0.5 at least (a rope sum that
            // cancels keeps the error of its terms).
            let worst = ulps_above(&got, &expected, dtype, 0.5);
            // A different order of the f32 sum of squares may move a rounded value by one unit, and the rope's sum
            // of two rounded products with it.
            let bound = if dtype == DType::F32 { 16.0 } else { 2.0 };
            assert!(
                worst <= bound,
                "{dtype:?} heads {heads} dim {dim} rotary {rotary:?} norm {with_norm}: {worst} ulps"
            );
        }
    }
}

/// The maximum the kernel recorded for its output is exactly max |x| over it (the amax kernel's value).
fn assert_recorded_max(out: &Tensor) {
    let recorded = cuda::known_max::known(out).expect("the kernel records its output's maximum");
    let recorded = recorded.to_scalar::<f32>().unwrap();
    let computed = cuda::amax(out).unwrap().to_scalar::<f32>().unwrap();
    assert!(computed > 0.0);
    assert_eq!(recorded, computed, "recorded maximum against the amax kernel's");
}

#[test]
fn rms_norm_matches_the_op_by_op_path() {
    let device = gpu();
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        // Rows held in registers (up to 8 and up to 16 elements a thread) and rows read twice.
        for (rows, dim) in [(7, 2048), (33, 100), (5, 3000), (4, 5000)] {
            let xs = Tensor::randn(0f32, 2.0, (rows, dim), &device).unwrap().to_dtype(dtype).unwrap();
            let weight = Tensor::randn(1f32, 0.3, dim, &device).unwrap().to_dtype(dtype).unwrap();
            let got = cuda::rms_norm(&xs, &weight, 1e-6).unwrap();
            let x = xs.to_dtype(DType::F32).unwrap();
            let inverse =
                (x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + 1e-6).unwrap().sqrt().unwrap().recip().unwrap();
            let expected = x.broadcast_mul(&inverse).unwrap().to_dtype(dtype).unwrap().broadcast_mul(&weight).unwrap();
            let worst = ulps(&got, &expected, dtype);
            let bound = if dtype == DType::F32 { 16.0 } else { 1.0 };
            assert!(worst <= bound, "{dtype:?} rows {rows} dim {dim}: {worst} ulps");
            assert_recorded_max(&got);
        }
    }
}

#[test]
fn add_rms_norm_is_the_sum_then_the_norm() {
    let device = gpu();
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        for (rows, dim) in [(7, 2048), (33, 100), (5, 3000), (4, 5000)] {
            let xs = Tensor::randn(0f32, 2.0, (rows, dim), &device).unwrap().to_dtype(dtype).unwrap();
            let branch = Tensor::randn(0f32, 3.0, (rows, dim), &device).unwrap().to_dtype(dtype).unwrap();
            let weight = Tensor::randn(1f32, 0.3, dim, &device).unwrap().to_dtype(dtype).unwrap();
            let (sum, normed) = cuda::add_rms_norm(&xs, &branch, &weight, 1e-6).unwrap();
            let expected_sum = (&xs + &branch).unwrap();
            assert_eq!(ulps(&sum, &expected_sum, dtype), 0.0, "{dtype:?} rows {rows} dim {dim}: the sum");
            let expected = cuda::rms_norm(&expected_sum, &weight, 1e-6).unwrap();
            assert_eq!(ulps(&normed, &expected, dtype), 0.0, "{dtype:?} rows {rows} dim {dim}: the norm");
            assert_recorded_max(&normed);
        }
    }
    let xs = Tensor::zeros((2, 64), DType::BF16, &device).unwrap();
    let narrow = Tensor::zeros((2, 32), DType::BF16, &device).unwrap();
    let weight = Tensor::ones(64, DType::BF16, &device).unwrap();
    let error = cuda::add_rms_norm(&xs, &narrow, &weight, 1e-6).unwrap_err().to_string();
    assert!(error.contains("add_rms_norm expects a BF16 residual [2, 64]"), "{error}");
}

#[test]
fn add_rounded_is_the_cast_then_the_sum() {
    let device = gpu();
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        for shape in [(2, 7, 2048), (1, 3, 100)] {
            let xs = Tensor::randn(0f32, 2.0, shape, &device).unwrap().to_dtype(dtype).unwrap();
            let branch = Tensor::randn(0f32, 3.0, shape, &device).unwrap();
            let got = cuda::add_rounded(&xs, &branch).unwrap();
            let expected = (&xs + branch.to_dtype(dtype).unwrap()).unwrap();
            assert_eq!(got.dims(), xs.dims());
            assert_eq!(ulps(&got, &expected, dtype), 0.0, "{dtype:?} {shape:?}");
        }
    }
    let xs = Tensor::zeros((2, 64), DType::BF16, &device).unwrap();
    let half = Tensor::zeros((2, 64), DType::BF16, &device).unwrap();
    let error = cuda::add_rounded(&xs, &half).unwrap_err().to_string();
    assert!(error.contains("add_rounded expects an F32 branch [2, 64]"), "{error}");
}

#[test]
fn gated_activation_matches_the_activation_in_f32_rounded_once() {
    let device = gpu();
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        let (rows, inter) = (19, 300);
        let gate_up = Tensor::randn(0f32, 3.0, (rows, 2 * inter), &device).unwrap().to_dtype(dtype).unwrap();
        // The reference activations in f64 on the CPU, rounded to f32 (what an exact f32 activation gives).
        let gate = gate_up.narrow(1, 0, inter).unwrap().to_device(&Device::Cpu).unwrap().to_dtype(DType::F64).unwrap();
        let up = gate_up.narrow(1, inter, inter).unwrap().to_device(&Device::Cpu).unwrap();
        for (kind, act) in [
            (cuda::GatedActivation::Silu, gate.silu().unwrap()),
            (cuda::GatedActivation::Gelu, gate.gelu_erf().unwrap()),
            (cuda::GatedActivation::GeluTanh, gate.gelu().unwrap()),
        ] {
            let got = cuda::gated_activation(&gate_up, kind).unwrap();
            let act = act.to_dtype(DType::F32).unwrap().to_dtype(dtype).unwrap();
            let expected = (act * &up).unwrap();
            // The kernel's f32 functions (expf, erff, tanhf) are within a few ulps, but where the GELUs cancel
            // towards 0 for negative inputs (1 + erf) keeps an absolute error of erff's, as any f32 GELU does (torch's
            // included): f32 is measured in units at 1 at least. Rounding to a half type may move the activation by
            // one unit and the product by two (in units at 0.01 at least).
            let floor = if dtype == DType::F32 { 1.0 } else { 1e-2 };
            let worst = ulps_above(&got.to_device(&Device::Cpu).unwrap(), &expected, dtype, floor);
            let bound = if dtype == DType::F32 { 64.0 } else { 2.0 };
            assert!(worst <= bound, "{dtype:?} {kind:?}: {worst} ulps");
            assert_recorded_max(&got);
        }
    }
}

#[test]
fn gather_rows_equals_index_select_and_all_finite_finds_nan_and_inf() {
    let device = gpu();
    for dtype in [DType::BF16, DType::F32] {
        for hidden in [2048, 6] {
            let src = Tensor::randn(0f32, 1.0, (50, hidden), &device).unwrap().to_dtype(dtype).unwrap();
            let index: Vec<u32> = (0..123u32).map(|i| (i * 37) % 50).collect();
            let index = Tensor::from_vec(index, 123, &device).unwrap();
            let got = cuda::gather_rows(&src, &index).unwrap();
            let expected = src.index_select(&index, 0).unwrap();
            assert_eq!(ulps(&got, &expected, dtype), 0.0, "{dtype:?} hidden {hidden}");
        }
        let finite = Tensor::randn(0f32, 1e3, (64, 777), &device).unwrap().to_dtype(dtype).unwrap();
        assert!(cuda::all_finite(&finite).unwrap());
        let mut values = vec![0.5f32; 64 * 777];
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            values[64 * 777 - 3] = bad;
            let xs = Tensor::from_slice(&values, (64, 777), &device).unwrap().to_dtype(dtype).unwrap();
            assert!(!cuda::all_finite(&xs).unwrap(), "{dtype:?} {bad}");
        }
    }
}
