//! Spreading a layer's experts over the CPU's cores.

use crate::error::{Error, Result};
use crate::threads::background_priority;

/// The CPU's cores (what expert quantization spreads over).
pub(super) fn cores() -> usize {
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
