//! How several devices share out the experts of a block quantized while resident: whole stacks dealt out in turn
//! ([`device_chunks`]), then put back together in expert order ([`assemble`]), so that the bytes, and the order in
//! which the error sums are added, are one device's.

use std::ops::Range;

use super::{QuantizedExpert, ResidentExperts};
use crate::error::{Error, Result};
use crate::export::quantizer::ErrorSum;
use crate::formats::QuantizedWeight;

/// Experts `first..` of a block quantized as stacks: each expert's gate/up pieces and down, and the stacks'
/// (error, norm) sums in order, gate/up's then down's.
pub(super) struct QuantizedChunk {
    pub first: usize,
    pub gate_ups: Vec<Vec<QuantizedWeight>>,
    pub downs: Vec<Vec<QuantizedWeight>>,
    pub sums: Vec<f32>,
}

/// The stacks `experts` experts are quantized in, and which device takes which: stacks of at most `limit`
/// experts (at least one), and with several devices at most an equal share each, so that every device gets work;
/// dealt out in turn (stack `i` to device `i % devices`).
pub(super) fn device_chunks(experts: usize, limit: usize, devices: usize) -> Vec<Vec<Range<usize>>> {
    let devices = devices.max(1);
    let size = limit.clamp(1, experts.div_ceil(devices).max(1));
    let mut shares = vec![Vec::new(); devices];
    for (i, first) in (0..experts).step_by(size).enumerate() {
        shares[i % devices].push(first..(first + size).min(experts));
    }
    shares
}

/// The `count` experts of a block from its quantized stacks, in any order: put together in expert order, their
/// error sums added in that order (as one device adds them); `None` when a sum is not finite.
pub(super) fn assemble(
    block: &str,
    mut chunks: Vec<QuantizedChunk>,
    count: usize,
    gated: bool,
) -> Result<Option<ResidentExperts>> {
    chunks.sort_by_key(|chunk| chunk.first);
    let mut errors = ErrorSum::default();
    let mut experts = Vec::new();
    for chunk in chunks {
        if chunk.first != experts.len() {
            return Err(Error::internal(format!("{block}: experts from {} missing", experts.len())));
        }
        for pair in chunk.sums.chunks_exact(2) {
            // A weight that is not finite (or squares past f32): the CPU path names it or sums in f64.
            if !pair.iter().all(|x| x.is_finite()) {
                return Ok(None);
            }
            errors.error += f64::from(pair[0]);
            errors.norm += f64::from(pair[1]);
        }
        for (mut gate_up, down) in chunk.gate_ups.into_iter().zip(chunk.downs) {
            let (Some(up), Some(down)) = (gate_up.pop(), down.into_iter().next()) else {
                return Err(Error::internal(format!("{block}: an expert came back without its tensors")));
            };
            experts.push(QuantizedExpert { gate: gate_up.pop(), up, down });
        }
    }
    if experts.len() != count {
        return Err(Error::internal(format!("{block}: {} of {count} experts came back", experts.len())));
    }
    errors.tensors = count * if gated { 3 } else { 2 };
    Ok(Some(ResidentExperts { experts, errors }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Dtype;
    use crate::formats::OutputTensor;

    #[test]
    fn experts_are_dealt_out_in_whole_stacks_every_device_getting_work() {
        let ranges = |shares: Vec<Vec<Range<usize>>>| {
            shares
                .into_iter()
                .map(|share| share.into_iter().map(|r| (r.start, r.end)).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        };
        // One device: the stacks the memory limit allows, as before there were several.
        assert_eq!(ranges(device_chunks(10, 4, 1)), vec![vec![(0, 4), (4, 8), (8, 10)]]);
        assert_eq!(ranges(device_chunks(10, 64, 1)), vec![vec![(0, 10)]]);
        // Several: stacks of at most an equal share, dealt out in turn.
        assert_eq!(ranges(device_chunks(8, 64, 2)), vec![vec![(0, 4)], vec![(4, 8)]]);
        assert_eq!(ranges(device_chunks(8, 64, 3)), vec![vec![(0, 3)], vec![(3, 6)], vec![(6, 8)]]);
        assert_eq!(ranges(device_chunks(128, 10, 8)), {
            let mut shares = vec![Vec::new(); 8];
            for (i, first) in (0..128).step_by(10).enumerate() {
                shares[i % 8].push((first, (first + 10).min(128)));
            }
            shares
        });
        // More devices than experts: one each, the rest idle; a zero limit still makes progress.
        assert_eq!(ranges(device_chunks(2, 64, 3)), vec![vec![(0, 1)], vec![(1, 2)], vec![]]);
        assert_eq!(ranges(device_chunks(3, 0, 1)), vec![vec![(0, 1), (1, 2), (2, 3)]]);
        // Every expert exactly once.
        for (experts, limit, devices) in [(128, 10, 8), (60, 7, 3), (1, 5, 4), (256, 1, 8)] {
            let mut all: Vec<usize> = device_chunks(experts, limit, devices).into_iter().flatten().flatten().collect();
            all.sort_unstable();
            assert_eq!(all, (0..experts).collect::<Vec<_>>());
        }
    }

    #[test]
    fn stacks_from_several_devices_assemble_in_expert_order_with_their_sums_added_in_that_order() {
        // Expert e's tensors carry e and which piece they are in their bytes.
        let weight = |e: usize, piece: u8| QuantizedWeight {
            tensors: vec![OutputTensor {
                suffix: "weight",
                dtype: Dtype::U8,
                shape: vec![1],
                data: vec![e as u8, piece],
            }],
        };
        let chunk = |experts: Range<usize>, sums: [f32; 4]| QuantizedChunk {
            first: experts.start,
            gate_ups: experts.clone().map(|e| vec![weight(e, 0), weight(e, 1)]).collect(),
            downs: experts.map(|e| vec![weight(e, 2)]).collect(),
            sums: sums.to_vec(),
        };
        // Dealt out of order; the error sums are such that f64 addition gives another total in another order.
        let stacks = || {
            vec![
                chunk(5..6, [1e16, 7.0, 0.0, 1.0]),
                chunk(3..5, [1.0, 3.0, 0.0, 5.0]),
                chunk(0..3, [1.0, 1.0, 0.0, 3.0]),
            ]
        };
        let done = assemble("b", stacks(), 6, true).unwrap().unwrap();
        let order: Vec<(u8, u8, u8)> = done
            .experts
            .iter()
            .map(|x| (x.gate.as_ref().unwrap().tensors[0].data[0], x.up.tensors[0].data[0], x.down.tensors[0].data[0]))
            .collect();
        assert_eq!(order, (0..6u8).map(|e| (e, e, e)).collect::<Vec<_>>());
        let pieces: Vec<u8> = done
            .experts
            .iter()
            .flat_map(|x| [x.gate.as_ref().unwrap(), &x.up, &x.down])
            .map(|w| w.tensors[0].data[1])
            .collect();
        assert_eq!(pieces, [0, 1, 2].repeat(6));
        assert_eq!(done.errors.tensors, 18);
        let total = |errors: &[f32]| errors.iter().fold(0.0f64, |sum, &e| sum + f64::from(e));
        let big = f64::from(1e16f32);
        assert_eq!(done.errors.error, big + 2.0);
        assert_ne!(total(&[1e16, 1.0, 1.0]), big + 2.0);
        assert_eq!(done.errors.norm, 1.0 + 3.0 + 3.0 + 5.0 + 7.0 + 1.0);
        // A sum that is not finite sends the block to the CPU; a missing stack is an error.
        let mut bad = stacks();
        bad[2].sums[1] = f32::INFINITY;
        assert!(assemble("b", bad, 6, true).unwrap().is_none());
        for missing in 0..3 {
            let mut gap = stacks();
            gap.remove(missing);
            assert!(assemble("b", gap, 6, true).is_err());
        }
    }
}
