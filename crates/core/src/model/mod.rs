//! The calibration forward: model blocks assembled from the descriptor TS sends, run layer by layer over
//! the calibration batch with observers recording activation maxima.

pub mod blocks;
pub mod compare;
pub mod decoder;
pub mod descriptor;
pub mod stream;
pub mod weights;

pub use descriptor::ModelDescriptor;
pub use stream::{run_forward, ForwardOptions, ForwardResult};
