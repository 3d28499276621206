//! Calibration: the token sequences the model runs on while observers collect activation statistics.

pub mod chat;
pub mod data;
pub mod documents;
