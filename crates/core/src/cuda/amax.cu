// Reductions: max |x| per run of elements (whole tensor or per expert) and per group of 16. Loaded by
// src/cuda/amax.rs.

#include "common.cuh"

// ---------------------------------------------------------------------------------------------------------------
// Reductions
// ---------------------------------------------------------------------------------------------------------------

// fmaxf ignores NaN, as the CPU's f32::max does; the result is never NaN, so its bits order as unsigned ints and
// atomicMax on them is a float max for non-negative values.
__device__ __forceinline__ float block_max(float value) {
    __shared__ float warp_max[32];
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        value = fmaxf(value, __shfl_xor_sync(0xFFFFFFFFu, value, offset));
    }
    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    if (lane == 0) warp_max[warp] = value;
    __syncthreads();
    if (warp == 0) {
        const int warps = (blockDim.x + 31) >> 5;
        value = lane < warps ? warp_max[lane] : 0.0f;
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) {
            value = fmaxf(value, __shfl_xor_sync(0xFFFFFFFFu, value, offset));
        }
    }
    return value;
}

// *out = max(*out, max |x| over x[0..count)) for the thread block (grid-stride along blockIdx.x), with 16-byte
// vector loads when `vectorized` (x 16-byte aligned).
template <typename T>
__device__ __forceinline__ void amax_run(const typename T::storage* x, uint64_t count, bool vectorized, float* out) {
    const uint64_t groups = vectorized ? count / GROUP : 0;
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    const uint64_t first = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    float m = 0.0f;
    for (uint64_t g = first; g < groups; g += stride) {
        float v[GROUP];
        T::load_group(x + g * GROUP, v);
#pragma unroll
        for (int i = 0; i < GROUP; ++i) m = fmaxf(m, fabsf(v[i]));
    }
    for (uint64_t i = groups * GROUP + first; i < count; i += stride) m = fmaxf(m, fabsf(T::load_one(x + i)));
    m = block_max(m);
    if (threadIdx.x == 0) atomicMax(reinterpret_cast<unsigned int*>(out), __float_as_uint(m));
}

// out[blockIdx.y] = max |x| over the blockIdx.y-th run of `per_expert` elements (out zeroed by the caller).
template <typename T>
__device__ __forceinline__ void amax_experts(const typename T::storage* x, float* out, uint64_t per_expert,
                                             int vectorized) {
    amax_run<T>(x + (uint64_t)blockIdx.y * per_expert, per_expert, vectorized != 0, out + blockIdx.y);
}

// out[g] = max |x| over the g-th group of 16 (the element count is a multiple of 16).
template <typename T>
__device__ __forceinline__ void amax_groups(const typename T::storage* x, float* out, uint64_t groups) {
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t g = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += stride) {
        float v[GROUP];
        T::load_group(x + g * GROUP, v);
        float m = 0.0f;
#pragma unroll
        for (int i = 0; i < GROUP; ++i) m = fmaxf(m, fabsf(v[i]));
        out[g] = m;
    }
}

// out[blockIdx.y] = max |x| over tensor blockIdx.y of a table of (address, element count) pairs (out zeroed by the
// caller): many tensors in one launch. Each address is 16-byte aligned.
template <typename T>
__device__ __forceinline__ void amax_each(const uint64_t* table, float* out) {
    const typename T::storage* x = reinterpret_cast<const typename T::storage*>(table[2 * blockIdx.y]);
    amax_run<T>(x, table[2 * blockIdx.y + 1], true, out + blockIdx.y);
}

#define AMAX_ENTRY_POINTS(suffix, T)                                                                             \
    extern "C" __global__ void amax_experts_##suffix(const T::storage* x, float* out, uint64_t per_expert,      \
                                                     int vectorized) {                                           \
        amax_experts<T>(x, out, per_expert, vectorized);                                                         \
    }                                                                                                            \
    extern "C" __global__ void amax_groups_##suffix(const T::storage* x, float* out, uint64_t groups) {          \
        amax_groups<T>(x, out, groups);                                                                          \
    }                                                                                                            \
    extern "C" __global__ void amax_each_##suffix(const uint64_t* table, float* out) {                           \
        amax_each<T>(table, out);                                                                                \
    }

FOR_EACH_SOURCE(AMAX_ENTRY_POINTS)
