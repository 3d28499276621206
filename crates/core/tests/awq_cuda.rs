//! The AWQ search on a GPU against the same search on the CPU: its fake quantizers give the same values, and on
//! the same bf16 inputs and weights the search keeps the same alphas with the same smoothing. Compiled only with the
//! `cuda` feature and run on a GPU machine:
//!
//! ```sh
//! . tools/cuda-env.sh && cargo test --release -p moe-quant-core --features cuda --test awq_cuda
//! ```
#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use candle_core::{DType, Device, Tensor};
use moe_quant_core::awq::search::{fake_int4, fake_nvfp4, AwqSearch};
use moe_quant_core::cuda;
use moe_quant_core::formats::AwqQuantizer;
use moe_quant_core::Dtype;

fn gpu() -> Device {
    cuda::device(0).expect("these tests need a CUDA GPU")
}

/// Deterministic bf16 values of a few magnitudes.
fn values(count: usize, seed: u64) -> Vec<f32> {
    let noise = common::unit_noise(count, seed);
    noise
        .into_iter()
        .enumerate()
        .map(|(i, unit)| half::bf16::from_f32(unit * [0.02, 0.05, 1.0, 3.0][i % 4]).to_f32())
        .collect()
}

fn on(device: &Device, values: &[f32], shape: (usize, usize), dtype: DType) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap().to_device(device).unwrap()
}

fn host(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn fake_quantizers_give_the_cpus_values() {
    let w = values(256 * 512, 7);
    let (cpu, gpu) = (on(&Device::Cpu, &w, (256, 512), DType::F32), on(&gpu(), &w, (256, 512), DType::F32));
    assert_eq!(host(&fake_int4(&gpu, 128, Dtype::BF16).unwrap()), host(&fake_int4(&cpu, 128, Dtype::BF16).unwrap()));
    assert_eq!(host(&fake_nvfp4(&gpu, Dtype::BF16).unwrap()), host(&fake_nvfp4(&cpu, Dtype::BF16).unwrap()));
}

#[test]
fn the_search_keeps_the_cpus_alphas() {
    for quantizer in [AwqQuantizer::Int4, AwqQuantizer::Nvfp4] {
        let mut results = Vec::new();
        for (device, dtype) in [(Device::Cpu, DType::F32), (gpu(), DType::BF16)] {
            let weight = on(&device, &values(384 * 256, 11), (384, 256), dtype);
            let batches: Vec<Tensor> =
                (0..3).map(|b| on(&device, &values(64 * 256, 20 + b), (64, 256), dtype)).collect();
            let mut search = AwqSearch::new(quantizer, Dtype::BF16, BTreeSet::from(["m".to_string()]), BTreeSet::new());
            batches.iter().for_each(|x| search.record_linear("m", x, &weight).unwrap());
            search.start_search();
            batches.iter().for_each(|x| search.record_linear("m", x, &weight).unwrap());
            results.push(search.finish().unwrap().remove("m").unwrap());
        }
        let (cpu, gpu) = (&results[0], &results[1]);
        assert_eq!(cpu.alpha, gpu.alpha, "{quantizer:?}");
        assert_eq!(cpu.channel_amax, gpu.channel_amax, "{quantizer:?}");
        for (a, b) in cpu.smoothing.inverse.iter().zip(&gpu.smoothing.inverse) {
            assert!((a - b).abs() <= 1e-2 * a.abs(), "{quantizer:?}: 1/s {a} on the CPU, {b} on the GPU");
        }
    }
}
