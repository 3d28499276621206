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


#define NVFP4_ENTRY_POINTS(suffix, T)                                                                            \
    extern "C" __global__ void nvfp4_quantize_##suffix(const T::storage* x, uint8_t* packed, uint8_t* block_scales, \
                                                       const float* scales_2, uint64_t per_expert) {             \
        nvfp4_quantize<T>(x, packed, block_scales, scales_2, per_expert);                                        \
    }

FOR_EACH_SOURCE(NVFP4_ENTRY_POINTS)
