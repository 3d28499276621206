//! Zero-computation experts (LongCat-Flash): the router chooses among the `E` routed experts and `Z` zero experts
//! after them, and a zero expert passes its token through, scaled by its routing weight. As transformers runs it,
//! the slot of zero expert `E + j` still goes to routed expert `j·E / Z`, with weight 0 (spreading such slots over
//! the experts): that expert runs on the token, adding nothing to the output, and its statistics count the token,
//! as a calibration of the experts module sees it.
//! transformers: models/longcat_flash/modeling_longcat_flash.py `LongcatFlashMoE.forward`.

use super::router::Routing;

/// Moves every slot of `routing` that chose a zero expert (an index from `experts` on) to its routed expert with
/// weight 0, and returns each token's summed weight of the zero experts it chose, `[T]`.
pub fn divert(routing: &mut Routing, experts: usize, zero_experts: usize) -> Vec<f32> {
    let k = routing.top_k.max(1);
    let mut identity = vec![0f32; routing.experts.len() / k];
    let slots = routing.experts.iter_mut().zip(routing.weights.iter_mut()).enumerate();
    for (slot, (expert, weight)) in slots.filter(|(_, (expert, _))| **expert >= experts) {
        identity[slot / k] += *weight;
        *expert = (*expert - experts) * experts / zero_experts.max(1);
        *weight = 0.0;
    }
    identity
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_expert_slots_move_to_their_expert_with_no_weight_and_sum_per_token() {
        // 8 experts, 3 zero experts (8, 9, 10 go to experts 0, 2 and 5); two tokens of top-3.
        let mut routing =
            Routing { top_k: 3, experts: vec![9, 1, 10, 3, 8, 4], weights: vec![0.5, 0.25, 0.125, 1.0, 2.0, 4.0] };
        let identity = divert(&mut routing, 8, 3);
        assert_eq!(identity, vec![0.625, 2.0]);
        assert_eq!(routing.experts, vec![2, 1, 5, 3, 0, 4]);
        assert_eq!(routing.weights, vec![0.0, 0.25, 0.0, 1.0, 0.0, 4.0]);
    }
}
