//! Maxima that a fused kernel computed while it wrote a tensor (`max |x|` of its output), kept so that an observer
//! asking for that tensor's maximum reads the value instead of making another pass over the activations
//! ([`crate::model::blocks::ops::abs_max_on_device`] looks here first). Keyed by candle's tensor id, which a
//! process never reuses; the forward never writes into a tensor after it is made, so a recorded maximum stays
//! true. Per thread (a run's forward is one thread), and only the last few: a tensor is observed soon after it is
//! made.

use std::cell::RefCell;
use std::collections::VecDeque;

use candle_core::{Tensor, TensorId};

/// How many recent maxima are kept.
const KEEP: usize = 16;

thread_local! {
    static KNOWN: RefCell<VecDeque<(TensorId, Tensor)>> = const { RefCell::new(VecDeque::new()) };
}

/// Records `amax` (a 0-d f32 tensor on `xs`'s device) as max |x| over `xs`.
pub fn offer(xs: &Tensor, amax: Tensor) {
    KNOWN.with(|known| {
        let mut known = known.borrow_mut();
        if known.len() == KEEP {
            known.pop_front();
        }
        known.push_back((xs.id(), amax));
    });
}

/// The maximum recorded for `xs`, if any.
pub fn known(xs: &Tensor) -> Option<Tensor> {
    let id = xs.id();
    KNOWN.with(|known| known.borrow().iter().rev().find(|(of, _)| *of == id).map(|(_, amax)| amax.clone()))
}

/// Records for `view` the maximum recorded for `of` (a reshape or transposition of it: the same values).
pub fn carry(of: &Tensor, view: &Tensor) {
    if let Some(amax) = known(of) {
        offer(view, amax);
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    #[test]
    fn maxima_are_found_by_tensor_and_carried_to_views() {
        let xs = Tensor::new(&[[1f32, -3.0], [2.0, 0.5]], &Device::Cpu).unwrap();
        assert!(known(&xs).is_none());
        offer(&xs, Tensor::new(3f32, &Device::Cpu).unwrap());
        assert_eq!(known(&xs.clone()).unwrap().to_scalar::<f32>().unwrap(), 3.0);
        // A view is another tensor: it has a maximum only when carried over.
        let flat = xs.flatten_all().unwrap();
        assert!(known(&flat).is_none());
        carry(&xs, &flat);
        assert_eq!(known(&flat).unwrap().to_scalar::<f32>().unwrap(), 3.0);
        // Only the last few are kept.
        for _ in 0..KEEP {
            let other = Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu).unwrap();
            offer(&other, Tensor::new(0f32, &Device::Cpu).unwrap());
        }
        assert!(known(&xs).is_none());
    }
}
