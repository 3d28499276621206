//! The CUDA kernels (`moe_quant_core::cuda`, each format's `DeviceQuantize`) against the CPU reference (`moe_quant_core::formats`) and
//! ModelOpt's own bytes (fixtures/vectors): every output byte must be identical, for random and edge-case
//! inputs, in f32, bf16 and f16. Compiled only with the `cuda` feature and run on a GPU machine:
//!
//! ```sh
//! . tools/cuda-env.sh && cargo test --release -p moe-quant-core --features cuda --test kernels_cuda
//! ```
//!
//! `MOE_QUANT_VECTORS_DIR` overrides where the ModelOpt vectors are read from (for a binary copied elsewhere);
//! `MOE_QUANT_CUDA_PTX=sm80` tests the portable kernels on a GPU that would get the sm89 ones.
#![cfg(feature = "cuda")]
// clippy.toml's allow-*-in-tests covers `#[test]` functions only; the helpers here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;

use candle_core::{DType, Device, IndexOp, Tensor};
use moe_quant_core::cuda;
use moe_quant_core::formats::{DeviceQuantize, Fp8, Nvfp4, QuantFormat, QuantizedWeight, WeightInput};
use moe_quant_core::numerics::weight_amax;
use moe_quant_core::{Dtype, TensorView};
use safetensors::SafeTensors;

/// The FP8 kernel under test: E4M3 codes of `xs` with one scale per tensor or per expert.
fn fp8_on_gpu(xs: &Tensor, scales: &[f32]) -> moe_quant_core::Result<Tensor> {
    Ok(Fp8::default().quantize_on_device(xs, scales)?.remove(0))
}

/// The NVFP4 kernel's two outputs.
struct Nvfp4Out {
    packed: Tensor,
    block_scales: Tensor,
}

/// The NVFP4 kernel under test: packed codes and block scales of `xs` with one `weight_scale_2` per tensor or
/// per expert.
fn nvfp4_on_gpu(xs: &Tensor, scales_2: &[f32]) -> moe_quant_core::Result<Nvfp4Out> {
    let mut outputs = Nvfp4.quantize_on_device(xs, scales_2)?.into_iter();
    match (outputs.next(), outputs.next()) {
        (Some(packed), Some(block_scales)) => Ok(Nvfp4Out { packed, block_scales }),
        _ => Err(moe_quant_core::Error::internal("NVFP4 returned fewer than two tensors")),
    }
}

/// `weight_scale` of FP8 for a weight amax.
fn fp8_weight_scale(amax: f32) -> moe_quant_core::Result<f32> {
    Fp8::default().weight_scale("w", amax)
}

/// `weight_scale_2` of NVFP4 for a weight amax.
fn nvfp4_weight_scale_2(amax: f32) -> moe_quant_core::Result<f32> {
    Nvfp4.weight_scale("w", amax)
}

fn gpu() -> Device {
    cuda::device(0).expect("these tests need a CUDA GPU")
}

/// Values over several decades (so some land in E4M3's subnormal range), rounded to `dtype`.
fn random_values(count: usize, seed: u64, dtype: Dtype) -> Vec<f32> {
    let noise = common::unit_noise(count, seed);
    noise.into_iter().enumerate().map(|(i, unit)| round(unit * 10f32.powi((i % 9) as i32 - 5), dtype)).collect()
}

fn round(value: f32, dtype: Dtype) -> f32 {
    match dtype {
        Dtype::BF16 => half::bf16::from_f32(value).to_f32(),
        Dtype::F16 => half::f16::from_f32(value).to_f32(),
        _ => value,
    }
}

/// A device tensor holding `values` (exactly representable in `dtype`).
fn tensor(values: &[f32], dtype: Dtype, shape: &[usize], device: &Device) -> Tensor {
    let t = match dtype {
        Dtype::BF16 => {
            Tensor::from_vec(values.iter().map(|&v| half::bf16::from_f32(v)).collect::<Vec<_>>(), shape, device)
        }
        Dtype::F16 => {
            Tensor::from_vec(values.iter().map(|&v| half::f16::from_f32(v)).collect::<Vec<_>>(), shape, device)
        }
        _ => Tensor::from_vec(values.to_vec(), shape, device),
    };
    t.unwrap()
}

fn bytes(t: &Tensor) -> Vec<u8> {
    assert_eq!(t.dtype(), DType::U8);
    t.flatten_all().unwrap().to_vec1::<u8>().unwrap()
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn scalar_of(q: &QuantizedWeight, suffix: &str) -> f32 {
    f32::from_le_bytes(q.get(suffix).unwrap().data.clone().try_into().unwrap())
}

fn first_difference(got: &[u8], expected: &[u8]) -> String {
    assert_eq!(got.len(), expected.len(), "lengths differ");
    let differing = got.iter().zip(expected).filter(|(a, b)| a != b).count();
    match got.iter().zip(expected).position(|(a, b)| a != b) {
        None => "identical".into(),
        Some(i) => format!(
            "{differing} of {} bytes differ, first at {i}: GPU {:#04x}, CPU {:#04x}",
            got.len(),
            got[i],
            expected[i]
        ),
    }
}

/// FP8 of one weight on the CPU (the reference) and on the GPU; asserts equal bytes and scales.
fn check_fp8(label: &str, values: &[f32], dtype: Dtype, shape: [usize; 2], amax: f32, device: &Device) {
    let weight = WeightInput::new(label, dtype, &shape, values).unwrap();
    let cpu = Fp8::default().quantize(&weight, amax).unwrap();
    let scale = fp8_weight_scale(amax).unwrap();
    assert_eq!(scale, scalar_of(&cpu, "weight_scale"), "{label}: scale");
    let got = bytes(&fp8_on_gpu(&tensor(values, dtype, &shape, device), &[scale]).unwrap());
    let expected = &cpu.get("weight").unwrap().data;
    assert!(got == *expected, "{label} ({dtype}, amax {amax:e}): {}", first_difference(&got, expected));
}

/// NVFP4 of one weight on the CPU and on the GPU; asserts equal packed codes and block scales.
fn check_nvfp4(label: &str, values: &[f32], dtype: Dtype, shape: [usize; 2], amax: f32, device: &Device) {
    let weight = WeightInput::new(label, dtype, &shape, values).unwrap();
    let cpu = Nvfp4.quantize(&weight, amax).unwrap();
    let scale_2 = nvfp4_weight_scale_2(amax).unwrap();
    assert_eq!(scale_2, scalar_of(&cpu, "weight_scale_2"), "{label}: scale_2");
    let gpu = nvfp4_on_gpu(&tensor(values, dtype, &shape, device), &[scale_2]).unwrap();
    assert_eq!(gpu.packed.dims(), [shape[0], shape[1] / 2]);
    assert_eq!(gpu.block_scales.dims(), [shape[0], shape[1] / 16]);
    for (what, got, expected) in [
        ("block scales", bytes(&gpu.block_scales), &cpu.get("weight_scale").unwrap().data),
        ("codes", bytes(&gpu.packed), &cpu.get("weight").unwrap().data),
    ] {
        assert!(got == *expected, "{label} ({dtype}, amax {amax:e}) {what}: {}", first_difference(&got, expected));
    }
}

const SOURCES: [Dtype; 3] = [Dtype::F32, Dtype::BF16, Dtype::F16];

#[test]
fn fp8_random_weights_match_the_cpu() {
    let device = gpu();
    for (seed, dtype) in SOURCES.into_iter().enumerate() {
        for shape in [[64usize, 48], [3, 37], [1, 5], [256, 1024]] {
            let values = random_values(shape[0] * shape[1], seed as u64 + 1, dtype);
            let amax = weight_amax(&values);
            // Exact, above (no saturation, smaller codes), below (saturates), odd (bf16 double rounding), zero.
            for amax in [amax, amax * 1.37, amax * 0.25, 0.7 * 448.0, 0.0] {
                check_fp8(&format!("random {shape:?}"), &values, dtype, shape, amax, &device);
            }
        }
    }
}

#[test]
fn fp8_edge_cases_match_the_cpu() {
    let device = gpu();
    // Every E4M3 code's value, the midpoints between neighbours (ties to even), just either side of them,
    // the subnormal range and its flush-to-zero edge, beyond the max, and signed zeros.
    let mut values = Vec::new();
    for code in 0u8..0x7E {
        let low = moe_quant_core::numerics::e4m3::e4m3_to_f32(code);
        let high = moe_quant_core::numerics::e4m3::e4m3_to_f32(code + 1);
        let middle = (low + high) / 2.0;
        values.extend([low, middle, middle.next_up(), middle.next_down(), -middle, -low]);
    }
    values.extend([448.0, 464.0, 1e30, -1e30, 0.0, -0.0, 2f32.powi(-10), -(2f32.powi(-10)), 1e-40, -1e-42]);
    values.extend([f32::MIN_POSITIVE, 3.0 * 2f32.powi(-10), 15.0 * 2f32.powi(-10)]);
    while values.len() % 16 != 0 {
        values.push(0.5);
    }
    let shape = [values.len() / 16, 16];
    // amax 448 makes the scale 1: the values are encoded as they are.
    check_fp8("e4m3 grid, ties, subnormals", &values, Dtype::F32, shape, 448.0, &device);
    check_fp8("e4m3 grid, scaled", &values, Dtype::F32, shape, 7.0, &device);
    for dtype in [Dtype::BF16, Dtype::F16] {
        let rounded: Vec<f32> = values.iter().map(|&v| round(v, dtype)).filter(|v| v.is_finite()).collect();
        let rows = rounded.len() / 16;
        check_fp8("e4m3 grid", &rounded[..rows * 16], dtype, [rows, 16], 448.0, &device);
        check_fp8("e4m3 grid, scaled", &rounded[..rows * 16], dtype, [rows, 16], 0.7 * 448.0, &device);
    }
    let zeros = [0.0f32, -0.0, 0.0, -0.0].repeat(8);
    for dtype in SOURCES {
        check_fp8("zeros", &zeros, dtype, [2, 16], 0.0, &device);
    }
}

/// Every finite bf16 and f16 value, and f32 values with every pattern of their top 11 mantissa bits over the
/// exponents that reach E4M3 (low bits at and around the rounding points), in blocks of 16.
fn sweep(dtype: Dtype) -> Vec<f32> {
    let mut values: Vec<f32> = match dtype {
        Dtype::BF16 => (0..=u16::MAX).map(|b| half::bf16::from_bits(b).to_f32()).filter(|v| v.is_finite()).collect(),
        Dtype::F16 => (0..=u16::MAX).map(|b| half::f16::from_bits(b).to_f32()).filter(|v| v.is_finite()).collect(),
        _ => (100u32..=140)
            .flat_map(|exponent| {
                (0u32..2048).flat_map(move |high| {
                    [0u32, 1, 0x7FF, 0x800, 0x801, 0xFFF].into_iter().flat_map(move |low| {
                        let bits = (exponent << 23) | (high << 12) | low;
                        [f32::from_bits(bits), -f32::from_bits(bits)]
                    })
                })
            })
            .collect(),
    };
    values.truncate(values.len() / 32 * 32);
    values
}

#[test]
fn fp8_every_bf16_and_f16_value_and_an_f32_sweep() {
    let device = gpu();
    for dtype in SOURCES {
        let values = sweep(dtype);
        let shape = [values.len() / 16, 16];
        // Scale 1 (the values as they are), ordinary scales, one below the fast path's range and the smallest.
        for amax in [448.0, 313.6, 0.0123, 7.5e4, 1e-20, 1e-39] {
            check_fp8("sweep", &values, dtype, shape, amax, &device);
        }
        let moderate: Vec<f32> = values.iter().copied().filter(|v| v.abs() < 1e4).collect();
        let moderate = &moderate[..moderate.len() / 16 * 16];
        check_fp8("moderate sweep", moderate, dtype, [moderate.len() / 16, 16], weight_amax(moderate) * 0.9, &device);
    }
}

#[test]
fn nvfp4_every_bf16_and_f16_value_and_an_f32_sweep() {
    let device = gpu();
    for dtype in SOURCES {
        let values = sweep(dtype);
        let amax = weight_amax(&values);
        for amax in [amax, 2688.0, 1.0, 1e-3, 1e-30] {
            check_nvfp4("sweep", &values, dtype, [values.len() / 32, 32], amax, &device);
        }
        // Neighbouring values in one block: block scales in the fast path's range.
        let moderate: Vec<f32> = values.iter().copied().filter(|v| v.abs() < 1e4 && v.abs() > 1e-4).collect();
        let moderate = &moderate[..moderate.len() / 32 * 32];
        for amax in [weight_amax(moderate), 3.0, 1e3] {
            check_nvfp4("moderate sweep", moderate, dtype, [moderate.len() / 32, 32], amax, &device);
        }
    }
}

#[test]
fn fp8_per_expert_scales_strided_and_misaligned_views() {
    let device = gpu();
    let (experts, rows, cols) = (8usize, 64, 96);
    let values = random_values(experts * rows * cols, 77, Dtype::BF16);
    let xs = tensor(&values, Dtype::BF16, &[experts, rows, cols], &device);
    let per_expert = rows * cols;
    let amaxes: Vec<f32> = values.chunks(per_expert).map(weight_amax).collect();
    let scales: Vec<f32> = amaxes.iter().map(|&a| fp8_weight_scale(a).unwrap()).collect();
    let got = bytes(&fp8_on_gpu(&xs, &scales).unwrap());
    for e in 0..experts {
        let chunk = &values[e * per_expert..(e + 1) * per_expert];
        let weight = WeightInput::new("expert", Dtype::BF16, &[rows, cols], chunk).unwrap();
        let cpu = Fp8::default().quantize(&weight, amaxes[e]).unwrap();
        let expected = &cpu.get("weight").unwrap().data;
        let got = &got[e * per_expert..(e + 1) * per_expert];
        assert!(got == expected.as_slice(), "expert {e}: {}", first_difference(got, expected));
    }
    // A view starting at an odd element (not 16-byte aligned) and a transposed (strided) view.
    let scale = scales[0];
    let flat = xs.flatten_all().unwrap();
    let narrow = flat.narrow(0, 3, 1000).unwrap();
    let weight = WeightInput::new("narrow", Dtype::BF16, &[1, 1000], &values[3..1003]).unwrap();
    let expected = Fp8::default().quantize(&weight, amaxes[0]).unwrap().get("weight").unwrap().data.clone();
    assert_eq!(bytes(&fp8_on_gpu(&narrow, &[scale]).unwrap()), expected);
    let transposed = xs.i(0).unwrap().t().unwrap();
    let t_values: Vec<f32> =
        (0..cols).flat_map(|c| (0..rows).map(move |r| (r, c))).map(|(r, c)| values[r * cols + c]).collect();
    let weight = WeightInput::new("transposed", Dtype::BF16, &[cols, rows], &t_values).unwrap();
    let expected = Fp8::default().quantize(&weight, amaxes[0]).unwrap().get("weight").unwrap().data.clone();
    assert_eq!(bytes(&fp8_on_gpu(&transposed, &[scale]).unwrap()), expected);
    // Experts whose size is not a multiple of 16 take the scalar path.
    let odd = random_values(3 * 5 * 7, 5, Dtype::F32);
    let amaxes: Vec<f32> = odd.chunks(35).map(weight_amax).collect();
    let scales: Vec<f32> = amaxes.iter().map(|&a| fp8_weight_scale(a).unwrap()).collect();
    let got = bytes(&fp8_on_gpu(&tensor(&odd, Dtype::F32, &[3, 5, 7], &device), &scales).unwrap());
    for e in 0..3 {
        let weight = WeightInput::new("odd", Dtype::F32, &[5, 7], &odd[e * 35..(e + 1) * 35]).unwrap();
        assert_eq!(
            &got[e * 35..(e + 1) * 35],
            Fp8::default().quantize(&weight, amaxes[e]).unwrap().get("weight").unwrap().data
        );
    }
}

#[test]
fn nvfp4_random_weights_match_the_cpu() {
    let device = gpu();
    for (seed, dtype) in SOURCES.into_iter().enumerate() {
        for shape in [[64usize, 128], [3, 32], [1, 16], [512, 2048]] {
            let values = random_values(shape[0] * shape[1], seed as u64 + 11, dtype);
            let amax = weight_amax(&values);
            for amax in [amax, amax * 1.37, amax * 0.25, amax * 1e-3, amax * 1e4, 0.0] {
                check_nvfp4(&format!("random {shape:?}"), &values, dtype, shape, amax, &device);
            }
        }
    }
}

#[test]
fn nvfp4_edge_cases_match_the_cpu() {
    let device = gpu();
    // amax 2688 makes weight_scale_2 = 1; a block holding 6 gets block scale 1, so its values are rounded as
    // they are: every E2M1 midpoint (ties to even), either side of each, negatives that round to zero, -0.0.
    let mut blocks: Vec<[f32; 16]> = Vec::new();
    let ties = [0.25f32, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0];
    let mut tie_block = [6.0f32; 16];
    for (i, t) in ties.iter().enumerate() {
        tie_block[1 + 2 * i] = *t;
        tie_block[2 + 2 * i] = -t;
    }
    blocks.push(tie_block);
    let mut around = [6.0f32; 16];
    for (i, t) in ties.iter().enumerate() {
        around[1 + 2 * i] = t.next_up();
        around[2 + 2 * i] = -t.next_down();
    }
    blocks.push(around);
    blocks.push([6.0, -0.1, -0.0, -0.24, -0.25, 0.1, 0.0, -1e-30, 0.24, -5.9, 5.9, -6.0, 7.0, -100.0, 1e-45, -1e-45]);
    blocks.push([0.0; 16]);
    blocks.push([-0.0; 16]);
    blocks.push([1e-6, -1e-6, 0.0, 3e-7, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2e-6]);
    blocks.push([1e3, -2e3, 5e2, 0.5, 0.0, 1.0, -1.0, 4e3, 3e3, -3e3, 2.5e3, 1.75e3, 0.0, 0.0, 0.0, 1.0]);
    blocks.push([1e-40, -1e-40, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1e-39]);
    let values: Vec<f32> = blocks.iter().flatten().copied().collect();
    let shape = [blocks.len() / 2, 32];
    // amax 2688: scale_2 = 1; 100: block scales saturate at 448; 1e-3 and 1e6: clamp at 2^-9 in the small blocks.
    for amax in [2688.0, 100.0, 1e6, 1e-3, 1e-38, 0.0] {
        check_nvfp4("edge blocks", &values, Dtype::F32, shape, amax, &device);
    }
    for dtype in [Dtype::BF16, Dtype::F16] {
        let rounded: Vec<f32> = values.iter().map(|&v| round(v, dtype)).collect();
        for amax in [2688.0, 100.0, 0.0] {
            check_nvfp4("edge blocks", &rounded, dtype, shape, amax, &device);
        }
    }
}

#[test]
fn nvfp4_per_expert_scales() {
    let device = gpu();
    let (experts, rows, cols) = (8usize, 96, 256);
    for dtype in [Dtype::BF16, Dtype::F32] {
        let values = random_values(experts * rows * cols, 99, dtype);
        let per_expert = rows * cols;
        let amaxes: Vec<f32> = values.chunks(per_expert).map(|c| weight_amax(c) * 0.9).collect();
        let scales: Vec<f32> = amaxes.iter().map(|&a| nvfp4_weight_scale_2(a).unwrap()).collect();
        let xs = tensor(&values, dtype, &[experts, rows, cols], &device);
        let gpu = nvfp4_on_gpu(&xs, &scales).unwrap();
        assert_eq!(gpu.packed.dims(), [experts, rows, cols / 2]);
        let (packed, block_scales) = (bytes(&gpu.packed), bytes(&gpu.block_scales));
        for e in 0..experts {
            let chunk = &values[e * per_expert..(e + 1) * per_expert];
            let weight = WeightInput::new("expert", dtype, &[rows, cols], chunk).unwrap();
            let cpu = Nvfp4.quantize(&weight, amaxes[e]).unwrap();
            let (p, s) = (per_expert / 2, per_expert / 16);
            assert_eq!(&packed[e * p..(e + 1) * p], cpu.get("weight").unwrap().data, "expert {e} codes");
            assert_eq!(&block_scales[e * s..(e + 1) * s], cpu.get("weight_scale").unwrap().data, "expert {e} scales");
        }
    }
}

#[test]
fn amax_kernels_match_the_cpu() {
    let device = gpu();
    for dtype in SOURCES {
        for dims in [[8usize, 64, 96], [3, 5, 7], [1, 1, 16], [128, 48, 256]] {
            let count = dims.iter().product();
            let values = random_values(count, count as u64, dtype);
            let xs = tensor(&values, dtype, &dims, &device);
            let total = cuda::amax(&xs).unwrap();
            assert_eq!(total.dims(), [0usize; 0]);
            assert_eq!(total.to_scalar::<f32>().unwrap(), weight_amax(&values), "{dtype} {dims:?}");
            let per_expert = count / dims[0];
            let expected: Vec<f32> = values.chunks(per_expert).map(weight_amax).collect();
            assert_eq!(f32s(&cuda::amax_per_expert(&xs).unwrap()), expected, "{dtype} {dims:?} per expert");
            if dims[2] % 16 == 0 {
                let expected: Vec<f32> = values.chunks(16).map(weight_amax).collect();
                let got = moe_quant_core::formats::block_amax(&xs).unwrap();
                assert_eq!(got.dims(), [dims[0], dims[1], dims[2] / 16]);
                assert_eq!(f32s(&got), expected, "{dtype} {dims:?} per block");
            }
        }
    }
    // NaN is skipped like the CPU's weight_amax; infinity wins; zeros give 0.
    let mut values = random_values(4096, 3, Dtype::F32);
    values[1000] = f32::NAN;
    let xs = tensor(&values, Dtype::F32, &[4096], &device);
    assert_eq!(cuda::amax(&xs).unwrap().to_scalar::<f32>().unwrap(), weight_amax(&values));
    values[2000] = f32::NEG_INFINITY;
    let xs = tensor(&values, Dtype::F32, &[4096], &device);
    assert_eq!(cuda::amax(&xs).unwrap().to_scalar::<f32>().unwrap(), f32::INFINITY);
    let zeros = tensor(&[-0.0; 64], Dtype::BF16, &[64], &device);
    assert_eq!(cuda::amax(&zeros).unwrap().to_scalar::<f32>().unwrap().to_bits(), 0);
}

#[test]
fn amax_of_many_tensors_in_one_launch_matches_the_cpu() {
    let device = gpu();
    for dtype in SOURCES {
        // Experts of different sizes (tails shorter than 16 elements included), a gate/up pair as the two halves
        // of one tensor (views read in place), and a view starting off a 16-byte boundary (copied).
        let shapes: [&[usize]; 5] = [&[96, 64], &[3, 5, 7], &[1, 16], &[7], &[1536, 256]];
        let mut values = Vec::new();
        let mut tensors = Vec::new();
        for (i, dims) in shapes.iter().enumerate() {
            let count = dims.iter().product();
            let v = random_values(count, 100 + i as u64, dtype);
            tensors.push(tensor(&v, dtype, dims, &device));
            values.push(v);
        }
        let pair = tensors[4].clone();
        let (gate, up) = (pair.narrow(0, 0, 768).unwrap(), pair.narrow(0, 768, 768).unwrap());
        let odd = tensors[0].flatten_all().unwrap().narrow(0, 3, 100).unwrap();
        let mut views: Vec<&Tensor> = tensors.iter().collect();
        views.extend([&gate, &up, &odd]);
        let half = values[4].len() / 2;
        let mut expected: Vec<f32> = values.iter().map(|v| weight_amax(v)).collect();
        expected.push(weight_amax(&values[4][..half]));
        expected.push(weight_amax(&values[4][half..]));
        expected.push(weight_amax(&values[0][3..103]));
        let got = cuda::amax_each(&views).unwrap();
        assert_eq!(f32s(&got), expected, "{dtype}");
        // What the per-tensor kernel gives, element by element.
        for (view, want) in views.iter().zip(&expected) {
            assert_eq!(cuda::amax(view).unwrap().to_scalar::<f32>().unwrap(), *want, "{dtype} {:?}", view.dims());
        }
    }
}

#[test]
fn expert_split_matches_candle_on_the_cpu() {
    let device = gpu();
    for dtype in SOURCES {
        for (experts, inter, hidden) in [(4usize, 24usize, 40usize), (2, 768, 2048), (3, 5, 3)] {
            let count = experts * 2 * inter * hidden;
            let values = random_values(count, 5, dtype);
            let cpu = tensor(&values, dtype, &[experts, 2 * inter, hidden], &Device::Cpu);
            let xs = cpu.to_device(&device).unwrap();
            let (gate, up) = cuda::split_gate_up(&xs).unwrap();
            let expected_gate = cpu.narrow(1, 0, inter).unwrap().contiguous().unwrap();
            let expected_up = cpu.narrow(1, inter, inter).unwrap().contiguous().unwrap();
            assert_same(&gate, &expected_gate, "gate");
            assert_same(&up, &expected_up, "up");

            // Transposed [E, H, 2I]: concatenated halves, then interleaved columns.
            let cpu = tensor(&values, dtype, &[experts, hidden, 2 * inter], &Device::Cpu);
            let xs = cpu.to_device(&device).unwrap();
            let (gate, up) = cuda::split_gate_up_transposed(&xs, false).unwrap();
            let linear = |t: Tensor| t.transpose(1, 2).unwrap().contiguous().unwrap();
            assert_same(&gate, &linear(cpu.narrow(2, 0, inter).unwrap()), "transposed gate");
            assert_same(&up, &linear(cpu.narrow(2, inter, inter).unwrap()), "transposed up");
            let (gate, up) = cuda::split_gate_up_transposed(&xs, true).unwrap();
            let pairs = cpu.reshape((experts, hidden, inter, 2)).unwrap();
            assert_same(&gate, &linear(pairs.narrow(3, 0, 1).unwrap().squeeze(3).unwrap()), "interleaved gate");
            assert_same(&up, &linear(pairs.narrow(3, 1, 1).unwrap().squeeze(3).unwrap()), "interleaved up");
        }
    }
}

/// Each range of rows times its own weight, in one call, against the f32 product on the CPU: empty, single-row
/// and uneven ranges, ranges of whole 256-row chunks with and without a remainder (the batched GEMM and the grouped
/// one), weights that are views into one stacked tensor (non-zero start offsets) as well as separate tensors, bf16
/// and f16.
#[test]
#[allow(clippy::single_range_in_vec_init)] // one range of rows per weight: a slice of one range is meant
fn grouped_matmul_matches_per_expert_products() {
    let device = gpu();
    let uniform = |count: usize, seed: u64, dtype: Dtype| -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..count)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                round(((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0, dtype)
            })
            .collect()
    };
    for dtype in [Dtype::BF16, Dtype::F16] {
        for (k, n, bounds) in [
            (64usize, 96usize, vec![0usize, 5, 5, 37, 38, 100]),
            (2048, 1536, vec![0, 300, 300, 301, 700]),
            (768, 2048, vec![0, 1, 450, 451]),
            (256, 512, vec![0, 600, 1112, 1112, 1400]),
        ] {
            let ranges: Vec<std::ops::Range<usize>> = bounds.windows(2).map(|w| w[0]..w[1]).collect();
            let rows = *bounds.last().unwrap();
            let xs_values = uniform(rows * k, 11, dtype);
            let w_values = uniform(ranges.len() * n * k, 12, dtype);
            let xs = tensor(&xs_values, dtype, &[rows, k], &device);
            let stacked = tensor(&w_values, dtype, &[ranges.len(), n, k], &device);
            let views: Vec<Tensor> = (0..ranges.len()).map(|i| stacked.i(i).unwrap()).collect();
            let separate: Vec<Tensor> = views.iter().map(|v| v.copy().unwrap()).collect();
            for (label, weights) in [("views", &views), ("separate", &separate)] {
                let weights: Vec<&Tensor> = weights.iter().collect();
                let got = cuda::grouped_matmul_t(&xs, &weights, &ranges).unwrap();
                assert_eq!(got.dims(), [rows, n]);
                assert_eq!(got.dtype(), xs.dtype());
                let got = f32s(&got.to_dtype(DType::F32).unwrap());
                let mut worst = 0.0f32;
                for (i, range) in ranges.iter().enumerate() {
                    for r in range.clone() {
                        for j in 0..n {
                            let exact: f32 = (0..k).map(|c| xs_values[r * k + c] * w_values[(i * n + j) * k + c]).sum();
                            // f32 accumulation, one rounding to the 16-bit output: 2^-8 relative (bf16), plus the
                            // summation order's error.
                            let error = (got[r * n + j] - exact).abs() / (exact.abs() + 1e-2 * (k as f32).sqrt());
                            worst = worst.max(error);
                        }
                    }
                }
                assert!(worst < 8e-3, "{dtype:?} k={k} n={n} {label}: relative error {worst}");
            }
        }
    }
    // Ranges must tile the rows.
    let xs = tensor(&[0.0; 8], Dtype::BF16, &[2, 4], &device);
    let w = tensor(&[0.0; 12], Dtype::BF16, &[3, 4], &device);
    assert!(cuda::grouped_matmul_t(&xs, &[&w], &[0..1]).is_err());
    assert!(cuda::grouped_matmul_t(&xs, &[&w, &w], &[1..2, 0..1]).is_err());
}

fn assert_same(got: &Tensor, expected: &Tensor, what: &str) {
    assert_eq!(got.dims(), expected.dims(), "{what}");
    assert_eq!(got.dtype(), expected.dtype(), "{what}");
    let as_bits = |t: &Tensor| -> Vec<u32> {
        let t = t.to_device(&Device::Cpu).unwrap().flatten_all().unwrap();
        match t.dtype() {
            DType::BF16 => t.to_vec1::<half::bf16>().unwrap().iter().map(|v| u32::from(v.to_bits())).collect(),
            DType::F16 => t.to_vec1::<half::f16>().unwrap().iter().map(|v| u32::from(v.to_bits())).collect(),
            _ => t.to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect(),
        }
    };
    assert!(as_bits(got) == as_bits(expected), "{what}: {:?} elements differ", got.dims());
}

/// The GPU kernels on ModelOpt's own vectors (fixtures/vectors, see tests/formats_vectors.rs).
#[test]
fn gpu_matches_modelopt_vectors() {
    let device = gpu();
    let dir = std::env::var_os("MOE_QUANT_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/vectors"));
    let mut compared = 0;
    for format in ["fp8", "nvfp4"] {
        let file_bytes = std::fs::read(dir.join(format!("{format}.safetensors"))).expect("ModelOpt vectors");
        let (_, metadata) = SafeTensors::read_metadata(&file_bytes).unwrap();
        let cases = metadata.metadata().clone().unwrap()["cases"].clone();
        let file = SafeTensors::deserialize(&file_bytes).unwrap();
        for case in cases.split(',') {
            let input = file.tensor(&format!("{case}.input")).unwrap();
            let dtype = Dtype::from_safetensors(input.dtype()).unwrap();
            let shape = input.shape().to_vec();
            let view = TensorView { name: case, dtype, shape: &shape, data: input.data() };
            let values = view.to_f32();
            let amax = f32::from_le_bytes(file.tensor(&format!("{case}.amax")).unwrap().data().try_into().unwrap());
            let xs = tensor(&values, dtype, &shape, &device);
            // The `zeros_*` cases hold moe-quant's rule for a zero amax, as the CPU test documents.
            let want = |suffix: &str| file.tensor(&format!("{case}.{suffix}")).unwrap().data().to_vec();
            if format == "fp8" {
                let scale = fp8_weight_scale(amax).unwrap();
                assert_eq!(scale.to_le_bytes().to_vec(), want("weight_scale"), "{case} scale");
                assert_eq!(bytes(&fp8_on_gpu(&xs, &[scale]).unwrap()), want("weight"), "fp8 {case}");
            } else {
                let scale_2 = nvfp4_weight_scale_2(amax).unwrap();
                assert_eq!(scale_2.to_le_bytes().to_vec(), want("weight_scale_2"), "{case} scale_2");
                let gpu = nvfp4_on_gpu(&xs, &[scale_2]).unwrap();
                assert_eq!(bytes(&gpu.packed), want("weight"), "nvfp4 {case} codes");
                assert_eq!(bytes(&gpu.block_scales), want("weight_scale"), "nvfp4 {case} block scales");
            }
            compared += 1;
        }
    }
    assert!(compared >= 30, "{compared} cases");
}

#[test]
fn fp8_with_torch_cuda_arithmetic_matches_the_cpu() {
    // A GPU run divides bf16 / f16 weights by the scale rounded to their dtype, as torch does on CUDA.
    let device = gpu();
    let format = Fp8 { torch_cuda: true };
    for (seed, dtype) in SOURCES.into_iter().enumerate() {
        let shape = [96usize, 160];
        let values = random_values(shape[0] * shape[1], seed as u64 + 11, dtype);
        for amax in [weight_amax(&values), weight_amax(&values) * 1.37, 0.7 * 448.0] {
            let weight = WeightInput::new("w", dtype, &shape, &values).unwrap();
            let cpu = format.quantize(&weight, amax).unwrap();
            let scale = scalar_of(&cpu, "weight_scale");
            let gpu = format.quantize_on_device(&tensor(&values, dtype, &shape, &device), &[scale]).unwrap();
            let (got, expected) = (bytes(&gpu[0]), &cpu.get("weight").unwrap().data);
            assert!(got == *expected, "{dtype} amax {amax:e}: {}", first_difference(&got, expected));
        }
    }
}

#[test]
fn the_quantization_error_summed_on_the_gpu_is_the_cpu_s() {
    // Experts of a real shape with weights as models have them (the decades of `random_values` would make most
    // NVFP4 codes zero), and the small test shapes: the error and norm sums against the CPU's f64 sums.
    let device = gpu();
    let cases = [(3usize, 1536usize, 2048usize, 5u64), (5, 48, 64, 91), (1, 16, 32, 7)];
    for (experts, rows, cols, seed) in cases {
        let per_expert = rows * cols;
        let values: Vec<f32> = random_values(experts * per_expert, seed, Dtype::F32)
            .iter()
            .map(|&v| round(v.signum() * (v.abs() * 1e4).ln_1p() * 0.004, Dtype::BF16))
            .collect();
        let xs = tensor(&values, Dtype::BF16, &[experts, rows, cols], &device);
        let formats: [&dyn QuantFormat; 2] = [&Fp8 { torch_cuda: true }, &Nvfp4];
        for format in formats {
            let kernel = format.on_device().unwrap();
            let amaxes: Vec<f32> = values.chunks(per_expert).map(weight_amax).collect();
            let scales: Vec<f32> = amaxes.iter().map(|&a| format.weight_scale("w", a).unwrap()).collect();
            let parts = kernel.quantize_on_device(&xs, &scales).unwrap();
            let sums = f32s(&kernel.error_on_device(&xs, &parts, &scales).unwrap());
            let (mut error, mut norm) = (0f64, 0f64);
            for (e, chunk) in values.chunks(per_expert).enumerate() {
                let weight = WeightInput::new("w", Dtype::BF16, &[rows, cols], chunk).unwrap();
                let cpu = format.quantize(&weight, amaxes[e]).unwrap();
                let (_, restored) = format.dequantize("w", &cpu.views()).unwrap();
                error += restored.iter().zip(chunk).map(|(a, b)| f64::from(a - b).powi(2)).sum::<f64>();
                norm += chunk.iter().map(|&b| f64::from(b).powi(2)).sum::<f64>();
            }
            let label = format!("{} [{experts}, {rows}, {cols}]", format.quant_algo());
            println!("{label}: error {} / {error:e}, norm {} / {norm:e}", sums[0], sums[1]);
            assert!((f64::from(sums[0]) - error).abs() <= 1e-4 * error, "{label}: error {} vs {error}", sums[0]);
            assert!((f64::from(sums[1]) - norm).abs() <= 1e-4 * norm, "{label}: norm {} vs {norm}", sums[1]);
        }
    }
}
