// Scaled dot-product attention over whole sequences in one kernel (flash-style: the scores never leave the chip),
// at the rounding points of transformers' eager attention, which the op-by-op path computes:
//   s = T(q · kᵀ) (the product rounded to the compute dtype T), x = f32(s) · scaling (+ mask: -inf where a query
//   does not see a key), p = T(exp(x - max) / Σ exp(x - max)) (the sink's logit counted in max and Σ), out = T(p · v).
// To keep those points, each block of queries passes over its keys twice: first the row maxima and sums (online,
// rescaled as the maximum grows), then the probabilities, rounded to T as eager rounds them, times v. Only the
// order of the f32 sums differs from the op-by-op path (tested against it in tests/forward_kernels_cuda.rs).
//
// Tensor cores through mma.sync m16n8k16 (sm_80+), f32 accumulation. A block of 4 warps takes 64 queries of one
// (sequence, head); each warp 16 of them; keys and values go through shared memory 64 at a time, the next tile
// copied asynchronously (cp.async) while this one is multiplied: 4 tiles of dynamic shared memory, (64 × (D + 8))
// elements each. Loaded by src/cuda/attention.rs.

#include <stdint.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#define QUERIES_PER_BLOCK 64
#define KEYS_PER_TILE 64
#define WARPS 4
#define PAD 8

__device__ __forceinline__ uint32_t pack2(float lo, float hi, __nv_bfloat16*) {
    __nv_bfloat162 pair = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&pair);
}
__device__ __forceinline__ uint32_t pack2(float lo, float hi, __half*) {
    __half2 pair = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&pair);
}
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float round_to(float x, __nv_bfloat16*) { return __bfloat162float(__float2bfloat16_rn(x)); }
__device__ __forceinline__ float round_to(float x, __half*) { return __half2float(__float2half_rn(x)); }

// d += a · b for one 16×8 tile (a 16×16 row-major, b 16×8 column-major), f32 accumulation.
__device__ __forceinline__ void mma(float* d, const uint32_t* a, uint32_t b0, uint32_t b1, __nv_bfloat16*) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma(float* d, const uint32_t* a, uint32_t b0, uint32_t b1, __half*) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four 8×8 matrices of 16-bit values from shared memory, transposed: each lane gives the address of one row
// (lanes 8m..8m+7 the rows of matrix m).
__device__ __forceinline__ void ldmatrix_trans(uint32_t* r, const void* row) {
    const uint32_t address = (uint32_t)__cvta_generic_to_shared(row);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
}

// The first key query q sees (it sees keys first..q): causal (kind 0), a sliding window of `span` keys (kind 1:
// k + span > q), or chunks of `span` positions (kind 2: k / span == q / span, i.e. k at or after q's chunk start).
// Computed once per query row, so the test per score is two comparisons, without a division or a branch.
__device__ __forceinline__ uint32_t first_seen(uint32_t q, int kind, uint32_t span) {
    if (kind == 1) return q + 1 > span ? q + 1 - span : 0;
    if (kind == 2) return q / span * span;
    return 0;
}

// Starts copying a tile of 64 rows of `from` (row stride `stride` elements, `valid` rows present) into shared
// memory with 16-byte asynchronous copies, rows past `valid` zero-filled; the copies are one commit group.
template <typename T, int D>
__device__ __forceinline__ void load_tile(T (*to)[D + PAD], const T* from, uint64_t stride, uint32_t valid) {
    constexpr int CHUNKS = D / 8;
    for (int i = threadIdx.x; i < KEYS_PER_TILE * CHUNKS; i += WARPS * 32) {
        const int row = i / CHUNKS, chunk = i % CHUNKS;
        const bool present = (uint32_t)row < valid;
        const T* source = present ? from + row * stride + chunk * 8 : from;
        const uint32_t target = (uint32_t)__cvta_generic_to_shared(&to[row][chunk * 8]);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(target), "l"(source), "r"(present ? 16 : 0));
    }
}

__device__ __forceinline__ void commit_copies() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most `pending` commit groups of this thread are still copying.
template <int pending>
__device__ __forceinline__ void wait_copies() { asm volatile("cp.async.wait_group %0;\n" ::"n"(pending)); }

// One warp's 16 queries against one tile of 64 keys: s[n][0..4] is the m16n8 accumulator of keys 8n..8n+7
// (rows g and g+8 of the warp, keys 2t and 2t+1 of the eight), turned into logits x: the product rounded to T,
// times scaling, -inf where the query does not see the key. seen[r] is the first key that the thread's query row r
// (query0 + g + 8r) sees.
//
// The products run over the head dimension outermost and the key groups innermost: consecutive mma go to different
// accumulators, so the tensor cores overlap them; each accumulator still sums its 16-column steps in order, so the
// values are those of one group at a time. The mask after them has no branch, so all 64 products of the tile are
// one stretch of code the compiler can schedule.
template <typename T, int D>
__device__ __forceinline__ void logits(float (*s)[4], const uint32_t (*qa)[4], const T (*ks)[D + PAD],
                                       uint32_t query0, const uint32_t* seen, uint32_t key0, float scaling) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int n = 0; n < KEYS_PER_TILE / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
        for (int n = 0; n < KEYS_PER_TILE / 8; ++n) {
            const uint32_t b0 = *reinterpret_cast<const uint32_t*>(&ks[n * 8 + g][kk * 16 + 2 * t]);
            const uint32_t b1 = *reinterpret_cast<const uint32_t*>(&ks[n * 8 + g][kk * 16 + 2 * t + 8]);
            mma(s[n], qa[kk], b0, b1, (T*)nullptr);
        }
    }
#pragma unroll
    for (int n = 0; n < KEYS_PER_TILE / 8; ++n) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const uint32_t r = i >> 1, q = query0 + g + r * 8, k = key0 + n * 8 + 2 * t + (i & 1);
            const bool visible = k >= seen[r] && k <= q;
            const float x = __fmul_rn(round_to(s[n][i], (T*)nullptr), scaling);
            s[n][i] = visible ? x : -INFINITY;
        }
    }
}

__device__ __forceinline__ float quad_max(float x) {
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
// amax[0] = max(amax[0], the warp's largest m ≥ 0); every lane calls it (float bits order as integers here).
__device__ __forceinline__ void record_amax(float* amax, float m) {
    for (int offset = 16; offset > 0; offset >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
    if ((threadIdx.x & 31) == 0 && m > 0.0f) atomicMax(reinterpret_cast<int*>(amax), __float_as_int(m));
}
__device__ __forceinline__ float quad_sum(float x) {
    x = __fadd_rn(x, __shfl_xor_sync(0xffffffffu, x, 1));
    return __fadd_rn(x, __shfl_xor_sync(0xffffffffu, x, 2));
}

// q [B, H, T, D] contiguous; k, v [B, KV, T, D] with element strides (batch, head, position), each row of D
// contiguous and 16-byte aligned; out [B, T, H, D] (the layout the output projection reads); amax[0] (zeroed by
// the launcher) the largest |out|. Query head h reads kv head h / (H / KV). sinks [H] f32 when
// has_sinks. Grid: (ceil(T / 64), H, B), 128 threads.
template <typename T, int D>
__device__ __forceinline__ void attention(const T* q, T* out, float* amax, const T* k, const T* v, const float* sinks,
                                          uint32_t len, uint32_t heads, uint32_t kv_heads, uint64_t k_batch,
                                          uint64_t k_head, uint64_t k_row, uint64_t v_batch, uint64_t v_head,
                                          uint64_t v_row, float scaling, int kind, uint32_t span, int has_sinks) {
    // Two buffers each of keys and values: the next tile copies in while this one is multiplied.
    extern __shared__ __align__(16) unsigned char shared[];
    typedef T Tile[KEYS_PER_TILE][D + PAD];
    Tile* ks = reinterpret_cast<Tile*>(shared);
    Tile* vs = ks + 2;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const uint32_t head = blockIdx.y, batch = blockIdx.z;
    const uint32_t block0 = blockIdx.x * QUERIES_PER_BLOCK, query0 = block0 + warp * 16;
    const uint32_t last = min(block0 + QUERIES_PER_BLOCK, len) - 1;
    const uint32_t kv = head / (heads / kv_heads);
    const T* keys = k + batch * k_batch + kv * k_head;
    const T* values = v + batch * v_batch + kv * v_head;
    const T* queries = q + ((uint64_t)batch * heads + head) * len * D;

    // This warp's queries as mma A fragments (rows g and g + 8, columns 2t, 2t + 1, +8), zero past the end.
    uint32_t qa[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const uint32_t row = query0 + g + (i & 1) * 8, col = kk * 16 + 2 * t + (i >> 1) * 8;
            qa[kk][i] = row < len ? *reinterpret_cast<const uint32_t*>(queries + (uint64_t)row * D + col) : 0u;
        }
    }
    // The first key each of this thread's two query rows sees.
    const uint32_t seen[2] = {first_seen(query0 + g, kind, span), first_seen(query0 + g + 8, kind, span)};
    // The first key any query of the block sees: its first query's (first_seen never decreases with the query).
    const uint32_t first = first_seen(block0, kind, span);
    const uint32_t tile0 = first / KEYS_PER_TILE, tiles = last / KEYS_PER_TILE + 1;

    // Pass 1: each row's maximum logit and Σ exp(x - max) (this thread's columns; the quad's sum at the end).
    const float sink0 = has_sinks ? sinks[head] : -INFINITY;
    float top[2] = {sink0, sink0}, total[2] = {0.0f, 0.0f};
    if (has_sinks && t == 0) total[0] = total[1] = 1.0f;
    float s[KEYS_PER_TILE / 8][4];
    load_tile<T, D>(ks[0], keys + tile0 * KEYS_PER_TILE * k_row, k_row, len - tile0 * KEYS_PER_TILE);
    commit_copies();
    for (uint32_t tile = tile0; tile < tiles; ++tile) {
        const uint32_t key0 = tile * KEYS_PER_TILE, buffer = (tile - tile0) & 1;
        if (tile + 1 < tiles) {
            const uint32_t next = key0 + KEYS_PER_TILE;
            load_tile<T, D>(ks[buffer ^ 1], keys + next * k_row, k_row, len - next);
            commit_copies();
            wait_copies<1>();
        } else {
            wait_copies<0>();
        }
        __syncthreads();
        logits<T, D>(s, qa, ks[buffer], query0, seen, key0, scaling);
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float m = -INFINITY;
#pragma unroll
            for (int n = 0; n < KEYS_PER_TILE / 8; ++n) m = fmaxf(m, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
            m = fmaxf(quad_max(m), top[r]);
            if (m == -INFINITY) continue;
            float sum = top[r] == -INFINITY ? 0.0f : __fmul_rn(total[r], expf(__fadd_rn(top[r], -m)));
#pragma unroll
            for (int n = 0; n < KEYS_PER_TILE / 8; ++n) {
                sum = __fadd_rn(sum, expf(__fadd_rn(s[n][2 * r], -m)));
                sum = __fadd_rn(sum, expf(__fadd_rn(s[n][2 * r + 1], -m)));
            }
            top[r] = m;
            total[r] = sum;
        }
        // Every warp is done with this buffer before the next iteration copies into it.
        __syncthreads();
    }
    total[0] = quad_sum(total[0]);
    total[1] = quad_sum(total[1]);

    // Pass 2: p = T(exp(x - max) / Σ), then out += p · v.
    float o[D / 8][4];
#pragma unroll
    for (int n = 0; n < D / 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    load_tile<T, D>(ks[0], keys + tile0 * KEYS_PER_TILE * k_row, k_row, len - tile0 * KEYS_PER_TILE);
    load_tile<T, D>(vs[0], values + tile0 * KEYS_PER_TILE * v_row, v_row, len - tile0 * KEYS_PER_TILE);
    commit_copies();
    for (uint32_t tile = tile0; tile < tiles; ++tile) {
        const uint32_t key0 = tile * KEYS_PER_TILE, buffer = (tile - tile0) & 1;
        if (tile + 1 < tiles) {
            const uint32_t next = key0 + KEYS_PER_TILE;
            load_tile<T, D>(ks[buffer ^ 1], keys + next * k_row, k_row, len - next);
            load_tile<T, D>(vs[buffer ^ 1], values + next * v_row, v_row, len - next);
            commit_copies();
            wait_copies<1>();
        } else {
            wait_copies<0>();
        }
        __syncthreads();
        logits<T, D>(s, qa, ks[buffer], query0, seen, key0, scaling);
#pragma unroll
        for (int kk = 0; kk < KEYS_PER_TILE / 16; ++kk) {
            // P's A fragment for keys 16kk..16kk+15 is the accumulator of key groups 2kk and 2kk + 1.
            uint32_t pa[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const float* pair = &s[2 * kk + (i >> 1)][(i & 1) * 2];
                const int r = i & 1;
                const float p0 = top[r] == -INFINITY ? 0.0f : __fdiv_rn(expf(__fadd_rn(pair[0], -top[r])), total[r]);
                const float p1 = top[r] == -INFINITY ? 0.0f : __fdiv_rn(expf(__fadd_rn(pair[1], -top[r])), total[r]);
                pa[i] = pack2(p0, p1, (T*)nullptr);
            }
#pragma unroll
            for (int j = 0; j < D / 16; ++j) {
                // Matrix m of the four: keys 16kk + (m & 1)·8 .., columns 16j + (m >> 1)·8 ..; transposed, they
                // are the B fragments (b0, b1) of column groups 2j and 2j + 1.
                const int m = lane >> 3, row = lane & 7;
                uint32_t b[4];
                ldmatrix_trans(b, &vs[buffer][kk * 16 + (m & 1) * 8 + row][j * 16 + (m >> 1) * 8]);
                mma(o[2 * j], pa, b[0], b[1], (T*)nullptr);
                mma(o[2 * j + 1], pa, b[2], b[3], (T*)nullptr);
            }
        }
        __syncthreads();
    }
    float largest = 0.0f;
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const uint32_t row = query0 + g + r * 8;
            if (row < len) {
                T* to = out + (((uint64_t)batch * len + row) * heads + head) * D;
                const uint32_t pair = pack2(o[n][2 * r], o[n][2 * r + 1], (T*)nullptr);
                *reinterpret_cast<uint32_t*>(to + n * 8 + 2 * t) = pair;
                const T* both = reinterpret_cast<const T*>(&pair);
                largest = fmaxf(largest, fmaxf(fabsf(to_float(both[0])), fabsf(to_float(both[1]))));
            }
        }
    }
    record_amax(amax, largest);
}

#define ATTENTION(suffix, T, D)                                                                                   \
    extern "C" __global__ void __launch_bounds__(WARPS * 32, 3) attention_##suffix##_##D(                         \
        const T* q, T* out, float* amax, const T* k, const T* v, const float* sinks, uint32_t len, uint32_t heads,\
        uint32_t kv_heads, uint64_t k_batch, uint64_t k_head, uint64_t k_row, uint64_t v_batch, uint64_t v_head,  \
        uint64_t v_row, float scaling, int kind, uint32_t span, int has_sinks) {                                  \
        attention<T, D>(q, out, amax, k, v, sinks, len, heads, kv_heads, k_batch, k_head, k_row, v_batch, v_head, v_row, \
                        scaling, kind, span, has_sinks);                                                          \
    }

ATTENTION(bf16, __nv_bfloat16, 64)
ATTENTION(bf16, __nv_bfloat16, 128)
ATTENTION(f16, __half, 64)
ATTENTION(f16, __half, 128)
