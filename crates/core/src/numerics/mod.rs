//! The floor every other module stands on: bit-exact scalar codecs (E4M3, E2M1, MXFP4's E8M0 scaling), the
//! element types of checkpoints, and the reductions over f32 values (amax, first non-finite) the formats and checks
//! share.

pub mod dtype;
pub mod e2m1;
pub mod e4m3;
pub mod mxfp4;
pub mod reduce;

pub use dtype::Dtype;
pub use reduce::{first_non_finite, weight_amax};
