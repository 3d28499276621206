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

// amax[0] = max(amax[0], the warp's largest m) (m ≥ 0; NaN ignored, as the amax kernel ignores it). Every lane of
// the warp calls it. A float's bits order non-negative floats as integers do.
__device__ __forceinline__ void record_amax(float* amax, float m) {
    m = warp_max(m);
    if ((threadIdx.x & 31) == 0 && m > 0.0f) atomicMax(reinterpret_cast<int*>(amax), __float_as_int(m));
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

// ---------------------------------------------------------------------------------------------------------------
// RMSNorm over the last dimension
// ---------------------------------------------------------------------------------------------------------------

// a + b rounded once to T, as torch adds two tensors of T (the exact sum rounded: `__hadd` for the half types).
__device__ __forceinline__ float add_same(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ __nv_bfloat16 add_same(__nv_bfloat16 a, __nv_bfloat16 b) { return __hadd(a, b); }
__device__ __forceinline__ __half add_same(__half a, __half b) { return __hadd(a, b); }

// Element `at` of the norm's input: xs[at], or with a residual (ADD) the sum xs[at] + residual[at] in T, stored to
// sum[at].
template <typename T, bool ADD>
__device__ __forceinline__ float norm_input(const T* __restrict__ xs, const T* __restrict__ residual,
                                            T* __restrict__ sum, uint64_t at) {
    if (!ADD) return to_f32(xs[at]);
    const T s = add_same(xs[at], residual[at]);
    sum[at] = s;
    return to_f32(s);
}

// 1 / sqrt(mean of squares + eps) of the block's row, from each thread's partial sum of squares: summed over each
// warp, then warp by warp in order by one thread. Every thread of the block calls it.
__device__ __forceinline__ float row_inverse(float squares, uint32_t dim, float eps) {
    __shared__ float partial[8];
    __shared__ float inverse_of_row;
    squares = warp_sum(squares);
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = squares;
    __syncthreads();
    if (threadIdx.x == 0) {
        float total = 0.0f;
        for (uint32_t w = 0; w < (blockDim.x + 31) / 32; ++w) total = __fadd_rn(total, partial[w]);
        inverse_of_row = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(total, (float)dim), eps)));
    }
    __syncthreads();
    return inverse_of_row;
}

// Element `first + i` of the norm's output from its input x: x · inverse rounded to T, times weight[i] in T. Returns
// its magnitude.
template <typename T>
__device__ __forceinline__ float norm_output(float x, float inverse, const T* __restrict__ weight,
                                             T* __restrict__ out, uint64_t first, uint32_t i) {
    const float n = to_f32(from_f32<T>(__fmul_rn(x, inverse)));
    const T y = from_f32<T>(__fmul_rn(n, to_f32(weight[i])));
    out[first + i] = y;
    return fabsf(to_f32(y));
}

// The row starting at `first`, with at most ITEMS elements per thread: all of a thread's elements loaded before the
// first is used, and kept in registers for the second pass.
template <typename T, bool ADD, uint32_t ITEMS>
__device__ __forceinline__ void rms_norm_held(const T* __restrict__ xs, const T* __restrict__ residual,
                                              T* __restrict__ sum, T* __restrict__ out, float* amax,
                                              const T* __restrict__ weight, uint64_t first, uint32_t dim, float eps) {
    float values[ITEMS];
#pragma unroll
    for (uint32_t j = 0; j < ITEMS; ++j) {
        const uint32_t i = threadIdx.x + j * blockDim.x;
        values[j] = i < dim ? norm_input<T, ADD>(xs, residual, sum, first + i) : 0.0f;
    }
    float squares = 0.0f;
#pragma unroll
    for (uint32_t j = 0; j < ITEMS; ++j) {
        if (threadIdx.x + j * blockDim.x < dim) squares = __fadd_rn(squares, __fmul_rn(values[j], values[j]));
    }
    const float inverse = row_inverse(squares, dim, eps);
    float largest = 0.0f;
#pragma unroll
    for (uint32_t j = 0; j < ITEMS; ++j) {
        const uint32_t i = threadIdx.x + j * blockDim.x;
        if (i < dim) largest = fmaxf(largest, norm_output(values[j], inverse, weight, out, first, i));
    }
    record_amax(amax, largest);
}

// xs [rows, dim] → out [rows, dim]: the mean of squares in f32, x · (1 / sqrt(mean + eps)) rounded to T, times
// weight [dim] in T; amax[0] (zeroed by the launcher) the largest |out|. With ADD the norm's input is
// xs + residual [rows, dim] in T, also written to `sum`. One block of 256 threads per row; thread t takes elements
// t, t + 256, … in that order (the order of its partial sum). Rows up to 4096 wide stay in registers; wider ones
// are read twice.
template <typename T, bool ADD>
__device__ __forceinline__ void rms_norm(const T* __restrict__ xs, const T* __restrict__ residual, T* __restrict__ sum,
                                         T* __restrict__ out, float* amax, const T* __restrict__ weight,
                                         uint64_t rows, uint32_t dim, float eps) {
    const uint64_t row = blockIdx.x;
    if (row >= rows) return;
    const uint64_t first = row * dim;
    const uint32_t per_thread = (dim + blockDim.x - 1) / blockDim.x;
    if (per_thread <= 8) return rms_norm_held<T, ADD, 8>(xs, residual, sum, out, amax, weight, first, dim, eps);
    if (per_thread <= 16) return rms_norm_held<T, ADD, 16>(xs, residual, sum, out, amax, weight, first, dim, eps);
    float squares = 0.0f;
    for (uint32_t i = threadIdx.x; i < dim; i += blockDim.x) {
        const float x = norm_input<T, ADD>(xs, residual, sum, first + i);
        squares = __fadd_rn(squares, __fmul_rn(x, x));
    }
    const float inverse = row_inverse(squares, dim, eps);
    const T* input = ADD ? sum : xs; // each thread reads back only what it wrote
    float largest = 0.0f;
    for (uint32_t i = threadIdx.x; i < dim; i += blockDim.x) {
        largest = fmaxf(largest, norm_output(to_f32(input[first + i]), inverse, weight, out, first, i));
    }
    record_amax(amax, largest);
}

#define RMS_NORM(suffix, T)                                                                                       \
    extern "C" __global__ void rms_norm_##suffix(const T* xs, T* out, float* amax, const T* weight,             \
                                                 uint64_t rows, uint32_t dim, float eps) {                        \
        rms_norm<T, false>(xs, nullptr, nullptr, out, amax, weight, rows, dim, eps);                              \
    }                                                                                                             \
    extern "C" __global__ void add_rms_norm_##suffix(const T* xs, const T* residual, T* sum, T* out, float* amax, \
                                                     const T* weight, uint64_t rows, uint32_t dim, float eps) {   \
        rms_norm<T, true>(xs, residual, sum, out, amax, weight, rows, dim, eps);                                  \
    }

RMS_NORM(bf16, __nv_bfloat16)
RMS_NORM(f16, __half)
RMS_NORM(f32, float)

// ---------------------------------------------------------------------------------------------------------------
// The residual stream plus a branch summed in f32
// ---------------------------------------------------------------------------------------------------------------

// out[i] = xs[i] + branch[i] rounded to T, the sum rounded once in T: the values of casting the branch to T and
// adding it. Grid-stride.
template <typename T>
__device__ __forceinline__ void add_rounded(const T* __restrict__ xs, const float* __restrict__ branch,
                                            T* __restrict__ out, uint64_t count) {
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += stride) {
        out[i] = add_same(xs[i], from_f32<T>(branch[i]));
    }
}

#define ADD_ROUNDED(suffix, T)                                                                                    \
    extern "C" __global__ void add_rounded_##suffix(const T* xs, const float* branch, T* out, uint64_t count) {  \
        add_rounded<T>(xs, branch, out, count);                                                                   \
    }

ADD_ROUNDED(bf16, __nv_bfloat16)
ADD_ROUNDED(f16, __half)
ADD_ROUNDED(f32, float)

// ---------------------------------------------------------------------------------------------------------------
// Gated activation of the experts: act(gate) · up
// ---------------------------------------------------------------------------------------------------------------

#define ACT_SILU 0
#define ACT_GELU 1      // exact, with erf
#define ACT_GELU_TANH 2 // the tanh approximation

// gate_up [rows, 2I] (gate in the first I columns, up in the last I) → out [rows, I]: act(gate) computed in f32 and
// rounded to T, times up, rounded (torch computes the activation in f32 for bf16 and f16); amax[0] (zeroed by the
// launcher) the largest |out|. Grid-stride.
template <typename T>
__device__ __forceinline__ void gated_activation(const T* gate_up, T* out, float* amax, uint64_t rows,
                                                 uint32_t inter, int kind) {
    float largest = 0.0f;
    const uint64_t count = rows * inter;
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += stride) {
        const uint64_t row = i / inter;
        const uint32_t column = (uint32_t)(i - row * inter);
        const T* pair = gate_up + row * 2 * (uint64_t)inter;
        const float x = to_f32(pair[column]);
        float act;
        if (kind == ACT_SILU) {
            act = __fdiv_rn(x, __fadd_rn(1.0f, expf(-x)));
        } else if (kind == ACT_GELU) {
            act = 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f));
        } else {
            const float inner = 0.79788456080286535588f * (x + 0.044715f * x * x * x);
            act = 0.5f * x * (1.0f + tanhf(inner));
        }
        const float gate = to_f32(from_f32<T>(act));
        const T y = from_f32<T>(__fmul_rn(gate, to_f32(pair[inter + column])));
        out[i] = y;
        largest = fmaxf(largest, fabsf(to_f32(y)));
    }
    record_amax(amax, largest);
}

#define GATED_ACTIVATION(suffix, T)                                                                               \
    extern "C" __global__ void gated_activation_##suffix(const T* gate_up, T* out, float* amax, uint64_t rows,  \
                                                         uint32_t inter, int kind) {                              \
        gated_activation<T>(gate_up, out, amax, rows, inter, kind);                                               \
    }

GATED_ACTIVATION(bf16, __nv_bfloat16)
GATED_ACTIVATION(f16, __half)
GATED_ACTIVATION(f32, float)

// ---------------------------------------------------------------------------------------------------------------
// Row gather and the finite check
// ---------------------------------------------------------------------------------------------------------------

// out[i] = src[index[i]] for rows of `row_bytes` bytes, copied as 16-byte vectors when every row is a whole number
// of them (vectorized = 1), else byte by byte. Grid: x over output rows, y over pieces of a row.
extern "C" __global__ void gather_rows(const uint8_t* src, uint8_t* out, const uint32_t* index, uint64_t rows,
                                      uint64_t row_bytes, int vectorized) {
    const uint64_t row = blockIdx.x;
    if (row >= rows) return;
    const uint8_t* from = src + (uint64_t)index[row] * row_bytes;
    uint8_t* to = out + row * row_bytes;
    const uint64_t first = (uint64_t)blockIdx.y * blockDim.x + threadIdx.x;
    const uint64_t stride = (uint64_t)gridDim.y * blockDim.x;
    if (vectorized) {
        const uint4* s = reinterpret_cast<const uint4*>(from);
        uint4* d = reinterpret_cast<uint4*>(to);
        for (uint64_t i = first; i < row_bytes / 16; i += stride) d[i] = __ldg(s + i);
    } else {
        for (uint64_t i = first; i < row_bytes; i += stride) to[i] = from[i];
    }
}

// flag[0] = 1 when any of xs[0..count) is NaN or infinite (flag starts at 0). Grid-stride.
template <typename T>
__device__ __forceinline__ void flag_non_finite(const T* xs, float* flag, uint64_t count) {
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    bool bad = false;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += stride) {
        bad |= !isfinite(to_f32(xs[i]));
    }
    if (__any_sync(0xffffffffu, bad) && (threadIdx.x & 31) == 0) flag[0] = 1.0f;
}

#define FLAG_NON_FINITE(suffix, T)                                                                                \
    extern "C" __global__ void flag_non_finite_##suffix(const T* xs, float* flag, uint64_t count) {              \
        flag_non_finite<T>(xs, flag, count);                                                                      \
    }

FLAG_NON_FINITE(bf16, __nv_bfloat16)
FLAG_NON_FINITE(f16, __half)
FLAG_NON_FINITE(f32, float)
