//! FP8 and NVFP4 quantization against ModelOpt's own bytes: fixtures/vectors/{fp8,nvfp4}.safetensors, written
//! by tools/make_format_vectors.py from ModelOpt 0.47's unified HF export (see its docstring for the cases and
//! the one deliberate difference, the all-zero weight). Every weight byte and scale must be identical.

// clippy.toml's allow-*-in-tests covers `#[test]` functions only; the helpers here are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Instant;

use moe_quant_core::formats::{format, FormatName, QuantFormat, QuantizedWeight, WeightInput};
use moe_quant_core::numerics::weight_amax;

/// The format with this name, as options spell it.
fn format_by_name(name: &str) -> Option<Box<dyn QuantFormat>> {
    FormatName::ALL.into_iter().find(|f| f.as_str() == name).map(|f| format(f, false))
}
use moe_quant_core::{Dtype, TensorView};
use safetensors::SafeTensors;

fn vectors_path(format: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../fixtures/vectors/{format}.safetensors"))
}

struct Stored<'a> {
    dtype: Dtype,
    shape: Vec<usize>,
    data: &'a [u8],
}

fn stored<'a>(file: &'a SafeTensors<'a>, name: &str) -> Stored<'a> {
    let view = file.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let dtype = Dtype::from_safetensors(view.dtype()).unwrap();
    Stored { dtype, shape: view.shape().to_vec(), data: view.data() }
}

fn f32_values(file: &SafeTensors, name: &str) -> Vec<f32> {
    let s = stored(file, name);
    TensorView { name, dtype: s.dtype, shape: &s.shape, data: s.data }.to_f32()
}

fn scalar(file: &SafeTensors, name: &str) -> f32 {
    let s = stored(file, name);
    assert_eq!((s.dtype, s.shape.len()), (Dtype::F32, 0), "{name}");
    f32::from_le_bytes(s.data.try_into().unwrap())
}

/// Runs every case of one file; returns how many tensors were compared.
fn check_format(format_name: &str, suffixes: &[&str]) -> usize {
    let bytes = std::fs::read(vectors_path(format_name)).expect("run tools/make_format_vectors.py");
    let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = metadata.metadata().clone().unwrap();
    assert_eq!(metadata["format"], format_name);
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let format = format_by_name(format_name).unwrap();
    let cases: Vec<&str> = metadata["cases"].split(',').collect();
    assert!(cases.len() >= 15, "{cases:?}");

    let mut compared = 0;
    let mut failures = Vec::new();
    for case in &cases {
        let input_name = format!("{case}.input");
        let input = stored(&file, &input_name);
        let values = f32_values(&file, &input_name);
        let weight = WeightInput::new(&input_name, input.dtype, &input.shape, &values).unwrap();
        let amax = scalar(&file, &format!("{case}.amax"));
        let quantized: QuantizedWeight = format.quantize(&weight, amax).unwrap();
        assert_eq!(quantized.tensors.iter().map(|t| t.suffix).collect::<Vec<_>>(), suffixes);
        for suffix in suffixes {
            let expected = stored(&file, &format!("{case}.{suffix}"));
            let got = quantized.get(suffix).unwrap();
            assert_eq!((got.dtype, &got.shape), (expected.dtype, &expected.shape), "{format_name} {case}.{suffix}");
            if got.data != expected.data {
                let differing = got.data.iter().zip(expected.data).filter(|(a, b)| a != b).count();
                let first = got.data.iter().zip(expected.data).position(|(a, b)| a != b).unwrap();
                failures.push(format!(
                    "{case}.{suffix}: {differing} of {} bytes differ, first at byte {first} (got {:#04x}, expected {:#04x})",
                    got.data.len(),
                    got.data[first],
                    expected.data[first]
                ));
            }
            compared += 1;
        }
    }
    assert!(failures.is_empty(), "{format_name}: bytes differ from ModelOpt:\n{}", failures.join("\n"));

    let amaxes = f32_values(&file, "input_scale.amax");
    let expected = f32_values(&file, "input_scale.expected");
    assert_eq!(amaxes.len(), expected.len());
    for (amax, expected) in amaxes.iter().zip(&expected) {
        let got = format.input_scale(*amax);
        assert_eq!(
            got.to_bits(),
            expected.to_bits(),
            "{format_name} input_scale({amax:e}) = {got:e}, ModelOpt {expected:e}"
        );
    }
    compared
}

#[test]
fn fp8_matches_modelopt_byte_for_byte() {
    let compared = check_format("fp8", &["weight", "weight_scale"]);
    assert!(compared >= 34);
}

#[test]
fn nvfp4_matches_modelopt_byte_for_byte() {
    let compared = check_format("nvfp4", &["weight", "weight_scale", "weight_scale_2"]);
    assert!(compared >= 60);
}

#[test]
fn the_cases_named_in_the_brief_are_present() {
    for format in ["fp8", "nvfp4"] {
        let bytes = std::fs::read(vectors_path(format)).unwrap();
        let (_, metadata) = SafeTensors::read_metadata(&bytes).unwrap();
        let cases = metadata.metadata().clone().unwrap()["cases"].clone();
        for needle in [
            "zeros_",
            "zero_block_",
            "subnormal_",
            "saturate_",
            "negzero_",
            "small_3x32_",
            "random_64x128_f32",
            "random_64x128_bf16",
        ] {
            assert!(cases.contains(needle), "{format}: no {needle} case in {cases}");
        }
        let ties = if format == "fp8" { "ties_f32" } else { "ties_e2m1_f32" };
        assert!(cases.contains(ties), "{format}: no {ties}");
    }
}

/// Best and median seconds of 30 runs (the best is the figure least disturbed by other processes).
fn time_runs(mut run: impl FnMut()) -> (f64, f64) {
    let mut times: Vec<f64> = (0..30)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[0], times[times.len() / 2])
}

/// Single-thread throughput on a [2048, 768] weight, next to a memcpy of its f32 values as the baseline. Run with
/// `cargo test --release -p moe-quant-core --test formats_vectors -- --ignored --nocapture`.
#[test]
#[ignore = "timing, not a check"]
fn throughput_2048x768() {
    let (rows, cols) = (2048usize, 768usize);
    let elements = (rows * cols) as f64;
    let mut state = 0x1234_5678_9ABC_DEF0u64;
    let values: Vec<f32> = (0..rows * cols)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect();
    let report = |what: &str, (best, median): (f64, f64)| {
        println!(
            "{what:<22} best {:7.3} ms ({:5.0} M weights/s, {:5.2} GB/s of f32 input), median {:7.3} ms",
            best * 1e3,
            elements / best / 1e6,
            elements * 4.0 / best / 1e9,
            median * 1e3
        );
    };
    report("memcpy (baseline)", time_runs(|| drop(std::hint::black_box(std::hint::black_box(&values).to_vec()))));
    report(
        "weight_amax",
        time_runs(|| {
            std::hint::black_box(weight_amax(std::hint::black_box(&values)));
        }),
    );
    let amax = weight_amax(&values);
    for dtype in [Dtype::F32, Dtype::BF16] {
        let values: Vec<f32> = if dtype == Dtype::BF16 {
            values.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect()
        } else {
            values.clone()
        };
        let weight = WeightInput::new("w", dtype, &[rows, cols], &values).unwrap();
        for name in ["fp8", "nvfp4"] {
            let format: Box<dyn QuantFormat> = format_by_name(name).unwrap();
            let timing = time_runs(|| {
                std::hint::black_box(format.quantize(std::hint::black_box(&weight), amax).unwrap());
            });
            report(&format!("{name} {dtype}"), timing);
        }
    }
}
