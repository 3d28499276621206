// NVFP4 (E2M1 codes, E4M3 block scales) quantization of a weight already on the GPU, the bytes of
// formats/nvfp4 on the CPU. Loaded by src/formats/nvfp4/cuda.rs.

#include "common.cuh"

// ---------------------------------------------------------------------------------------------------------------
// NVFP4: per group of 16, s = e4m3(clamp(amax / (6·scale_2), 2^-9, 448)) (s = 1 where the quotient is 0),
// then 16 E2M1 codes of x / (f32(s)·scale_2), two per byte, the even element in the low nibble.
// ---------------------------------------------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ void nvfp4_quantize(const typename T::storage* x, uint8_t* packed, uint8_t* block_scales,
                                               const float* scales_2, uint64_t per_expert) {
    // Block scales are E4M3 bytes 1..126 (s is clamped to [2^-9, 448]), so the divisors f32(s)·scale_2 and their
    // reciprocals (0 where the fast division does not apply) come from a table built once per thread block.
    __shared__ float divisors[128];
    __shared__ float recips[128];
    const float scale_2 = scales_2[blockIdx.y];
    for (uint32_t byte = threadIdx.x; byte < 128; byte += blockDim.x) {
        const float divisor = __fmul_rn(e4m3_to_f32(byte), scale_2);
        divisors[byte] = divisor;
        recips[byte] = fast_divisor(divisor) ? __frcp_rn(divisor) : 0.0f;
    }
    __syncthreads();
    const uint64_t groups = per_expert / GROUP;
    const uint64_t first_group = (uint64_t)blockIdx.y * groups;
    const float block_divisor = __fmul_rn(6.0f, scale_2);
    const float block_recip = fast_divisor(block_divisor) ? __frcp_rn(block_divisor) : 0.0f;
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t g = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += stride) {
        const uint64_t group = first_group + g;
        float v[GROUP];
        T::load_group(x + group * GROUP, v);
        Range range;
#pragma unroll
        for (int i = 0; i < GROUP; ++i) range.add(v[i]);
        const bool fast = range.fast();
        float s;
        if (fast && block_recip != 0.0f) {
            s = fast_div(range.max_abs, block_divisor, block_recip);
        } else {
            s = __fdiv_rn(range.max_abs, block_divisor);
            s = s == 0.0f ? 1.0f : s;
        }
        s = fminf(fmaxf(s, 1.0f / 512.0f), 448.0f);
        const uint32_t scale_byte = f32_to_e4m3(s);
        const float divisor = divisors[scale_byte];
        const float recip = recips[scale_byte];
        float q[GROUP];
        if (fast && recip != 0.0f) {
#pragma unroll
            for (int i = 0; i < GROUP; ++i) q[i] = fast_div(v[i], divisor, recip);
        } else {
#pragma unroll
            for (int i = 0; i < GROUP; ++i) q[i] = __fdiv_rn(v[i], divisor);
        }
        uint32_t words[2];
#pragma unroll
        for (int w = 0; w < 2; ++w) {
            uint32_t word = 0;
#pragma unroll
            for (int i = 0; i < 8; ++i) word += e2m1_code(q[8 * w + i]) << (4 * i);
            words[w] = word;
        }
        reinterpret_cast<uint2*>(packed)[group] = make_uint2(words[0], words[1]);
        block_scales[group] = (uint8_t)scale_byte;
    }
}

// The value of each E2M1 code (bit 3 the sign).
__constant__ float E2M1_VALUES[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                      -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// The quantization error of NVFP4 codes against the weights they were made from: blockIdx.y is an expert of
// `per_expert` elements with its own weight_scale_2; a value is e2m1(code)·(e4m3(block scale)·scale_2), the low
// nibble of a byte first. Each thread block adds up (value − x)² and x² over its share of the 16-element blocks
// in f32 and writes the two sums to partial[2·(blockIdx.y·gridDim.x + blockIdx.x) + {0, 1}].
template <typename T>
__device__ __forceinline__ void nvfp4_error(const typename T::storage* x, const uint8_t* packed,
                                            const uint8_t* block_scales, const float* scales_2,
                                            uint64_t per_expert, float* partial) {
    const uint64_t first_block = (uint64_t)blockIdx.y * (per_expert / 16);
    const float scale_2 = scales_2[blockIdx.y];
    float error = 0.0f, norm = 0.0f;
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t b = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; b < per_expert / 16; b += stride) {
        const uint64_t block = first_block + b;
        const float scale = __fmul_rn(e4m3_to_f32(block_scales[block]), scale_2);
        float v[16];
        T::load_group(x + block * 16, v);
        const uint2 codes = reinterpret_cast<const uint2*>(packed)[block];
#pragma unroll
        for (int i = 0; i < 16; ++i) {
            const uint32_t word = i < 8 ? codes.x : codes.y;
            const uint32_t code = (word >> (4 * (i % 8))) & 0xFu;
            const float difference = __fmul_rn(E2M1_VALUES[code], scale) - v[i];
            error = fmaf(difference, difference, error);
            norm = fmaf(v[i], v[i], norm);
        }
    }
    block_sums(error, norm, partial + 2 * ((uint64_t)blockIdx.y * gridDim.x + blockIdx.x));
}

#define NVFP4_ENTRY_POINTS(suffix, T)                                                                            \
    extern "C" __global__ void nvfp4_quantize_##suffix(const T::storage* x, uint8_t* packed, uint8_t* block_scales, \
                                                       const float* scales_2, uint64_t per_expert) {             \
        nvfp4_quantize<T>(x, packed, block_scales, scales_2, per_expert);                                        \
    }                                                                                                            \
    extern "C" __global__ void nvfp4_error_##suffix(const T::storage* x, const uint8_t* packed,                  \
                                                    const uint8_t* block_scales, const float* scales_2,          \
                                                    uint64_t per_expert, float* partial) {                       \
        nvfp4_error<T>(x, packed, block_scales, scales_2, per_expert, partial);                                  \
    }

FOR_EACH_SOURCE(NVFP4_ENTRY_POINTS)
