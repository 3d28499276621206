// Shared device code of moe-quant's CUDA kernels (included by src/cuda/*.cu and src/formats/*/*.cu): scalar
// conversions, exact division by a scale, and loading 16-element groups of a bf16 / f16 / f32 source. Each .cu
// file is compiled to PTX by crates/core/build.rs twice: for compute_80 (any GPU since Ampere) and for
// compute_89 (Ada, Hopper: E4M3 conversion in hardware); src/cuda/launch.rs loads the variant that fits the
// device's compute capability.
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
// (and, for NVFP4, one block scale). Where a run of elements may not be a whole number of aligned groups, the
// launcher passes vectorized = 0 and every element takes the scalar path. Kernels with a per-expert dimension
// take it as blockIdx.y; `per_expert` is the number of elements of one expert (the whole tensor when there is
// one scale).

#pragma once

#include <stdint.h>
#include <cuda_fp16.h>

#define GROUP 16

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
#define HAVE_E4M3_CVT 1
#else
#define HAVE_E4M3_CVT 0
#endif

// ---------------------------------------------------------------------------------------------------------------
// Scalar conversions (mirrors of numerics/e4m3.rs and numerics/e2m1.rs)
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


// The source dtypes every kernel is instantiated for: suffix of the entry point, loader struct.
#define FOR_EACH_SOURCE(X) X(bf16, Bf16) X(f16, F16) X(f32, F32)

// Adds `a` and `b` over the thread block (blockDim.x a multiple of 32, at most 1024) and writes the two sums to
// out[0] and out[1] (thread 0). Every thread of the block must call it.
__device__ __forceinline__ void block_sums(float a, float b, float* out) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        a += __shfl_down_sync(0xFFFFFFFFu, a, offset);
        b += __shfl_down_sync(0xFFFFFFFFu, b, offset);
    }
    __shared__ float warp_a[32], warp_b[32];
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    if (lane == 0) {
        warp_a[warp] = a;
        warp_b[warp] = b;
    }
    __syncthreads();
    if (warp == 0) {
        const unsigned warps = blockDim.x >> 5;
        a = lane < warps ? warp_a[lane] : 0.0f;
        b = lane < warps ? warp_b[lane] : 0.0f;
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) {
            a += __shfl_down_sync(0xFFFFFFFFu, a, offset);
            b += __shfl_down_sync(0xFFFFFFFFu, b, offset);
        }
        if (lane == 0) {
            out[0] = a;
            out[1] = b;
        }
    }
}
