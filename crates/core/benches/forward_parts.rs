//! The calibration forward's GPU parts, one batch-layer of the Qwen3-30B-A3B shape at a time (BENCHMARKS.md,
//! "The calibration forward on the GPU"): the attention projections (q, k, v and o as the forward runs them, and
//! q/k/v as one GEMM), the fused attention kernel, the routed experts' two GEMMs and the weight maxima of a layer.
//! `benches/e2e/torch_parts.py` times PyTorch's kernels on the same shapes, for the same table.
//!
//! ```sh
//! . tools/cuda-env.sh && cargo bench -p moe-quant-core --features cuda --bench forward_parts
//! ```
//!
//! Shapes: 64 sequences of 512 tokens (32,768 tokens), hidden 2048, 32 query heads and 4 kv heads of 128, 128
//! experts of 768 with top-8 (each expert 2,048 rows, balanced). Timed with CUDA events: median of 7 runs of 5
//! launches each, after a warm-up. Built without the `cuda` feature it prints nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[cfg(feature = "cuda")]
fn main() {
    use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
    use candle_core::{DType, Tensor};
    use moe_quant_core::cuda;

    const TOKENS: usize = 64 * 512;
    const HIDDEN: usize = 2048;
    const HEADS: usize = 32;
    const KV_HEADS: usize = 4;
    const HEAD_DIM: usize = 128;
    const EXPERTS: usize = 128;
    const TOP_K: usize = 8;
    const INTER: usize = 768;

    let device = cuda::device(0).expect("a CUDA GPU");
    let stream = device.as_cuda_device().unwrap().cuda_stream();
    let name = stream.context().name().unwrap_or_else(|_| "unknown GPU".into());
    let time = |f: &mut dyn FnMut()| -> f64 {
        for _ in 0..3 {
            f();
        }
        stream.synchronize().unwrap();
        let mut runs: Vec<f64> = (0..7)
            .map(|_| {
                let start = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).unwrap();
                for _ in 0..5 {
                    f();
                }
                let end = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).unwrap();
                f64::from(start.elapsed_ms(&end).unwrap()) / 1e3 / 5.0
            })
            .collect();
        runs.sort_by(f64::total_cmp);
        runs[runs.len() / 2]
    };
    let randn = |dims: &[usize]| Tensor::randn(0f32, 0.02, dims, &device).unwrap().to_dtype(DType::BF16).unwrap();

    let mut rows: Vec<(String, f64, f64)> = Vec::new();
    let mut run = |name: &str, flops: f64, f: &mut dyn FnMut()| rows.push((name.to_string(), time(f), flops));

    // Attention projections.
    let xs = randn(&[TOKENS, HIDDEN]);
    let (q_rows, kv_rows) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    let (wq, wk, wv) = (randn(&[q_rows, HIDDEN]), randn(&[kv_rows, HIDDEN]), randn(&[kv_rows, HIDDEN]));
    let wqkv = Tensor::cat(&[&wq, &wk, &wv], 0).unwrap();
    let wo = randn(&[HIDDEN, q_rows]);
    let attended = randn(&[TOKENS, q_rows]);
    let gemm = |m: usize, n: usize, k: usize| 2.0 * (m * n * k) as f64;
    let matmul = |x: &Tensor, w: &Tensor| drop(x.matmul(&w.t().unwrap()).unwrap());
    run("q projection", gemm(TOKENS, q_rows, HIDDEN), &mut || matmul(&xs, &wq));
    run("k projection", gemm(TOKENS, kv_rows, HIDDEN), &mut || matmul(&xs, &wk));
    run("v projection", gemm(TOKENS, kv_rows, HIDDEN), &mut || matmul(&xs, &wv));
    run("q, k, v as one GEMM", gemm(TOKENS, q_rows + 2 * kv_rows, HIDDEN), &mut || matmul(&xs, &wqkv));
    run("o projection", gemm(TOKENS, HIDDEN, q_rows), &mut || matmul(&attended, &wo));

    // Attention (causal: half the score matrix; the kernel passes over the keys twice, counted once).
    let q = randn(&[64, HEADS, 512, HEAD_DIM]);
    let (k, v) = (randn(&[64, KV_HEADS, 512, HEAD_DIM]), randn(&[64, KV_HEADS, 512, HEAD_DIM]));
    let scaling = (HEAD_DIM as f32).powf(-0.5);
    let attention_flops = 2.0 * 2.0 * (64 * HEADS * HEAD_DIM) as f64 * (512.0 * 513.0 / 2.0);
    run("attention kernel (causal)", attention_flops, &mut || {
        drop(cuda::fused_attention(&q, &k, &v, scaling, cuda::KeyMask::Causal, None).unwrap())
    });

    // The routed experts: every expert gets TOKENS · TOP_K / EXPERTS rows.
    let routed_rows = TOKENS * TOP_K;
    let per_expert = routed_rows / EXPERTS;
    let ranges: Vec<_> = (0..EXPERTS).map(|e| e * per_expert..(e + 1) * per_expert).collect();
    let gate_up: Vec<Tensor> = (0..EXPERTS).map(|_| randn(&[2 * INTER, HIDDEN])).collect();
    let down: Vec<Tensor> = (0..EXPERTS).map(|_| randn(&[HIDDEN, INTER])).collect();
    let routed = randn(&[routed_rows, HIDDEN]);
    let activated = randn(&[routed_rows, INTER]);
    let gate_up_refs: Vec<&Tensor> = gate_up.iter().collect();
    let down_refs: Vec<&Tensor> = down.iter().collect();
    run("experts' gate/up GEMM", gemm(routed_rows, 2 * INTER, HIDDEN), &mut || {
        drop(cuda::grouped_matmul_t(&routed, &gate_up_refs, &ranges).unwrap())
    });
    run("experts' down GEMM", gemm(routed_rows, HIDDEN, INTER), &mut || {
        drop(cuda::grouped_matmul_t(&activated, &down_refs, &ranges).unwrap())
    });

    // A layer's expert weight maxima (gate, up and down of each expert), read back to the host.
    let mut halves = Vec::new();
    for (gu, d) in gate_up.iter().zip(&down) {
        halves.extend([gu.narrow(0, 0, INTER).unwrap(), gu.narrow(0, INTER, INTER).unwrap(), d.clone()]);
    }
    let views: Vec<&Tensor> = halves.iter().collect();
    run("weight maxima, one launch per tensor", 0.0, &mut || {
        let maxima: Vec<Tensor> = views.iter().map(|t| cuda::amax(t).unwrap()).collect();
        drop(Tensor::stack(&maxima, 0).unwrap().to_vec1::<f32>().unwrap())
    });
    run("weight maxima, one launch (amax_each)", 0.0, &mut || {
        drop(cuda::amax_each(&views).unwrap().to_vec1::<f32>().unwrap())
    });

    println!("\nCUDA, {name}: the forward's parts for one batch-layer (32,768 tokens), median of 7×5 launches");
    println!("| part | time (ms) | TFLOP/s |");
    println!("|---|---:|---:|");
    for (part, seconds, flops) in rows {
        let rate = if flops > 0.0 { format!("{:.0}", flops / seconds / 1e12) } else { "".into() };
        println!("| {part} | {:.3} | {rate} |", seconds * 1e3);
    }
}

#[cfg(not(feature = "cuda"))]
fn main() {
    eprintln!("built without the `cuda` feature: no CUDA table");
}
