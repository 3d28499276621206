"""PyTorch's kernels for the calibration forward's GPU parts, on the shapes of `crates/core/benches/forward_parts.rs`
(one batch-layer of the Qwen3-30B-A3B shape: 64 × 512 tokens), for the same table:

    python3 benches/e2e/torch_parts.py

The projections as `F.linear`, attention as `scaled_dot_product_attention` (causal, grouped query heads) with
the backend PyTorch picks and with the math backend (eager's rounding points), the experts' GEMMs as
`torch._grouped_mm` over balanced experts. Timed with CUDA events: median of 7 runs of 5 calls, after a warm-up.
"""

import torch
import torch.nn.functional as F

TOKENS, HIDDEN, HEADS, KV_HEADS, HEAD_DIM = 64 * 512, 2048, 32, 4, 128
EXPERTS, TOP_K, INTER = 128, 8, 768


def timed(f) -> float:
    for _ in range(3):
        f()
    torch.cuda.synchronize()
    runs = []
    for _ in range(7):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(5):
            f()
        end.record()
        end.synchronize()
        runs.append(start.elapsed_time(end) / 1e3 / 5)
    return sorted(runs)[len(runs) // 2]


def main() -> None:
    dev, bf16 = "cuda:0", torch.bfloat16

    def randn(*dims):
        return torch.randn(*dims, device=dev, dtype=bf16) * 0.02

    rows = []

    def run(name, flops, f):
        rows.append((name, timed(f), flops))

    def gemm(m, n, k):
        return 2.0 * m * n * k

    q_rows, kv_rows = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    xs = randn(TOKENS, HIDDEN)
    wq, wk, wv = randn(q_rows, HIDDEN), randn(kv_rows, HIDDEN), randn(kv_rows, HIDDEN)
    wqkv = torch.cat([wq, wk, wv])
    wo, attended = randn(HIDDEN, q_rows), randn(TOKENS, q_rows)
    with torch.inference_mode():
        run("q projection", gemm(TOKENS, q_rows, HIDDEN), lambda: F.linear(xs, wq))
        run("k projection", gemm(TOKENS, kv_rows, HIDDEN), lambda: F.linear(xs, wk))
        run("v projection", gemm(TOKENS, kv_rows, HIDDEN), lambda: F.linear(xs, wv))
        run("q, k, v as one GEMM", gemm(TOKENS, q_rows + 2 * kv_rows, HIDDEN), lambda: F.linear(xs, wqkv))
        run("o projection", gemm(TOKENS, HIDDEN, q_rows), lambda: F.linear(attended, wo))

        q = randn(64, HEADS, 512, HEAD_DIM)
        k, v = randn(64, KV_HEADS, 512, HEAD_DIM), randn(64, KV_HEADS, 512, HEAD_DIM)
        flops = 2.0 * 2.0 * 64 * HEADS * HEAD_DIM * (512 * 513 / 2)
        sdpa = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        run("attention, sdpa (PyTorch's choice)", flops, sdpa)
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
            run("attention, sdpa math backend", flops, sdpa)

        per_expert = TOKENS * TOP_K // EXPERTS
        offsets = torch.arange(1, EXPERTS + 1, device=dev, dtype=torch.int32) * per_expert
        routed, activated = randn(TOKENS * TOP_K, HIDDEN), randn(TOKENS * TOP_K, INTER)
        gate_up, down = randn(EXPERTS, 2 * INTER, HIDDEN), randn(EXPERTS, HIDDEN, INTER)
        rows_total = TOKENS * TOP_K
        run("experts' gate/up GEMM", gemm(rows_total, 2 * INTER, HIDDEN),
            lambda: torch._grouped_mm(routed, gate_up.transpose(1, 2), offs=offsets))
        run("experts' down GEMM", gemm(rows_total, HIDDEN, INTER),
            lambda: torch._grouped_mm(activated, down.transpose(1, 2), offs=offsets))

    print(f"\nPyTorch {torch.__version__}, {torch.cuda.get_device_name(0)}: the same parts, median of 7×5 calls")
    print("| part | time (ms) | TFLOP/s |")
    print("|---|---:|---:|")
    for name, seconds, flops in rows:
        print(f"| {name} | {seconds * 1e3:.3f} | {flops / seconds / 1e12:.0f} |")


if __name__ == "__main__":
    main()
