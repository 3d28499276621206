//! Model blocks: small structs built from the descriptor and the checkpoint, each with a `forward`.

pub mod activation;
pub mod attend;
pub mod attention;
pub mod causal_conv;
pub mod delta_rule;
pub mod deltanet;
mod dispatch;
mod host;
pub mod indexer;
pub mod kda;
pub mod key_selection;
pub mod lightning;
pub mod linear;
pub mod mamba;
pub mod mamba2;
pub mod mla;
pub mod mlp;
pub mod moe;
pub mod norm;
pub mod ops;
pub mod rope;
pub mod router;
pub mod router_input;
pub mod selective_scan;
pub mod short_conv;
pub mod ssd;
pub mod zero_experts;
