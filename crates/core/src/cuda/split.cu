// The split of fused gate/up expert tensors into contiguous gate and up halves. Loaded by src/cuda/split.rs.

#include "common.cuh"

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


struct __align__(4) U16x2 { uint16_t x, y; };

extern "C" __global__ void split_gate_up_transposed_b16(const uint16_t* src, uint16_t* gate, uint16_t* up,
                                                        uint32_t hidden, uint32_t inter, int interleaved) {
    split_gate_up_transposed<uint16_t, U16x2>(src, gate, up, hidden, inter, interleaved);
}

extern "C" __global__ void split_gate_up_transposed_b32(const uint32_t* src, uint32_t* gate, uint32_t* up,
                                                        uint32_t hidden, uint32_t inter, int interleaved) {
    split_gate_up_transposed<uint32_t, uint2>(src, gate, up, hidden, inter, interleaved);
}
