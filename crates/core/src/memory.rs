//! Process memory: the large buffers allocated without aborting, and figures reported with results.

use crate::error::{Error, Result};

/// A buffer of `len` default values (zeros), or `E_OUT_OF_MEMORY` naming `what` when the allocator refuses
/// (memory exhausted, or the address-space limit of `ulimit -v` reached) instead of aborting the process.
/// For the large buffers: a checkpoint read, a quantized tensor.
pub fn try_zeroed<T: Copy + Default>(len: usize, what: impl FnOnce() -> String) -> Result<Vec<T>> {
    let mut buffer = Vec::new();
    if buffer.try_reserve_exact(len).is_err() {
        let bytes = (len as u64).saturating_mul(std::mem::size_of::<T>() as u64);
        return Err(Error::OutOfMemory { what: what(), bytes });
    }
    buffer.resize(len, T::default());
    Ok(buffer)
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if the platform tells.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
