// FP8 (E4M3) quantization of a weight already on the GPU, the bytes of formats/fp8 on the CPU. Loaded by
// src/formats/fp8/cuda.rs.

#include "common.cuh"

// ---------------------------------------------------------------------------------------------------------------
// FP8: y = e4m3(round_to_source_dtype(x / scale)), one scale per run of `per_expert` elements
// ---------------------------------------------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ uint32_t fp8_encode_one(float value, float scale) {
    float q = __fdiv_rn(value, scale);
    float unused = 0.0f;
    T::round_pair(q, unused);
    return f32_to_e4m3(q);
}

template <typename T>
__device__ __forceinline__ void fp8_quantize(const typename T::storage* x, uint8_t* y, const float* scales,
                                             uint64_t per_expert, int vectorized) {
    const uint64_t base = (uint64_t)blockIdx.y * per_expert;
    const typename T::storage* src = x + base;
    uint8_t* dst = y + base;
    const float scale = scales[blockIdx.y];
    const float recip = __frcp_rn(scale);
    const bool fast_scale = fast_divisor(scale);
    const uint64_t groups = vectorized ? per_expert / GROUP : 0;
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    const uint64_t first = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (uint64_t g = first; g < groups; g += stride) {
        float v[GROUP];
        T::load_group(src + g * GROUP, v);
        Range range;
#pragma unroll
        for (int i = 0; i < GROUP; ++i) range.add(v[i]);
        float q[GROUP];
        if (fast_scale && range.fast()) {
#pragma unroll
            for (int i = 0; i < GROUP; ++i) q[i] = fast_div(v[i], scale, recip);
        } else {
#pragma unroll
            for (int i = 0; i < GROUP; ++i) q[i] = __fdiv_rn(v[i], scale);
        }
        uint32_t packed[4];
#pragma unroll
        for (int w = 0; w < 4; ++w) {
            T::round_pair(q[4 * w + 0], q[4 * w + 1]);
            T::round_pair(q[4 * w + 2], q[4 * w + 3]);
            packed[w] = e4m3x2(q[4 * w + 0], q[4 * w + 1]) | (e4m3x2(q[4 * w + 2], q[4 * w + 3]) << 16);
        }
        reinterpret_cast<uint4*>(dst)[g] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
    }
    for (uint64_t i = groups * GROUP + first; i < per_expert; i += stride) {
        dst[i] = (uint8_t)fp8_encode_one<T>(T::load_one(src + i), scale);
    }
}


// The quantization error of FP8 codes against the weights they were made from: blockIdx.y is an expert of
// `per_expert` elements with its own `scale`; each thread block adds up (e4m3(code)·scale − x)² and x² over its
// share in f32 and writes the two sums to partial[2·(blockIdx.y·gridDim.x + blockIdx.x) + {0, 1}].
template <typename T>
__device__ __forceinline__ void fp8_error(const typename T::storage* x, const uint8_t* codes, const float* scales,
                                          uint64_t per_expert, float* partial) {
    const uint64_t base = (uint64_t)blockIdx.y * per_expert;
    const float scale = scales[blockIdx.y];
    float error = 0.0f, norm = 0.0f;
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < per_expert; i += stride) {
        const float value = T::load_one(x + base + i);
        const float difference = __fmul_rn(e4m3_to_f32(codes[base + i]), scale) - value;
        error = fmaf(difference, difference, error);
        norm = fmaf(value, value, norm);
    }
    block_sums(error, norm, partial + 2 * ((uint64_t)blockIdx.y * gridDim.x + blockIdx.x));
}

#define FP8_ENTRY_POINTS(suffix, T)                                                                              \
    extern "C" __global__ void fp8_quantize_##suffix(const T::storage* x, uint8_t* y, const float* scales,       \
                                                     uint64_t per_expert, int vectorized) {                      \
        fp8_quantize<T>(x, y, scales, per_expert, vectorized);                                                   \
    }                                                                                                            \
    extern "C" __global__ void fp8_error_##suffix(const T::storage* x, const uint8_t* codes, const float* scales, \
                                                  uint64_t per_expert, float* partial) {                          \
        fp8_error<T>(x, codes, scales, per_expert, partial);                                                     \
    }

FOR_EACH_SOURCE(FP8_ENTRY_POINTS)
