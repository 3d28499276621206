//! Calibration: the token sequences the model runs on while observers collect activation statistics.

pub mod data;
pub mod observers;
pub mod run;
