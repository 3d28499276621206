//! The calibration forward: model blocks assembled from the descriptor TS sends, run layer by layer over
//! the calibration batch with observers recording activation maxima.

pub mod blocks;
pub mod decoder;
pub mod descriptor;
pub mod layers;
pub mod loader;
pub mod observe;
pub mod profile;
pub(crate) mod stage;

pub use descriptor::ModelDescriptor;
pub use layers::{run_forward, ForwardOptions, ForwardResult};
