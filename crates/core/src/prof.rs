//! TEMPORARY profiling (not committed).
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

static TIMES: Mutex<BTreeMap<&'static str, (f64, u64)>> = Mutex::new(BTreeMap::new());
thread_local! { static LAST: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) }; }

pub fn enabled() -> bool {
    std::env::var_os("MOE_QUANT_PROFILE").is_some()
}

/// Closes the section `name` (since the previous mark), after the device finished its work.
pub fn mark(name: &'static str, device: &candle_core::Device) {
    if !enabled() {
        return;
    }
    let _ = device.synchronize();
    let now = Instant::now();
    LAST.with(|last| {
        if let Some(prev) = last.get() {
            let mut t = TIMES.lock().unwrap();
            let e = t.entry(name).or_insert((0.0, 0));
            e.0 += (now - prev).as_secs_f64();
            e.1 += 1;
        }
        last.set(Some(now));
    });
}

pub fn report() -> String {
    let t = TIMES.lock().unwrap();
    let total: f64 = t.values().map(|v| v.0).sum();
    let mut s = format!("profile total {total:.3} s\n");
    for (k, (v, n)) in t.iter() {
        s += &format!("{k:>24} {v:8.3} s {n:6}\n");
    }
    s
}
