// moe-quant's CUDA kernels: amax reductions, FP8 (E4M3) and NVFP4 (E2M1 + E4M3 block scales) quantization and
// the split of fused gate/up expert tensors. Compiled to PTX by crates/core/build.rs twice: for compute_80
// (any GPU since Ampere) and for compute_89 (Ada, Hopper: E4M3 conversion in hardware); loaded by
// crates/core/src/kernels/cuda.rs, which picks the variant by the device's compute capability.
//
// Every result must equal the CPU quantizers' bytes (crates/core/src/formats/), which match ModelOpt's. So:
// - each f32 product and quotient uses an explicitly rounded intrinsic (__fmul_rn, __fdiv_rn, __fmaf_rn), so
//   no flag (--use_fast_math, FMA contraction) can change a bit;
// - divisions by a scale take a fast exact path (see fast_div) where its proof holds, __fdiv_rn elsewhere;
// - E4M3 uses `cvt.rn.satfinite.e4m3x2.f32` on sm_89+ (round to nearest even, saturating, as the CPU), and an
//   integer encoding elsewhere (candle's own F8E4M3 casts are wrong on CUDA); E2M1 is computed here.
//
// Layout conventions: inputs are contiguous and 16-byte aligned (the launcher copies anything else), element
// counts are in elements; a "group" is 16 consecutive elements, the unit one thread loads with 16-byte vectors
// and, for NVFP4, one block scale. Where a run of elements may not be a whole number of aligned groups, the
// launcher passes vectorized = 0 and every element takes the scalar path. Kernels with a per-expert dimension
// take it as blockIdx.y; `per_expert` is the number of elements of one expert (the whole tensor when there is
// one scale).

#include <stdint.h>
#include <cuda_fp16.h>

#define GROUP 16

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
#define HAVE_E4M3_CVT 1
#else
#define HAVE_E4M3_CVT 0
#endif

// ---------------------------------------------------------------------------------------------------------------
// Scalar conversions (mirrors of formats/e4m3.rs and formats/e2m1.rs)
// ---------------------------------------------------------------------------------------------------------------

// f32 → E4M3 ("fn": bias 7, max 448, 0x7F NaN) in integer arithmetic: saturating, round to nearest even, sign
// kept, NaN → 0x7F | sign.
__device__ __forceinline__ uint32_t f32_to_e4m3_soft(float value) {
    const uint32_t bits = __float_as_uint(value);
    const uint32_t sign = (bits >> 24) & 0x80u;
    const float magnitude = __uint_as_float(bits & 0x7FFFFFFFu);
    const float clamped = fminf(magnitude, 448.0f);
    // Below 2^-6: adding 2^14 leaves the value in units of 2^-9 in the low mantissa bits, rounded half to even
    // by the addition itself.
    const uint32_t subnormal = __float_as_uint(__fadd_rn(clamped, 16384.0f)) - __float_as_uint(16384.0f);
    // Normal range: keep 3 mantissa bits, round half to even (a carry moves into the exponent), re-bias 127 → 7.
    const uint32_t m = __float_as_uint(clamped);
    const uint32_t normal = ((m + 0x7FFFFu + ((m >> 20) & 1u)) >> 20) - ((127u - 7u) << 3);
    uint32_t code = clamped < 0.015625f ? subnormal : normal;
    code = magnitude != magnitude ? 0x7Fu : code;
    return sign | code;
}

// Two values → two E4M3 bytes, `lo` in bits 0-7 and `hi` in bits 8-15.
__device__ __forceinline__ uint32_t e4m3x2(float lo, float hi) {
#if HAVE_E4M3_CVT
    unsigned short pair;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(pair) : "f"(hi), "f"(lo));
    return pair;
#else
    return f32_to_e4m3_soft(lo) | (f32_to_e4m3_soft(hi) << 8);
#endif
}

__device__ __forceinline__ uint32_t f32_to_e4m3(float value) {
    return e4m3x2(value, 0.0f) & 0xFFu;
}

// E4M3 → f32, exact.
__device__ __forceinline__ float e4m3_to_f32(uint32_t byte) {
    const uint32_t sign = (byte & 0x80u) << 24;
    const uint32_t exponent = (byte >> 3) & 0x0Fu;
    const uint32_t mantissa = byte & 0x07u;
    float magnitude;
    if ((byte & 0x7Fu) == 0x7Fu) {
        magnitude = __uint_as_float(0x7FC00000u);
    } else if (exponent == 0) {
        magnitude = __fmul_rn((float)mantissa, 1.0f / 512.0f);
    } else {
        magnitude = __uint_as_float(((exponent + 127u - 7u) << 23) | (mantissa << 20));
    }
    return __uint_as_float(__float_as_uint(magnitude) | sign);
}

// The E2M1 code of a value already divided by its block scale: the grid {0, .5, 1, 1.5, 2, 3, 4, 6} index,
// rounded to nearest with ties to the even index, saturating at 6; bit 3 set for every value below zero (-0.0
// gives 0, -0.1 gives 0x8). The grid steps by 0.5 below 2, by 1 in [2, 4) and by 2 in [4, 6]: adding
// M = 2^22, 2^23 or 2^24 (whose ulp is that step) rounds to the grid with the f32 adder's ties-to-even, and the
// even multiples of each step are exactly the even indices. index = bits(a + M) − bits(M) + 2·(exponent − 127),
// with bits(M) = (exponent + 22)·2^23, folded into one multiply-add.
__device__ __forceinline__ uint32_t e2m1_code(float value) {
    const float a = fminf(fabsf(value), 6.0f);
    const uint32_t exponent = max(__float_as_uint(a) >> 23, 127u);  // 127 for a < 2, 128, 129
    const float magic = __uint_as_float((exponent + 22u) << 23);     // 2^22, 2^23, 2^24
    const uint32_t sign = value < 0.0f ? 0x8u : 0x0u;
    return __float_as_uint(__fadd_rn(a, magic)) + exponent * (2u - (1u << 23)) - ((22u << 23) + 254u) + sign;
}

// ---------------------------------------------------------------------------------------------------------------
// Division by a scale
// ---------------------------------------------------------------------------------------------------------------

// a / b correctly rounded, from y = RN(1/b) (Markstein's correction: q0 = RN(a·y) is within about an ulp, the
// remainder a − b·q0 is exact in an FMA, and RN(q0 + r·y) = RN(a/b)). It holds without underflow or overflow
// anywhere, which FAST_MIN/FAST_MAX guarantee: b and every nonzero |a| in [2^-60, 2^60] keep a/b, y and the
// remainder (≈ a·2^-24) normal.
// (Checked against __fdiv_rn on 4·10^8 random pairs, and byte for byte in tests/kernels_cuda.rs.)
#define FAST_MIN 0x1p-60f
#define FAST_MAX 0x1p60f

__device__ __forceinline__ float fast_div(float a, float b, float y) {
    const float q0 = __fmul_rn(a, y);
    const float r = __fmaf_rn(-q0, b, a);
    return __fmaf_rn(r, y, q0);
}

__device__ __forceinline__ bool fast_divisor(float b) {
    return b >= FAST_MIN && b <= FAST_MAX;
}

// Tracks max |a| and min |a| of a group: the fast path needs every |a| in [FAST_MIN, FAST_MAX]. A group holding
// a zero takes the exact path (cheaper than tracking the smallest nonzero value, and rare in weights).
struct Range {
    float max_abs;
    float min_abs;
    __device__ __forceinline__ Range() : max_abs(0.0f), min_abs(__uint_as_float(0x7F800000u)) {}
    __device__ __forceinline__ void add(float a) {
        max_abs = fmaxf(max_abs, fabsf(a));
        min_abs = fminf(min_abs, fabsf(a));
    }
    __device__ __forceinline__ bool fast() const { return min_abs >= FAST_MIN && max_abs <= FAST_MAX; }
};

// ---------------------------------------------------------------------------------------------------------------
// Sources: loading 16 elements (one group) as f32 with 16-byte loads, and rounding quotients to the source dtype
// ---------------------------------------------------------------------------------------------------------------

__device__ __forceinline__ void unpack_bf16x2(uint32_t word, float* out) {
    out[0] = __uint_as_float(word << 16);
    out[1] = __uint_as_float(word & 0xFFFF0000u);
}

__device__ __forceinline__ void unpack_f16x2(uint32_t word, float* out) {
    out[0] = __half2float(__ushort_as_half((unsigned short)(word & 0xFFFFu)));
    out[1] = __half2float(__ushort_as_half((unsigned short)(word >> 16)));
}

struct Bf16 {
    typedef uint16_t storage;
    __device__ __forceinline__ static void load_group(const storage* src, float* v) {
        const uint4* p = reinterpret_cast<const uint4*>(src);
        const uint4 a = __ldg(p);
        const uint4 b = __ldg(p + 1);
        unpack_bf16x2(a.x, v + 0); unpack_bf16x2(a.y, v + 2); unpack_bf16x2(a.z, v + 4); unpack_bf16x2(a.w, v + 6);
        unpack_bf16x2(b.x, v + 8); unpack_bf16x2(b.y, v + 10); unpack_bf16x2(b.z, v + 12); unpack_bf16x2(b.w, v + 14);
    }
    __device__ __forceinline__ static float load_one(const storage* src) {
        return __uint_as_float((uint32_t)src[0] << 16);
    }
    // Rounds a pair to bf16 (nearest even; one cvt.rn.bf16x2.f32, sm_80+).
    __device__ __forceinline__ static void round_pair(float& lo, float& hi) {
        uint32_t packed;
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(packed) : "f"(hi), "f"(lo));
        unpack_bf16x2(packed, &lo);
        hi = __uint_as_float(packed & 0xFFFF0000u);
    }
};

struct F16 {
    typedef uint16_t storage;
    __device__ __forceinline__ static void load_group(const storage* src, float* v) {
        const uint4* p = reinterpret_cast<const uint4*>(src);
        const uint4 a = __ldg(p);
        const uint4 b = __ldg(p + 1);
        unpack_f16x2(a.x, v + 0); unpack_f16x2(a.y, v + 2); unpack_f16x2(a.z, v + 4); unpack_f16x2(a.w, v + 6);
        unpack_f16x2(b.x, v + 8); unpack_f16x2(b.y, v + 10); unpack_f16x2(b.z, v + 12); unpack_f16x2(b.w, v + 14);
    }
    __device__ __forceinline__ static float load_one(const storage* src) {
        return __half2float(__ushort_as_half(src[0]));
    }
    __device__ __forceinline__ static void round_pair(float& lo, float& hi) {
        lo = __half2float(__float2half_rn(lo));
        hi = __half2float(__float2half_rn(hi));
    }
};

struct F32 {
    typedef float storage;
    __device__ __forceinline__ static void load_group(const storage* src, float* v) {
        const float4* p = reinterpret_cast<const float4*>(src);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const float4 x = __ldg(p + i);
            v[4 * i + 0] = x.x; v[4 * i + 1] = x.y; v[4 * i + 2] = x.z; v[4 * i + 3] = x.w;
        }
    }
    __device__ __forceinline__ static float load_one(const storage* src) { return src[0]; }
    __device__ __forceinline__ static void round_pair(float&, float&) {}
};

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

// out[blockIdx.y] = max |x| over the blockIdx.y-th run of `per_expert` elements (out zeroed by the caller).
template <typename T>
__device__ __forceinline__ void amax_experts(const typename T::storage* x, float* out, uint64_t per_expert,
                                             int vectorized) {
    const typename T::storage* expert = x + (uint64_t)blockIdx.y * per_expert;
    const uint64_t groups = vectorized ? per_expert / GROUP : 0;
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    const uint64_t first = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    float m = 0.0f;
    for (uint64_t g = first; g < groups; g += stride) {
        float v[GROUP];
        T::load_group(expert + g * GROUP, v);
#pragma unroll
        for (int i = 0; i < GROUP; ++i) m = fmaxf(m, fabsf(v[i]));
    }
    for (uint64_t i = groups * GROUP + first; i < per_expert; i += stride) {
        m = fmaxf(m, fabsf(T::load_one(expert + i)));
    }
    m = block_max(m);
    if (threadIdx.x == 0) atomicMax(reinterpret_cast<unsigned int*>(out + blockIdx.y), __float_as_uint(m));
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

// ---------------------------------------------------------------------------------------------------------------
// Expert split
// ---------------------------------------------------------------------------------------------------------------

// [E, 2I, H] → gate [E, I, H], up [E, I, H]: 2E contiguous chunks of `chunk_bytes`, copied with 16-byte vectors
// when every chunk is a multiple of 16 bytes (the caller passes vectorized = 0 otherwise).
// blockIdx.y = 2e + half.
extern "C" __global__ void split_gate_up(const uint8_t* src, uint8_t* gate, uint8_t* up, uint64_t chunk_bytes,
                                         int vectorized) {
    const uint64_t expert = blockIdx.y >> 1;
    const uint8_t* from = src + (uint64_t)blockIdx.y * chunk_bytes;
    uint8_t* to = ((blockIdx.y & 1) ? up : gate) + expert * chunk_bytes;
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    const uint64_t first = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (vectorized) {
        const uint4* s = reinterpret_cast<const uint4*>(from);
        uint4* d = reinterpret_cast<uint4*>(to);
        const uint64_t vectors = chunk_bytes / 16;
        // Four independent 16-byte loads in flight per thread before the first store.
        uint64_t i = first;
        for (; i + 3 * stride < vectors; i += 4 * stride) {
            const uint4 a = __ldg(s + i);
            const uint4 b = __ldg(s + i + stride);
            const uint4 c = __ldg(s + i + 2 * stride);
            const uint4 e = __ldg(s + i + 3 * stride);
            __stcs(d + i, a);
            __stcs(d + i + stride, b);
            __stcs(d + i + 2 * stride, c);
            __stcs(d + i + 3 * stride, e);
        }
        for (; i < vectors; i += stride) __stcs(d + i, __ldg(s + i));
    } else {
        for (uint64_t i = first; i < chunk_bytes; i += stride) to[i] = from[i];
    }
}

// [E, H, 2I] (transposed layouts) → gate [E, I, H], up [E, I, H]: column c of expert e's [H, 2I] matrix becomes row
// j of gate (c = j, or c = 2j when interleaved) or of up (c = I + j, or 2j + 1). Tiles of 64 (h) × 64 (c) through
// shared memory, moved as pairs of elements (4 or 8 bytes) so a warp reads and writes 128- or 256-byte runs.
// Grid: x over H / 64, y over 2I / 64, z = E; block 32 × 8.
template <typename E, typename Pair>
__device__ __forceinline__ void split_gate_up_transposed(const E* src, E* gate, E* up, uint32_t hidden,
                                                         uint32_t inter, int interleaved) {
    __shared__ E tile[64][65];
    const uint32_t two_i = 2 * inter;
    const uint64_t expert = blockIdx.z;
    const E* in = src + expert * (uint64_t)hidden * two_i;
    const uint32_t h0 = blockIdx.x * 64;
    const uint32_t c0 = blockIdx.y * 64;
    // Read rows h0..h0+63, columns c0..c0+63 of [H, 2I]; thread x reads columns c0+2x, c0+2x+1.
    for (uint32_t r = threadIdx.y; r < 64; r += blockDim.y) {
        const uint32_t h = h0 + r;
        const uint32_t c = c0 + 2 * threadIdx.x;
        if (h >= hidden) continue;
        if (c + 1 < two_i) {  // 2I is even, so pairs never straddle a row
            const Pair p = *reinterpret_cast<const Pair*>(in + (uint64_t)h * two_i + c);
            tile[r][2 * threadIdx.x] = p.x;
            tile[r][2 * threadIdx.x + 1] = p.y;
        } else if (c < two_i) {
            tile[r][2 * threadIdx.x] = in[(uint64_t)h * two_i + c];
        }
    }
    __syncthreads();
    // Write: for column c (one output row), thread x writes h0+2x, h0+2x+1.
    const bool pairs_out = (hidden % 2 == 0);
    for (uint32_t r = threadIdx.y; r < 64; r += blockDim.y) {
        const uint32_t c = c0 + r;
        const uint32_t h = h0 + 2 * threadIdx.x;
        if (c >= two_i || h >= hidden) continue;
        uint32_t row;
        E* out;
        if (interleaved) {
            row = c >> 1;
            out = (c & 1) ? up : gate;
        } else {
            row = c < inter ? c : c - inter;
            out = c < inter ? gate : up;
        }
        E* dst = out + (expert * inter + row) * (uint64_t)hidden + h;
        if (pairs_out && h + 1 < hidden) {
            Pair p;
            p.x = tile[2 * threadIdx.x][r];
            p.y = tile[2 * threadIdx.x + 1][r];
            *reinterpret_cast<Pair*>(dst) = p;
        } else {
            dst[0] = tile[2 * threadIdx.x][r];
            if (h + 1 < hidden) dst[1] = tile[2 * threadIdx.x + 1][r];
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Entry points (extern "C": the names the launcher loads)
// ---------------------------------------------------------------------------------------------------------------

#define FOR_EACH_SOURCE(X) X(bf16, Bf16) X(f16, F16) X(f32, F32)

#define ENTRY_POINTS(suffix, T)                                                                                  \
    extern "C" __global__ void amax_experts_##suffix(const T::storage* x, float* out, uint64_t per_expert,      \
                                                     int vectorized) {                                           \
        amax_experts<T>(x, out, per_expert, vectorized);                                                         \
    }                                                                                                            \
    extern "C" __global__ void amax_groups_##suffix(const T::storage* x, float* out, uint64_t groups) {          \
        amax_groups<T>(x, out, groups);                                                                          \
    }                                                                                                            \
    extern "C" __global__ void fp8_quantize_##suffix(const T::storage* x, uint8_t* y, const float* scales,       \
                                                     uint64_t per_expert, int vectorized) {                      \
        fp8_quantize<T>(x, y, scales, per_expert, vectorized);                                                   \
    }                                                                                                            \
    extern "C" __global__ void nvfp4_quantize_##suffix(const T::storage* x, uint8_t* packed, uint8_t* block_scales, \
                                                       const float* scales_2, uint64_t per_expert) {             \
        nvfp4_quantize<T>(x, packed, block_scales, scales_2, per_expert);                                        \
    }

FOR_EACH_SOURCE(ENTRY_POINTS)

struct __align__(4) U16x2 { uint16_t x, y; };

extern "C" __global__ void split_gate_up_transposed_b16(const uint16_t* src, uint16_t* gate, uint16_t* up,
                                                        uint32_t hidden, uint32_t inter, int interleaved) {
    split_gate_up_transposed<uint16_t, U16x2>(src, gate, up, hidden, inter, interleaved);
}

extern "C" __global__ void split_gate_up_transposed_b32(const uint32_t* src, uint32_t* gate, uint32_t* up,
                                                        uint32_t hidden, uint32_t inter, int interleaved) {
    split_gate_up_transposed<uint32_t, uint2>(src, gate, up, hidden, inter, interleaved);
}
