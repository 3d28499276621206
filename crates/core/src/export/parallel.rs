//! Spreading a layer's experts over the CPU's cores.

use super::quantizer::{ErrorSum, QuantizedLinear, Sink};
use crate::error::{Error, Result};
use crate::threads::background_priority;

/// Quantizes `experts` experts with `quantize` (expert `e`'s linears, its errors added to the sums it is given), a
/// few experts per core at a time, each group's linears to `sink` in expert order as soon as the group is done: what
/// waits for the writer is a group of experts, not the layer.
pub(super) fn quantize_experts_in_groups(
    experts: usize,
    errors: &mut ErrorSum,
    sink: &mut Sink<'_>,
    quantize: impl Fn(usize, &mut ErrorSum) -> Result<Vec<QuantizedLinear>> + Sync,
) -> Result<()> {
    let group = 4 * cores();
    for first in (0..experts).step_by(group) {
        let done = for_experts(first..(first + group).min(experts), |e| {
            let mut sums = ErrorSum::default();
            Ok((quantize(e, &mut sums)?, sums))
        })?;
        for (expert, sums) in done {
            errors.add(&sums);
            for linear in expert {
                sink(linear)?;
            }
        }
    }
    Ok(())
}

/// The CPU's cores (what expert quantization spreads over).
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `f` for the experts of `experts`, spread over the CPU's cores at background priority; results in expert order.
pub(super) fn for_experts<T: Send>(
    experts: std::ops::Range<usize>,
    f: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let count = experts.len();
    let threads = cores().min(count.max(1));
    let chunk = count.div_ceil(threads).max(1);
    let f = &f;
    let end = experts.end;
    let results: Vec<Result<Vec<T>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = experts
            .step_by(chunk)
            .map(|first| {
                scope.spawn(move || {
                    background_priority();
                    (first..(first + chunk).min(end)).map(f).collect::<Result<Vec<T>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(Error::internal("an expert quantization thread panicked"))))
            .collect()
    });
    let mut out = Vec::with_capacity(count);
    for result in results {
        out.extend(result?);
    }
    Ok(out)
}
