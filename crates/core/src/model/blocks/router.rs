//! Routers: from router logits `[T, E]` to the K experts of each token and their weights, per family
//! (SPEC §3). Routing runs on the host in f32; on a GPU, `cuda::route` computes the softmax routers and DeepSeek-V3's
//! sigmoid group router the same way (this module defines the choices; ties go to the lower index).

use crate::model::descriptor::{RouterDescriptor, RouterKind};

/// The K chosen experts and weights of every token, row-major `[T, K]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    pub top_k: usize,
    pub experts: Vec<usize>,
    pub weights: Vec<f32>,
}

/// Indices of the `k` largest values, largest first; ties go to the lower index (the order of a stable sort
/// by descending value under `f32::total_cmp`). One pass keeping the best `k` in order: k is a handful and
/// there are a few hundred values per token, so this beats sorting them all.
fn top_k_into(values: &[f32], k: usize, chosen: &mut Vec<usize>) {
    chosen.clear();
    let k = k.min(values.len());
    if k == 0 {
        return;
    }
    for (i, v) in values.iter().enumerate() {
        let better = |j: &usize| v.total_cmp(&values[*j]) == std::cmp::Ordering::Greater;
        if chosen.len() == k {
            if !better(&chosen[k - 1]) {
                continue;
            }
            chosen.pop();
        }
        // After every kept index that ranks at least as high (equal values keep the lower index first).
        let at = chosen.iter().position(better).unwrap_or(chosen.len());
        chosen.insert(at, i);
    }
}

fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut chosen = Vec::with_capacity(k);
    top_k_into(values, k, &mut chosen);
    chosen
}

/// Softmax of `values` into `out` (same length).
fn softmax_into(values: &[f32], out: &mut Vec<f32>) {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    out.clear();
    out.extend(values.iter().map(|v| (v - max).exp()));
    let sum: f32 = out.iter().sum();
    out.iter_mut().for_each(|e| *e /= sum);
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Tokens routed per thread at least: below this, spreading the rows over threads costs more than it saves.
const TOKENS_PER_THREAD: usize = 1024;

/// Routes every token. `logits` is `[T, E]` row-major; `correction_bias` is DeepSeek-V3's `[E]` bias. Rows are
/// independent, so a large batch is split over the CPU's cores (same result as one thread).
pub fn route(
    desc: &RouterDescriptor,
    logits: &[f32],
    experts: usize,
    k: usize,
    correction_bias: Option<&[f32]>,
) -> Routing {
    let tokens = logits.len() / experts.max(1);
    let mut routing = Routing { top_k: k, experts: vec![0; tokens * k], weights: vec![0.0; tokens * k] };
    if tokens == 0 || k == 0 {
        return routing;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(tokens / TOKENS_PER_THREAD).max(1);
    let per_thread = tokens.div_ceil(threads);
    if threads == 1 {
        route_rows(desc, logits, experts, k, correction_bias, &mut routing.experts, &mut routing.weights);
        return routing;
    }
    std::thread::scope(|scope| {
        let rows = logits.chunks(per_thread * experts);
        let chosen = routing.experts.chunks_mut(per_thread * k);
        let weights = routing.weights.chunks_mut(per_thread * k);
        for ((rows, chosen), weights) in rows.zip(chosen).zip(weights) {
            scope.spawn(move || route_rows(desc, rows, experts, k, correction_bias, chosen, weights));
        }
    });
    routing
}

/// Routes the rows of `logits` (`[rows, E]`) into `out_experts` and `out_weights` (`[rows, K]`).
fn route_rows(
    desc: &RouterDescriptor,
    logits: &[f32],
    experts: usize,
    k: usize,
    correction_bias: Option<&[f32]>,
    out_experts: &mut [usize],
    out_weights: &mut [f32],
) {
    let mut chosen = Vec::with_capacity(k);
    let mut scores = Vec::with_capacity(experts);
    let rows = logits.chunks_exact(experts).zip(out_experts.chunks_exact_mut(k)).zip(out_weights.chunks_exact_mut(k));
    for ((row, out_experts), weights) in rows {
        choose(desc, row, correction_bias, &mut scores, &mut chosen, weights);
        out_experts.copy_from_slice(&chosen);
        finish(desc, weights);
    }
}

/// The K experts of one row of logits (into `chosen`) and their weights before renormalisation and scaling;
/// `scores` is scratch space.
fn choose(
    desc: &RouterDescriptor,
    row: &[f32],
    correction_bias: Option<&[f32]>,
    scores: &mut Vec<f32>,
    chosen: &mut Vec<usize>,
    weights: &mut [f32],
) {
    let k = weights.len();
    let biased = |scores: &[f32]| -> Vec<f32> {
        scores.iter().enumerate().map(|(e, s)| s + correction_bias.map_or(0.0, |b| b[e])).collect()
    };
    match desc.kind {
        RouterKind::SoftmaxTopk | RouterKind::SoftmaxTopkNorm => {
            softmax_into(row, scores);
            pick(scores, scores, chosen, weights);
        }
        RouterKind::TopkSoftmax => {
            top_k_into(row, k, chosen);
            let picked: Vec<f32> = chosen.iter().map(|&e| row[e]).collect();
            softmax_into(&picked, scores);
            weights.copy_from_slice(scores);
        }
        RouterKind::TopkSigmoid => {
            top_k_into(row, k, chosen);
            for (w, &e) in weights.iter_mut().zip(chosen.iter()) {
                *w = sigmoid(row[e]);
            }
        }
        RouterKind::SoftmaxGroupTopk => {
            softmax_into(row, scores);
            let mut choice = scores.clone();
            // A group is scored by its best expert; the experts of the other groups score 0.
            keep_best_groups(&mut choice, desc, |g| g.iter().copied().fold(f32::NEG_INFINITY, f32::max), 0.0);
            pick(scores, &choice, chosen, weights);
        }
        RouterKind::SoftmaxBiasTopk | RouterKind::SoftmaxBiasTopkScaled => {
            softmax_into(row, scores);
            pick(scores, &biased(scores), chosen, weights);
        }
        RouterKind::Sparsemixer => sparsemixer(row, desc.jitter_eps as f32, chosen, weights),
        RouterKind::SigmoidGroupTopk => {
            scores.clear();
            scores.extend(row.iter().map(|&x| sigmoid(x)));
            let mut choice = biased(scores);
            // A group is scored by the sum of its best two.
            let best_two = |g: &[f32]| top_k(g, 2.min(g.len())).iter().map(|&i| g[i]).sum();
            keep_best_groups(&mut choice, desc, best_two, f32::NEG_INFINITY);
            pick(scores, &choice, chosen, weights);
        }
    }
}

/// The top `weights.len()` experts by `choice` into `chosen`, weighted by their `scores`.
fn pick(scores: &[f32], choice: &[f32], chosen: &mut Vec<usize>, weights: &mut [f32]) {
    top_k_into(choice, weights.len(), chosen);
    for (w, &e) in weights.iter_mut().zip(chosen.iter()) {
        *w = scores[e];
    }
}

/// Renormalises (where the kind does) and scales (routed scaling) one token's weights.
fn finish(desc: &RouterDescriptor, weights: &mut [f32]) {
    let normalise = match desc.kind {
        RouterKind::SoftmaxTopk | RouterKind::SigmoidGroupTopk => desc.norm_topk_prob,
        RouterKind::SoftmaxTopkNorm | RouterKind::SoftmaxBiasTopk => true,
        RouterKind::TopkSoftmax
        | RouterKind::TopkSigmoid
        | RouterKind::SoftmaxGroupTopk
        | RouterKind::SoftmaxBiasTopkScaled
        | RouterKind::Sparsemixer => false,
    };
    if normalise {
        let sum: f32 = weights.iter().sum::<f32>();
        let sum = match desc.kind {
            RouterKind::SigmoidGroupTopk => sum + desc.norm_eps.unwrap_or(1e-20) as f32,
            RouterKind::SoftmaxBiasTopk => sum.max(desc.norm_min as f32),
            _ => sum,
        };
        weights.iter_mut().for_each(|w| *w /= sum);
    }
    if matches!(
        desc.kind,
        RouterKind::SigmoidGroupTopk | RouterKind::SoftmaxGroupTopk | RouterKind::SoftmaxBiasTopkScaled
    ) {
        let scale = desc.routed_scaling_factor as f32;
        weights.iter_mut().for_each(|w| *w *= scale);
    }
}

/// PhiMoE's SparseMixer in evaluation, two rounds: the best expert left (the first of equal ones), weighted by
/// the softmax over the logits still in play that are within `2·eps` of its logit relative to
/// `max(|logit|, its logit)`; the first round's expert is out of the second.
fn sparsemixer(row: &[f32], eps: f32, chosen: &mut Vec<usize>, weights: &mut [f32]) {
    let mut in_play = row.to_vec();
    let mut gates = Vec::with_capacity(row.len());
    let mut probabilities = Vec::with_capacity(row.len());
    chosen.clear();
    for weight in weights.iter_mut().take(2) {
        let best = top_k(&in_play, 1)[0];
        let threshold = in_play[best];
        gates.clear();
        gates.extend(in_play.iter().zip(row).map(|(&value, &logit)| {
            let factor = logit.abs().max(threshold);
            if (threshold - logit) / factor > 2.0 * eps {
                f32::NEG_INFINITY
            } else {
                value
            }
        }));
        softmax_into(&gates, &mut probabilities);
        *weight = probabilities[best];
        chosen.push(best);
        in_play[best] = f32::NEG_INFINITY;
    }
}

/// Keeps the `topk_group` best of the router's `n_group` groups of experts (a group scored by `score`) and sets
/// the other experts' values to `fill`.
fn keep_best_groups(values: &mut [f32], desc: &RouterDescriptor, score: impl Fn(&[f32]) -> f32, fill: f32) {
    let groups = desc.n_group.max(1);
    if groups == 1 {
        return;
    }
    let per_group = values.len() / groups;
    let group_scores: Vec<f32> = values.chunks_exact(per_group).map(score).collect();
    let kept = top_k(&group_scores, desc.topk_group);
    for (g, chunk) in values.chunks_exact_mut(per_group).enumerate() {
        if !kept.contains(&g) {
            chunk.fill(fill);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(kind: RouterKind, norm: bool) -> RouterDescriptor {
        RouterDescriptor {
            kind,
            weight: String::new(),
            bias: None,
            correction_bias: None,
            norm_topk_prob: norm,
            n_group: 1,
            topk_group: 1,
            routed_scaling_factor: 1.0,
            norm_min: 0.0,
            norm_eps: None,
            jitter_eps: 0.0,
            input_scale: None,
            per_expert_scale: None,
        }
    }

    /// The k largest by a stable sort (the definition `top_k_into` must match).
    fn sorted_top_k(values: &[f32], k: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        order.truncate(k);
        order
    }

    #[test]
    fn top_k_matches_a_stable_sort_with_ties_and_nan() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for case in 0..2000 {
            let len = 1 + case % 70;
            let values: Vec<f32> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    match state % 11 {
                        0 => f32::NAN,
                        1 => f32::NEG_INFINITY,
                        2 => -0.0,
                        3 => 0.0,
                        // Few distinct values: many ties.
                        _ => ((state >> 20) % 5) as f32 - 2.0,
                    }
                })
                .collect();
            for k in [1, 2, 8, len] {
                assert_eq!(top_k(&values, k), sorted_top_k(&values, k), "{values:?}, k = {k}");
            }
        }
    }

    #[test]
    fn many_tokens_route_the_same_on_threads_as_row_by_row() {
        let experts = 16;
        let tokens = 3 * TOKENS_PER_THREAD + 5;
        let logits: Vec<f32> = (0..tokens * experts).map(|i| ((i * 7919) % 1013) as f32 / 97.0 - 5.0).collect();
        for kind in [RouterKind::SoftmaxTopk, RouterKind::TopkSoftmax, RouterKind::TopkSigmoid] {
            let d = desc(kind, true);
            let all = route(&d, &logits, experts, 4, None);
            assert_eq!(all.experts.len(), tokens * 4);
            for token in [0, TOKENS_PER_THREAD - 1, TOKENS_PER_THREAD, 2 * TOKENS_PER_THREAD + 1, tokens - 1] {
                let one = route(&d, &logits[token * experts..(token + 1) * experts], experts, 4, None);
                assert_eq!(one.experts, all.experts[token * 4..(token + 1) * 4], "{kind:?} token {token}");
                assert_eq!(one.weights, all.weights[token * 4..(token + 1) * 4], "{kind:?} token {token}");
            }
        }
    }

    #[test]
    fn softmax_top_k_with_and_without_renormalisation() {
        let logits = [0.0f32, 1.0, 2.0, 3.0];
        let plain = route(&desc(RouterKind::SoftmaxTopk, false), &logits, 4, 2, None);
        assert_eq!(plain.experts, vec![3, 2]);
        let z: f32 = logits.iter().map(|x| x.exp()).sum();
        assert!((plain.weights[0] - 3f32.exp() / z).abs() < 1e-6);
        let norm = route(&desc(RouterKind::SoftmaxTopk, true), &logits, 4, 2, None);
        assert!((norm.weights[0] + norm.weights[1] - 1.0).abs() < 1e-6);
        assert!((norm.weights[0] - 1.0 / (1.0 + (-1f32).exp())).abs() < 1e-6);
    }

    #[test]
    fn top_k_then_softmax_equals_renormalised_softmax() {
        let logits = [0.5f32, -1.0, 2.0, 1.5];
        let a = route(&desc(RouterKind::TopkSoftmax, false), &logits, 4, 2, None);
        let b = route(&desc(RouterKind::SoftmaxTopkNorm, false), &logits, 4, 2, None);
        assert_eq!(a.experts, b.experts);
        for (x, y) in a.weights.iter().zip(&b.weights) {
            assert!((x - y).abs() < 1e-6);
        }
    }

    #[test]
    fn grouped_sigmoid_routing_keeps_the_best_groups_and_scales() {
        // Two groups of two; group 1 is best by the sum of its top two; bias moves the choice, not the weight.
        let logits = [2.0f32, -3.0, 1.0, 1.0];
        let mut d = desc(RouterKind::SigmoidGroupTopk, true);
        d.n_group = 2;
        d.topk_group = 1;
        d.routed_scaling_factor = 2.5;
        let bias = [0.0f32, 0.0, 0.0, 0.5];
        let r = route(&d, &logits, 4, 2, Some(&bias));
        assert_eq!(r.experts, vec![3, 2]);
        assert!((r.weights[0] - 1.25).abs() < 1e-6 && (r.weights[1] - 1.25).abs() < 1e-6);
    }

    #[test]
    fn sigmoid_routing_renormalises_with_the_given_epsilon() {
        // LFM2: the chosen sigmoids over their sum + 1e-6, then scaled; one group.
        let logits = [0.0f32, 2.0, -1.0, 1.0];
        let mut d = desc(RouterKind::SigmoidGroupTopk, true);
        d.norm_eps = Some(1e-6);
        d.routed_scaling_factor = 2.0;
        let r = route(&d, &logits, 4, 2, None);
        assert_eq!(r.experts, vec![1, 3]);
        let (a, b) = (1.0 / (1.0 + (-2f32).exp()), 1.0 / (1.0 + (-1f32).exp()));
        let sum = a + b + 1e-6;
        assert_eq!(r.weights, vec![a / sum * 2.0, b / sum * 2.0]);
        assert!(r.weights[0] + r.weights[1] < 2.0);
    }

    #[test]
    fn softmax_group_routing_scores_groups_by_their_best_and_does_not_renormalise() {
        // softmax([3, 0, 2, 2, 0, 0]) over two groups of three: group 0 (best 0.53) wins over group 1 (0.19).
        let logits = [3.0f32, 0.0, 2.0, 2.0, 0.0, 0.0];
        let total: f32 = logits.iter().map(|x| x.exp()).sum();
        let mut d = desc(RouterKind::SoftmaxGroupTopk, false);
        d.n_group = 2;
        d.topk_group = 1;
        d.routed_scaling_factor = 16.0;
        let r = route(&d, &logits, 6, 2, None);
        assert_eq!(r.experts, vec![0, 2]);
        assert!((r.weights[0] - 16.0 * 3f32.exp() / total).abs() < 1e-5);
        assert!((r.weights[1] - 16.0 * 2f32.exp() / total).abs() < 1e-5);
        // One group: plain softmax top-K, scaled.
        d.n_group = 1;
        let r = route(&d, &logits, 6, 3, None);
        assert_eq!(r.experts, vec![0, 2, 3]);
    }

    #[test]
    fn softmax_bias_routing_chooses_with_the_bias_and_renormalises_with_a_floor() {
        let logits = [1.0f32, 0.0, 0.5, -1.0];
        let total: f32 = logits.iter().map(|x| x.exp()).sum();
        let p: Vec<f32> = logits.iter().map(|x| x.exp() / total).collect();
        let mut d = desc(RouterKind::SoftmaxBiasTopk, false);
        d.norm_min = 1e-12;
        let bias = [0.0f32, 0.9, 0.0, 0.0];
        let r = route(&d, &logits, 4, 2, Some(&bias));
        assert_eq!(r.experts, vec![1, 0]);
        assert!((r.weights[0] - p[1] / (p[0] + p[1])).abs() < 1e-6);
        assert!((r.weights[1] - p[0] / (p[0] + p[1])).abs() < 1e-6);
        // A floor above the sum divides by the floor.
        d.norm_min = 10.0;
        let r = route(&d, &logits, 4, 2, Some(&bias));
        assert!((r.weights[0] - p[1] / 10.0).abs() < 1e-6);
    }

    #[test]
    fn scaled_softmax_bias_routing_chooses_with_the_bias_and_scales_without_renormalising() {
        // LongCat-Flash: the bias moves expert 1 into the top two; the weights are its softmax scores, times 6.
        let logits = [1.0f32, 0.0, 0.5, -1.0];
        let total: f32 = logits.iter().map(|x| x.exp()).sum();
        let p: Vec<f32> = logits.iter().map(|x| x.exp() / total).collect();
        let mut d = desc(RouterKind::SoftmaxBiasTopkScaled, true);
        d.routed_scaling_factor = 6.0;
        let r = route(&d, &logits, 4, 2, Some(&[0.0, 0.9, 0.0, 0.0]));
        assert_eq!(r.experts, vec![1, 0]);
        assert!((r.weights[0] - p[1] * 6.0).abs() < 1e-5 && (r.weights[1] - p[0] * 6.0).abs() < 1e-5);
        assert!(r.weights[0] + r.weights[1] < 6.0);
    }

    #[test]
    fn sparsemixer_weights_each_choice_by_the_logits_close_to_it() {
        // eps 0.01: round one keeps the logits within 2% of 5.0 (5.0, 4.95; 4.8 is 4% off); round two, expert 0
        // out, those within 2% of 4.95 (4.95 alone). transformers' sparsemixer gives [0.5125, 1.0].
        let mut d = desc(RouterKind::Sparsemixer, false);
        d.jitter_eps = 0.01;
        let r = route(&d, &[5.0f32, 4.95, 1.0, 4.8], 4, 2, None);
        assert_eq!(r.experts, vec![0, 1]);
        let first = 1.0 / (1.0 + (4.95f32 - 5.0).exp());
        assert!((r.weights[0] - first).abs() < 1e-6, "{} vs {first}", r.weights[0]);
        assert_eq!(r.weights[1], 1.0);
        // Round two measures against max(|logit|, 2.99) with expert 1 out: 2.97 stays (0.7% off), 1.0 does not.
        let r = route(&d, &[1.0f32, 3.0, 2.99, -4.0, 2.97], 5, 2, None);
        assert_eq!(r.experts, vec![1, 2]);
        let second = 1.0 / (1.0 + (2.97f32 - 2.99).exp());
        assert!((r.weights[1] - second).abs() < 1e-6, "{} vs {second}", r.weights[1]);
    }
}
