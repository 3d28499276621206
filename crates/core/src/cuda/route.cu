// MoE routing on the GPU: each token's K experts and weights from its router logits, then the slots grouped by
// expert. Loaded by src/cuda/route.rs; the host path (model/blocks/router.rs, moe.rs) defines the choices: the
// K best by score, equal scores to the lower index, weights renormalised and scaled per router kind.

#include "common.cuh"

// Router kinds this kernel computes (route.rs maps the descriptor's kinds onto them).
#define KIND_SOFTMAX 0        // softmax over the logits, the K most probable
#define KIND_SIGMOID_GROUPS 1 // sigmoid; chosen by score + correction bias within the best groups (sum of best two)

#define MAX_EXPERTS 512
#define MAX_TOP_K 32
#define WARPS 4

// a ranks above b: larger, or equal and at a lower index.
__device__ __forceinline__ bool ranks_above(float a, uint32_t ia, float b, uint32_t ib) {
    return a > b || (a == b && ia < ib);
}

// The best untaken entry of values[0..n) across the warp (lane results combined by shuffles): its value and
// index, the same in every lane. n = 0 or all taken gives index n.
__device__ __forceinline__ void warp_best(const float* values, const uint8_t* taken, uint32_t n, float* best,
                                          uint32_t* at) {
    const uint32_t lane = threadIdx.x & 31;
    float value = -INFINITY;
    uint32_t index = n;
    for (uint32_t i = lane; i < n; i += 32) {
        if (!taken[i] && (index == n || ranks_above(values[i], i, value, index))) {
            value = values[i];
            index = i;
        }
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
        const float other = __shfl_xor_sync(0xffffffffu, value, offset);
        const uint32_t other_index = __shfl_xor_sync(0xffffffffu, index, offset);
        if (other_index != n && (index == n || ranks_above(other, other_index, value, index))) {
            value = other;
            index = other_index;
        }
    }
    *best = value;
    *at = index;
}

// logits [tokens, E] f32 → experts [tokens, K] u32 (each token's in ascending expert order) and weights [tokens, K]
// f32. One warp per token, WARPS per block.
extern "C" __global__ void route_topk(const float* logits, uint32_t* experts_out, float* weights_out,
                                      const float* bias, uint64_t tokens, uint32_t experts, uint32_t top_k, int kind,
                                      int normalise, float norm_eps, float scaling, uint32_t groups,
                                      uint32_t kept_groups, int has_bias) {
    __shared__ float score_of[WARPS][MAX_EXPERTS];
    __shared__ float choice_of[WARPS][MAX_EXPERTS];
    __shared__ uint8_t taken_of[WARPS][MAX_EXPERTS];
    __shared__ uint32_t picked_of[WARPS][MAX_TOP_K];
    const uint32_t warp = threadIdx.x >> 5;
    const uint32_t lane = threadIdx.x & 31;
    const uint64_t token = (uint64_t)blockIdx.x * WARPS + warp;
    if (token >= tokens) return;
    float* score = score_of[warp];
    float* choice = choice_of[warp];
    uint8_t* taken = taken_of[warp];
    uint32_t* picked = picked_of[warp];
    const float* row = logits + token * experts;

    if (kind == KIND_SOFTMAX) {
        float top = -INFINITY;
        for (uint32_t e = lane; e < experts; e += 32) top = fmaxf(top, row[e]);
        for (int offset = 16; offset > 0; offset >>= 1) top = fmaxf(top, __shfl_xor_sync(0xffffffffu, top, offset));
        float total = 0.0f;
        for (uint32_t e = lane; e < experts; e += 32) {
            const float x = expf(__fadd_rn(row[e], -top));
            score[e] = x;
            total = __fadd_rn(total, x);
        }
        for (int offset = 16; offset > 0; offset >>= 1) total = __fadd_rn(total, __shfl_xor_sync(0xffffffffu, total, offset));
        for (uint32_t e = lane; e < experts; e += 32) {
            score[e] = __fdiv_rn(score[e], total);
            choice[e] = score[e];
            taken[e] = 0;
        }
    } else {
        for (uint32_t e = lane; e < experts; e += 32) {
            score[e] = __fdiv_rn(1.0f, __fadd_rn(1.0f, expf(-row[e])));
            choice[e] = has_bias ? __fadd_rn(score[e], bias[e]) : score[e];
            taken[e] = 0;
        }
    }
    __syncwarp();

    if (kind == KIND_SIGMOID_GROUPS && groups > 1) {
        // Each group scored by the sum of its best two (one lane per group), then all but the kept_groups best
        // groups set to -inf. group_score reuses picked[] as scratch (groups ≤ 32).
        const uint32_t per_group = experts / groups;
        float group_score = -INFINITY;
        if (lane < groups) {
            const float* g = choice + lane * per_group;
            float first = -INFINITY, second = -INFINITY;
            uint32_t first_at = per_group, second_at = per_group;
            for (uint32_t i = 0; i < per_group; ++i) {
                if (first_at == per_group || ranks_above(g[i], i, first, first_at)) {
                    second = first;
                    second_at = first_at;
                    first = g[i];
                    first_at = i;
                } else if (second_at == per_group || ranks_above(g[i], i, second, second_at)) {
                    second = g[i];
                    second_at = i;
                }
            }
            group_score = per_group >= 2 ? __fadd_rn(first, second) : first;
        }
        // Rank of this lane's group among all groups: kept when fewer than kept_groups groups rank above it.
        uint32_t above = 0;
        for (uint32_t other = 0; other < groups; ++other) {
            const float s = __shfl_sync(0xffffffffu, group_score, other);
            if (other != lane && ranks_above(s, other, group_score, lane)) ++above;
        }
        const uint32_t dropped = (lane < groups && above >= kept_groups) ? 1u : 0u;
        for (uint32_t g = 0; g < groups; ++g) {
            if (__shfl_sync(0xffffffffu, dropped, g)) {
                for (uint32_t i = lane; i < per_group; i += 32) choice[g * per_group + i] = -INFINITY;
            }
        }
        __syncwarp();
    }

    // The K best by choice, best first.
    for (uint32_t j = 0; j < top_k; ++j) {
        float best;
        uint32_t at;
        warp_best(choice, taken, experts, &best, &at);
        if (lane == 0) {
            picked[j] = at < experts ? at : 0;
            if (at < experts) taken[at] = 1;
        }
        __syncwarp();
    }
    if (lane == 0) {
        float w[MAX_TOP_K];
        uint32_t e[MAX_TOP_K];
        float total = 0.0f;
        for (uint32_t j = 0; j < top_k; ++j) {
            e[j] = picked[j];
            w[j] = score[e[j]];
            total = __fadd_rn(total, w[j]);
        }
        if (normalise) {
            if (kind == KIND_SIGMOID_GROUPS) total = __fadd_rn(total, norm_eps);
            for (uint32_t j = 0; j < top_k; ++j) w[j] = __fdiv_rn(w[j], total);
        }
        if (kind == KIND_SIGMOID_GROUPS) {
            for (uint32_t j = 0; j < top_k; ++j) w[j] = __fmul_rn(w[j], scaling);
        }
        // Ascending expert order (insertion sort of K ≤ 32).
        for (uint32_t j = 1; j < top_k; ++j) {
            const uint32_t ej = e[j];
            const float wj = w[j];
            uint32_t i = j;
            for (; i > 0 && e[i - 1] > ej; --i) {
                e[i] = e[i - 1];
                w[i] = w[i - 1];
            }
            e[i] = ej;
            w[i] = wj;
        }
        for (uint32_t j = 0; j < top_k; ++j) {
            experts_out[token * top_k + j] = e[j];
            weights_out[token * top_k + j] = w[j];
        }
    }
}

// Slots per expert in each tile of `tile` tokens: counts [tiles, E]. One block per tile.
extern "C" __global__ void route_count(const uint32_t* chosen, uint32_t* counts, uint64_t tokens, uint32_t top_k,
                                       uint32_t experts, uint32_t tile) {
    __shared__ uint32_t histogram[MAX_EXPERTS];
    for (uint32_t e = threadIdx.x; e < experts; e += blockDim.x) histogram[e] = 0;
    __syncthreads();
    const uint64_t first = (uint64_t)blockIdx.x * tile * top_k;
    const uint64_t end = min((uint64_t)(blockIdx.x + 1) * tile, tokens) * top_k;
    for (uint64_t i = first + threadIdx.x; i < end; i += blockDim.x) atomicAdd(&histogram[chosen[i]], 1u);
    __syncthreads();
    for (uint32_t e = threadIdx.x; e < experts; e += blockDim.x) counts[(uint64_t)blockIdx.x * experts + e] = histogram[e];
}

// The slots in expert order, tokens ascending within an expert: offsets [tiles, E] is the first slot of expert e's
// entries from tile t. Writes each slot's token and weight, and rows [tokens, K]: the slot of each (token, j).
// One block per tile; thread e walks the tile's entries in token order for expert e.
#define SCATTER_TILE 256
extern "C" __global__ void route_scatter(const uint32_t* chosen, const float* weights, const uint32_t* offsets,
                                         uint32_t* slot_tokens, float* slot_weights, uint32_t* rows,
                                         uint64_t tokens, uint32_t top_k, uint32_t experts) {
    __shared__ uint32_t entries[SCATTER_TILE * 8];
    const uint64_t first_token = (uint64_t)blockIdx.x * SCATTER_TILE;
    const uint32_t count = (uint32_t)(min(first_token + SCATTER_TILE, tokens) - first_token) * top_k;
    const uint64_t first = first_token * top_k;
    // The tile's entries, in pieces of SCATTER_TILE · 8 (all at once for K ≤ 8).
    for (uint32_t base = 0; base < count; base += SCATTER_TILE * 8) {
        const uint32_t piece = min(count - base, (uint32_t)(SCATTER_TILE * 8));
        __syncthreads();
        for (uint32_t i = threadIdx.x; i < piece; i += blockDim.x) entries[i] = chosen[first + base + i];
        __syncthreads();
        for (uint32_t e = threadIdx.x; e < experts; e += blockDim.x) {
            uint32_t next = offsets[(uint64_t)blockIdx.x * experts + e];
            // Earlier pieces of this tile already placed some of expert e's entries.
            for (uint32_t i = 0; i < base; ++i) next += chosen[first + i] == e ? 1u : 0u;
            for (uint32_t i = 0; i < piece; ++i) {
                if (entries[i] != e) continue;
                const uint64_t entry = first + base + i;
                slot_tokens[next] = (uint32_t)(entry / top_k);
                slot_weights[next] = weights[entry];
                rows[entry] = next;
                ++next;
            }
        }
    }
}
