//! Where the calibration forward's time goes, for benchmarks. Off unless `MOE_QUANT_PROFILE` is set (to anything
//! but `0`): then each [`section`] synchronises its device before and after it runs and adds the wall time to its
//! name's total, so that asynchronous GPU work is charged to the section that queued it. The synchronisations
//! slow the run down; a profiled run measures shares, not speed.
//!
//! Sections do not nest: the forward times its leaves (the token mixer, the router, the expert GEMMs, …), and what
//! no section covers is the difference between the forward's total and their sum.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use candle_core::Device;
use serde::Serialize;

use crate::error::Result;
use crate::threads::lock;

/// One section's total over the run.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileRow {
    pub section: &'static str,
    pub seconds: f64,
    pub calls: u64,
}

fn totals() -> &'static Mutex<BTreeMap<&'static str, (f64, u64)>> {
    static TOTALS: OnceLock<Mutex<BTreeMap<&'static str, (f64, u64)>>> = OnceLock::new();
    TOTALS.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// Whether this process profiles (read once).
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("MOE_QUANT_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0"))
}

/// Runs `work`, charging its time (device work included) to `name` when profiling.
pub fn section<T>(device: &Device, name: &'static str, work: impl FnOnce() -> Result<T>) -> Result<T> {
    if !enabled() {
        return work();
    }
    device.synchronize()?;
    let clock = Instant::now();
    let result = work()?;
    device.synchronize()?;
    let seconds = clock.elapsed().as_secs_f64();
    let mut totals = lock(totals());
    let entry = totals.entry(name).or_insert((0.0, 0));
    entry.0 += seconds;
    entry.1 += 1;
    Ok(result)
}

/// The totals so far, longest first (empty when not profiling).
pub fn report() -> Vec<ProfileRow> {
    let mut rows: Vec<ProfileRow> =
        lock(totals()).iter().map(|(&section, &(seconds, calls))| ProfileRow { section, seconds, calls }).collect();
    rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_add_up_by_name() {
        // Profiling is decided once per process from the environment; without it, sections only run their work.
        let device = Device::Cpu;
        let value = section(&device, "test section", || Ok(41 + 1)).unwrap();
        assert_eq!(value, 42);
        let failed: Result<()> = section(&device, "test section", || Err(crate::error::Error::internal("boom")));
        assert!(failed.is_err());
        let rows = report();
        if enabled() {
            let row = rows.iter().find(|r| r.section == "test section").unwrap();
            assert_eq!(row.calls, 1, "a failed section is not counted");
        } else {
            assert!(rows.is_empty());
        }
    }
}
