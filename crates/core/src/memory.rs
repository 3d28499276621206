//! Process memory: the large buffers allocated without aborting, and figures reported with results.

use crate::error::{Error, Result};

/// A buffer of `len` zero bytes, or `E_OUT_OF_MEMORY` naming `what` when the allocator refuses (memory exhausted,
/// or the address-space limit of `ulimit -v` reached) instead of aborting the process. For the large buffers: a
/// checkpoint read, a quantized tensor.
///
/// The zeros come from the allocator, not from a pass over the buffer: a large buffer is fresh pages that the
/// kernel zeroes as each is first written. A pass writing zeros faulted every page in on the thread that
/// allocated, before the read that fills the buffer could start; a checkpoint read of a layer bigger than any
/// before it (a DeepSeek-V3 MoE layer, 23 GB) then ran at half the disk's pace. Now the pages fault in inside
/// the read, on the threads that read.
pub fn try_zeroed(len: usize, what: impl FnOnce() -> String) -> Result<Vec<u8>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let refused = || Error::OutOfMemory { what: what(), bytes: len as u64 };
    let Ok(layout) = std::alloc::Layout::array::<u8>(len) else { return Err(refused()) };
    // SAFETY: the layout's size is not zero.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        return Err(refused());
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of `len` bytes of alignment 1, which is what a
    // `Vec<u8>` of capacity `len` deallocates with, and its `len` bytes are initialised (zeros).
    Ok(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if the platform tells.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_zeros_and_a_refused_one_names_what_it_was_for() {
        for len in [0, 1, 4095, 3 << 20, 70 << 20] {
            let buffer = try_zeroed(len, || "a read".into()).unwrap();
            assert_eq!(buffer.len(), len);
            assert!(buffer.iter().all(|&b| b == 0), "{len} bytes");
        }
        for len in [isize::MAX as usize, usize::MAX] {
            match try_zeroed(len, || "the codes of w".into()) {
                Err(Error::OutOfMemory { what, bytes }) => {
                    assert_eq!((what.as_str(), bytes), ("the codes of w", len as u64))
                }
                other => panic!("{len} bytes: {:?}", other.map(|b| b.len())),
            }
        }
    }
}
