// Fused steps of the calibration forward on the GPU, each replacing a chain of candle ops that made one pass over
// the tensor per op: the attention's masked softmax, and the weighted sum of the routed experts' outputs.
// Loaded by src/cuda/forward.rs; the CPU forward computes the same values op by op (blocks/attention.rs, moe.rs).

#include "common.cuh"
#include <cuda_bf16.h>

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }

__device__ __forceinline__ float warp_max(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
    return x;
}

__device__ __forceinline__ float warp_sum(float x) {
    for (int offset = 16; offset > 0; offset >>= 1) x = __fadd_rn(x, __shfl_xor_sync(0xffffffffu, x, offset));
    return x;
}

// ---------------------------------------------------------------------------------------------------------------
// Attention: softmax(scores · scaling + mask) in f32, written in the scores' dtype
// ---------------------------------------------------------------------------------------------------------------

// scores [rows, keys] (q·kᵀ in the compute dtype; rows = sequences × heads × queries), mask [queries, keys] f32
// (0 where a query sees a key, -inf elsewhere): row r is query r % queries of head (r / queries) % heads. With
// sinks [heads, queries] f32 (has_sinks = 1), each row's softmax also counts its head's sink logit, whose share is
// dropped. One warp per row, blocks of 4 warps.
template <typename T>
__device__ __forceinline__ void softmax_scores(const T* scores, T* out, const float* mask, const float* sinks,
                                               uint64_t rows, uint32_t keys, uint32_t queries, uint32_t heads,
                                               float scaling, int has_sinks) {
    const uint64_t row = (uint64_t)blockIdx.x * 4 + (threadIdx.x >> 5);
    if (row >= rows) return;
    const uint32_t lane = threadIdx.x & 31;
    const uint32_t query = (uint32_t)(row % queries);
    const T* in = scores + row * keys;
    const float* masked = mask + (uint64_t)query * keys;
    const float sink = has_sinks ? sinks[(uint64_t)((row / queries) % heads) * queries + query] : -INFINITY;
    float top = sink;
    for (uint32_t j = lane; j < keys; j += 32) top = fmaxf(top, __fadd_rn(__fmul_rn(to_f32(in[j]), scaling), masked[j]));
    top = warp_max(top);
    float total = 0.0f;
    for (uint32_t j = lane; j < keys; j += 32) {
        total = __fadd_rn(total, expf(__fadd_rn(__fadd_rn(__fmul_rn(to_f32(in[j]), scaling), masked[j]), -top)));
    }
    total = warp_sum(total);
    if (has_sinks && lane == 0) total = __fadd_rn(total, expf(__fadd_rn(sink, -top)));
    total = __shfl_sync(0xffffffffu, total, 0);
    T* to = out + row * keys;
    for (uint32_t j = lane; j < keys; j += 32) {
        const float e = expf(__fadd_rn(__fadd_rn(__fmul_rn(to_f32(in[j]), scaling), masked[j]), -top));
        to[j] = from_f32<T>(__fdiv_rn(e, total));
    }
}

#define SOFTMAX_SCORES(suffix, T)                                                                                 \
    extern "C" __global__ void softmax_scores_##suffix(const T* scores, T* out, const float* mask,               \
                                                       const float* sinks, uint64_t rows, uint32_t keys,         \
                                                       uint32_t queries, uint32_t heads, float scaling,          \
                                                       int has_sinks) {                                           \
        softmax_scores<T>(scores, out, mask, sinks, rows, keys, queries, heads, scaling, has_sinks);             \
    }

SOFTMAX_SCORES(bf16, __nv_bfloat16)
SOFTMAX_SCORES(f16, __half)
SOFTMAX_SCORES(f32, float)

// ---------------------------------------------------------------------------------------------------------------
// MoE: each token's routed outputs, weighted and summed in f32
// ---------------------------------------------------------------------------------------------------------------

// routed [slots, hidden] (the experts' outputs, slots sorted by expert), rows [tokens, top_k] u32 (the slots of
// each token, in expert order), weights [slots] in the compute dtype (weighted = 1: each output is first multiplied
// by its routing weight in that dtype, as the op-by-op path does) → out [tokens, hidden] f32, the sum over a
// token's slots in order. Grid: x over tokens, y over hidden / blockDim.x.
template <typename T>
__device__ __forceinline__ void combine_routed(const T* routed, float* out, const uint32_t* rows, const T* weights,
                                               uint32_t hidden, uint32_t top_k, int weighted) {
    const uint32_t h = blockIdx.y * blockDim.x + threadIdx.x;
    const uint64_t token = blockIdx.x;
    if (h >= hidden) return;
    const uint32_t* slots = rows + token * top_k;
    float total = 0.0f;
    for (uint32_t j = 0; j < top_k; ++j) {
        const uint32_t slot = slots[j];
        float value = to_f32(routed[(uint64_t)slot * hidden + h]);
        if (weighted) value = to_f32(from_f32<T>(__fmul_rn(value, to_f32(weights[slot]))));
        total = __fadd_rn(total, value);
    }
    out[token * hidden + h] = total;
}

#define COMBINE_ROUTED(suffix, T)                                                                                 \
    extern "C" __global__ void combine_routed_##suffix(const T* routed, float* out, const uint32_t* rows,        \
                                                       const T* weights, uint32_t hidden, uint32_t top_k,        \
                                                       int weighted) {                                            \
        combine_routed<T>(routed, out, rows, weights, hidden, top_k, weighted);                                  \
    }

COMBINE_ROUTED(bf16, __nv_bfloat16)
COMBINE_ROUTED(f16, __half)
COMBINE_ROUTED(f32, float)

// ---------------------------------------------------------------------------------------------------------------
// Attention heads: per-head RMSNorm and rope, into [B, H, T, D]
// ---------------------------------------------------------------------------------------------------------------

#define MAX_HEAD_DIM 512

// xs [B, T, H, D] (a projection's heads as they lie) → out [B, H, T, D]. With has_norm, each head's RMSNorm: the
// mean of squares in f32, x · (1 / sqrt(mean + eps)) rounded to T, times weight [D] in T. With has_rope, the
// leading `rotary` dimensions rotated by halves with cos/sin [T, rotary] in T: out_i = T(T(y_i · cos_i) +
// T(r_i · sin_i)), r = (-y[h..rotary], y[0..h]), h = rotary / 2 (each product and the sum rounded, as op by op).
// One warp per (sequence, position, head), blocks of 4 warps.
template <typename T>
__device__ __forceinline__ void head_norm_rope(const T* xs, T* out, const T* weight, const T* cos, const T* sin,
                                               uint64_t rows, uint32_t positions, uint32_t heads, uint32_t dim,
                                               uint32_t rotary, float eps, int has_norm, int has_rope) {
    __shared__ float normed_of[4][MAX_HEAD_DIM];
    const uint32_t warp = threadIdx.x >> 5;
    const uint32_t lane = threadIdx.x & 31;
    const uint64_t row = (uint64_t)blockIdx.x * 4 + warp;
    if (row >= rows) return;
    float* normed = normed_of[warp];
    const T* in = xs + row * dim;
    // row = (b · positions + t) · heads + h
    const uint32_t head = (uint32_t)(row % heads);
    const uint64_t bt = row / heads;
    const uint32_t position = (uint32_t)(bt % positions);
    const uint64_t sequence = bt / positions;
    if (has_norm) {
        float squares = 0.0f;
        for (uint32_t i = lane; i < dim; i += 32) {
            const float x = to_f32(in[i]);
            squares = __fadd_rn(squares, __fmul_rn(x, x));
        }
        squares = warp_sum(squares);
        const float inverse = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(squares, (float)dim), eps)));
        for (uint32_t i = lane; i < dim; i += 32) {
            const float n = to_f32(from_f32<T>(__fmul_rn(to_f32(in[i]), inverse)));
            normed[i] = to_f32(from_f32<T>(__fmul_rn(n, to_f32(weight[i]))));
        }
    } else {
        for (uint32_t i = lane; i < dim; i += 32) normed[i] = to_f32(in[i]);
    }
    __syncwarp();
    T* to = out + ((sequence * heads + head) * positions + position) * (uint64_t)dim;
    const uint32_t half = rotary / 2;
    for (uint32_t i = lane; i < dim; i += 32) {
        float y = normed[i];
        if (has_rope && i < rotary) {
            const float c = to_f32(cos[(uint64_t)position * rotary + i]);
            const float s = to_f32(sin[(uint64_t)position * rotary + i]);
            const float partner = i < half ? -normed[i + half] : normed[i - half];
            const float a = to_f32(from_f32<T>(__fmul_rn(y, c)));
            const float b = to_f32(from_f32<T>(__fmul_rn(partner, s)));
            y = __fadd_rn(a, b);
        }
        to[i] = from_f32<T>(y);
    }
}

#define HEAD_NORM_ROPE(suffix, T)                                                                                 \
    extern "C" __global__ void head_norm_rope_##suffix(const T* xs, T* out, const T* weight, const T* cos,        \
                                                       const T* sin, uint64_t rows, uint32_t positions,          \
                                                       uint32_t heads, uint32_t dim, uint32_t rotary, float eps, \
                                                       int has_norm, int has_rope) {                              \
        head_norm_rope<T>(xs, out, weight, cos, sin, rows, positions, heads, dim, rotary, eps, has_norm,         \
                          has_rope);                                                                              \
    }

HEAD_NORM_ROPE(bf16, __nv_bfloat16)
HEAD_NORM_ROPE(f16, __half)
HEAD_NORM_ROPE(f32, float)
