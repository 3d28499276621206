//! Routers: from router logits `[T, E]` to the K experts of each token and their weights, per family
//! (SPEC §3). Routing runs on the host in f32; T·E values are small next to the expert matmuls.

use crate::model::descriptor::{RouterDescriptor, RouterKind};

/// The K chosen experts and weights of every token, row-major `[T, K]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Routing {
    pub top_k: usize,
    pub experts: Vec<usize>,
    pub weights: Vec<f32>,
}

/// Indices of the `k` largest values, largest first; ties go to the lower index.
fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

fn softmax(values: &[f32]) -> Vec<f32> {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = values.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Routes every token. `logits` is `[T, E]` row-major; `correction_bias` is DeepSeek-V3's `[E]` bias.
pub fn route(
    desc: &RouterDescriptor,
    logits: &[f32],
    experts: usize,
    k: usize,
    correction_bias: Option<&[f32]>,
) -> Routing {
    let tokens = logits.len() / experts;
    let mut routing =
        Routing { top_k: k, experts: Vec::with_capacity(tokens * k), weights: Vec::with_capacity(tokens * k) };
    for row in logits.chunks_exact(experts) {
        let (chosen, mut weights): (Vec<usize>, Vec<f32>) = match desc.kind {
            RouterKind::SoftmaxTopk | RouterKind::SoftmaxTopkNorm => {
                let probs = softmax(row);
                let chosen = top_k(&probs, k);
                let weights = chosen.iter().map(|&e| probs[e]).collect();
                (chosen, weights)
            }
            RouterKind::TopkSoftmax => {
                let chosen = top_k(row, k);
                let weights = softmax(&chosen.iter().map(|&e| row[e]).collect::<Vec<_>>());
                (chosen, weights)
            }
            RouterKind::TopkSigmoid => {
                let chosen = top_k(row, k);
                let weights = chosen.iter().map(|&e| sigmoid(row[e])).collect();
                (chosen, weights)
            }
            RouterKind::SigmoidGroupTopk => {
                let scores: Vec<f32> = row.iter().map(|&x| sigmoid(x)).collect();
                let mut choice: Vec<f32> =
                    scores.iter().enumerate().map(|(e, s)| s + correction_bias.map_or(0.0, |b| b[e])).collect();
                let groups = desc.n_group.max(1);
                let per_group = experts / groups;
                let group_scores: Vec<f32> = choice
                    .chunks_exact(per_group)
                    .map(|g| top_k(g, 2.min(per_group)).iter().map(|&i| g[i]).sum())
                    .collect();
                let kept = top_k(&group_scores, desc.topk_group);
                for (g, chunk) in choice.chunks_exact_mut(per_group).enumerate() {
                    if !kept.contains(&g) {
                        chunk.fill(f32::NEG_INFINITY);
                    }
                }
                let chosen = top_k(&choice, k);
                let weights = chosen.iter().map(|&e| scores[e]).collect();
                (chosen, weights)
            }
        };
        let normalise = match desc.kind {
            RouterKind::SoftmaxTopk | RouterKind::SigmoidGroupTopk => desc.norm_topk_prob,
            RouterKind::SoftmaxTopkNorm => true,
            RouterKind::TopkSoftmax | RouterKind::TopkSigmoid => false,
        };
        if normalise {
            let epsilon = if desc.kind == RouterKind::SigmoidGroupTopk { 1e-20 } else { 0.0 };
            let sum: f32 = weights.iter().sum::<f32>() + epsilon;
            weights.iter_mut().for_each(|w| *w /= sum);
        }
        if desc.kind == RouterKind::SigmoidGroupTopk {
            let scale = desc.routed_scaling_factor as f32;
            weights.iter_mut().for_each(|w| *w *= scale);
        }
        routing.experts.extend(chosen);
        routing.weights.extend(weights);
    }
    routing
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
}
