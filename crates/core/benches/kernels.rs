//! Throughput of the quantization hot loops (BENCH.md, "The kernel path"): amax (per tensor, per expert, per
//! block of 16), FP8 quantize, NVFP4 quantize + pack, and the gate/up expert split, in GB/s counting bytes read
//! plus bytes written, next to a copy of the same size as the baseline.
//!
//! ```sh
//! cargo bench -p moe-quant-core --bench kernels                                   # CPU table
//! . tools/cuda-env.sh && cargo bench -p moe-quant-core --features cuda --bench kernels -- --cuda-only
//! ```
//!
//! CUDA: a Qwen3-30B-A3B-shaped expert tensor, gate_up `[128, 1536, 2048]` bf16 (805 MB), against the measured
//! device-to-device copy (cuMemcpyDtoDAsync), timed with CUDA events (median of 7 runs of 10 launches each, after
//! a warm-up). CPU: the `formats` quantizers (one thread, f32 values in) on 8 of the 128 experts, against a
//! memcpy of the f32 values.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use candle_core::{Device, Tensor};
use moe_quant_core::formats::{Fp8, Nvfp4, QuantFormat, WeightInput};
use moe_quant_core::numerics::weight_amax;
use moe_quant_core::Dtype;

#[cfg(feature = "cuda")]
const EXPERTS: usize = 128;
const TWO_I: usize = 1536;
const HIDDEN: usize = 2048;

/// One row of a table: what ran, its median seconds and the bytes it moved (read + written).
struct Row {
    name: String,
    seconds: f64,
    bytes: f64,
}

fn print_table(title: &str, rows: &[Row]) {
    println!("\n{title}");
    println!("| operation | bytes moved | time (ms) | GB/s | vs copy |");
    println!("|---|---:|---:|---:|---:|");
    let copy = rows[0].bytes / rows[0].seconds;
    for row in rows {
        let rate = row.bytes / row.seconds;
        let gbps = rate / 1e9;
        let gbps = if gbps < 100.0 { format!("{gbps:.1}") } else { format!("{gbps:.0}") };
        println!(
            "| {} | {:.0} MB | {:.3} | {gbps} | {:.0}% |",
            row.name,
            row.bytes / 1e6,
            row.seconds * 1e3,
            100.0 * rate / copy
        );
    }
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Today's date (UTC) as YYYY-MM-DD, from the system clock (civil-from-days).
fn today() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn random_values(count: usize, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    (0..count)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let unit = (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            half::bf16::from_f32(unit * 0.1).to_f32()
        })
        .collect()
}

fn cpu_bench(experts: usize) {
    let (rows, cols) = (experts * TWO_I, HIDDEN);
    let n = rows * cols;
    let values = random_values(n, 42);
    let time = |f: &mut dyn FnMut()| {
        f();
        median(
            (0..5)
                .map(|_| {
                    let start = Instant::now();
                    f();
                    start.elapsed().as_secs_f64()
                })
                .collect(),
        )
    };
    let (n_f, f32_bytes) = (n as f64, 4.0 * n as f64);
    let mut table = Vec::new();
    let mut copy = vec![0f32; n];
    table.push(Row {
        name: "memcpy of the f32 values (baseline)".into(),
        seconds: time(&mut || copy.copy_from_slice(std::hint::black_box(&values))),
        bytes: 2.0 * f32_bytes,
    });
    drop(copy);
    table.push(Row {
        name: "amax (tensor)".into(),
        seconds: time(&mut || {
            std::hint::black_box(weight_amax(std::hint::black_box(&values)));
        }),
        bytes: f32_bytes,
    });
    table.push(Row {
        name: "amax (per block of 16)".into(),
        seconds: time(&mut || {
            let blocks: Vec<f32> = values.chunks_exact(16).map(weight_amax).collect();
            std::hint::black_box(blocks);
        }),
        bytes: f32_bytes + f32_bytes / 16.0,
    });
    let amax = weight_amax(&values);
    for dtype in [Dtype::BF16, Dtype::F32] {
        let weight = WeightInput::new("w", dtype, &[rows, cols], &values).unwrap();
        table.push(Row {
            name: format!("fp8 quantize ({dtype} source)"),
            seconds: time(&mut || {
                std::hint::black_box(Fp8::default().quantize(&weight, amax).unwrap());
            }),
            bytes: f32_bytes + n_f,
        });
        table.push(Row {
            name: format!("nvfp4 quantize + pack ({dtype} source)"),
            seconds: time(&mut || {
                std::hint::black_box(Nvfp4.quantize(&weight, amax).unwrap());
            }),
            bytes: f32_bytes + n_f / 2.0 + n_f / 16.0,
        });
    }
    let bf16 = Tensor::from_vec(
        values.iter().map(|&v| half::bf16::from_f32(v)).collect::<Vec<_>>(),
        (experts, TWO_I, HIDDEN),
        &Device::Cpu,
    )
    .unwrap();
    table.push(Row {
        name: "expert split, candle narrow + contiguous (bf16)".into(),
        seconds: time(&mut || {
            let gate = bf16.narrow(1, 0, TWO_I / 2).unwrap().contiguous().unwrap();
            let up = bf16.narrow(1, TWO_I / 2, TWO_I / 2).unwrap().contiguous().unwrap();
            std::hint::black_box((gate, up));
        }),
        bytes: 4.0 * n_f,
    });
    print_table(
        &format!(
            "CPU, one thread, {} — gate_up [{experts}, {TWO_I}, {HIDDEN}] ({:.0} MB of f32 values); median of 5",
            today(),
            f32_bytes / 1e6
        ),
        &table,
    );
}

#[cfg(feature = "cuda")]
fn cuda_bench() {
    use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
    use candle_core::DType;
    use moe_quant_core::cuda;
    use moe_quant_core::formats::DeviceQuantize;

    /// The FP8 kernel under test: E4M3 codes of `xs` with one scale per tensor or per expert.
    fn fp8_on_gpu(xs: &Tensor, scales: &[f32]) -> moe_quant_core::Result<Tensor> {
        Ok(Fp8::default().quantize_on_device(xs, scales)?.remove(0))
    }

    /// The NVFP4 kernel under test: packed codes and block scales of `xs`.
    fn nvfp4_on_gpu(xs: &Tensor, scales_2: &[f32]) -> moe_quant_core::Result<Vec<Tensor>> {
        Nvfp4.quantize_on_device(xs, scales_2)
    }

    /// `weight_scale` of FP8 for a weight amax.
    fn fp8_weight_scale(amax: f32) -> moe_quant_core::Result<f32> {
        Fp8::default().weight_scale("w", amax)
    }

    /// `weight_scale_2` of NVFP4 for a weight amax.
    fn nvfp4_weight_scale_2(amax: f32) -> moe_quant_core::Result<f32> {
        Nvfp4.weight_scale("w", amax)
    }

    let device = cuda::device(0).expect("a CUDA GPU");
    let cuda = device.as_cuda_device().unwrap().clone();
    let stream = cuda.cuda_stream();
    let name = stream.context().name().unwrap_or_else(|_| "unknown GPU".into());
    let n = EXPERTS * TWO_I * HIDDEN;
    let n_f = n as f64;
    let bf16_bytes = 2.0 * n_f;

    // Median seconds per launch: 7 runs of 10 back-to-back launches, each run timed with events, after warm-up.
    let time = |f: &mut dyn FnMut()| -> f64 {
        for _ in 0..3 {
            f();
        }
        stream.synchronize().unwrap();
        let runs = (0..7)
            .map(|_| {
                let start = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).unwrap();
                for _ in 0..10 {
                    f();
                }
                let end = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).unwrap();
                f64::from(start.elapsed_ms(&end).unwrap()) / 1e3 / 10.0
            })
            .collect();
        median(runs)
    };

    let gate_up = Tensor::rand(-0.1f32, 0.1, (EXPERTS, TWO_I, HIDDEN), &device).unwrap().to_dtype(DType::BF16).unwrap();
    let mut table = Vec::new();
    {
        let (storage, _) = gate_up.storage_and_layout();
        let candle_core::Storage::Cuda(storage) = &*storage else { panic!("not on CUDA") };
        let src = storage.as_cuda_slice::<half::bf16>().unwrap();
        let mut dst = unsafe { cuda.alloc::<half::bf16>(n) }.unwrap();
        table.push(Row {
            name: "device-to-device copy (baseline)".into(),
            seconds: time(&mut || cuda.memcpy_dtod(src, &mut dst).unwrap()),
            bytes: 2.0 * bf16_bytes,
        });
    }
    let mut run = |name: &str, bytes: f64, f: &mut dyn FnMut()| {
        table.push(Row { name: name.into(), seconds: time(f), bytes });
    };
    run("amax (tensor)", bf16_bytes, &mut || drop(cuda::amax(&gate_up).unwrap()));
    run("amax (per expert)", bf16_bytes, &mut || drop(cuda::amax_per_expert(&gate_up).unwrap()));
    run("amax (per block of 16)", bf16_bytes + 4.0 * n_f / 16.0, &mut || {
        drop(moe_quant_core::formats::block_amax(&gate_up).unwrap())
    });
    let amax = cuda::amax(&gate_up).unwrap().to_scalar::<f32>().unwrap();
    let scale = fp8_weight_scale(amax).unwrap();
    let scale_2 = nvfp4_weight_scale_2(amax).unwrap();
    run("fp8 quantize (bf16 source)", bf16_bytes + n_f, &mut || drop(fp8_on_gpu(&gate_up, &[scale]).unwrap()));
    let scales = vec![scale; EXPERTS];
    run("fp8 quantize, per-expert scales (bf16)", bf16_bytes + n_f, &mut || {
        drop(fp8_on_gpu(&gate_up, &scales).unwrap())
    });
    run("nvfp4 quantize + pack (bf16 source)", bf16_bytes + n_f / 2.0 + n_f / 16.0, &mut || {
        drop(nvfp4_on_gpu(&gate_up, &[scale_2]).unwrap())
    });
    run("expert split [E,2I,H] (bf16)", 2.0 * bf16_bytes, &mut || drop(cuda::split_gate_up(&gate_up).unwrap()));
    let transposed = gate_up.reshape((EXPERTS, HIDDEN, TWO_I)).unwrap();
    run("expert split, transposed [E,H,2I] (bf16)", 2.0 * bf16_bytes, &mut || {
        drop(cuda::split_gate_up_transposed(&transposed, false).unwrap())
    });
    run("expert split, interleaved [E,H,2I] (bf16)", 2.0 * bf16_bytes, &mut || {
        drop(cuda::split_gate_up_transposed(&transposed, true).unwrap())
    });
    drop(transposed);
    let gate_up_f32 = gate_up.to_dtype(DType::F32).unwrap();
    run("fp8 quantize (f32 source)", 4.0 * n_f + n_f, &mut || drop(fp8_on_gpu(&gate_up_f32, &[scale]).unwrap()));
    run("nvfp4 quantize + pack (f32 source)", 4.0 * n_f + n_f / 2.0 + n_f / 16.0, &mut || {
        drop(nvfp4_on_gpu(&gate_up_f32, &[scale_2]).unwrap())
    });
    print_table(
        &format!(
            "CUDA, {name}, {} — gate_up [{EXPERTS}, {TWO_I}, {HIDDEN}] bf16 ({:.0} MB); median of 7×10 launches",
            today(),
            bf16_bytes / 1e6
        ),
        &table,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    if !has("--cuda-only") {
        cpu_bench(8);
    }
    #[cfg(feature = "cuda")]
    if !has("--cpu-only") {
        cuda_bench();
    }
    #[cfg(not(feature = "cuda"))]
    if has("--cuda-only") {
        eprintln!("built without the `cuda` feature: no CUDA table");
    }
}
