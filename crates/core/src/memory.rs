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

/// An empty buffer with room for `len` bytes whose pages are already faulted in, for a copy about to write all of
/// them: one call (Linux `MADV_POPULATE_WRITE`) instead of a page fault for every 4 KiB as the copy first writes
/// each. While the read-ahead's threads fault in their own buffers, faults contend; on a 2-core machine, filling
/// 772 new buffers of 96 and 768 KiB (a layer's quantized codes coming back from a GPU, 0.34 GB) took 287–298 ms
/// beside one such thread and 109–115 ms populated first. Where the call is not available the pages fault in as
/// before.
pub fn with_pages(len: usize) -> Vec<u8> {
    let buffer = Vec::with_capacity(len);
    populate(buffer.as_ptr(), len);
    buffer
}

#[cfg(target_os = "linux")]
fn populate(start: *const u8, len: usize) {
    // SAFETY: sysconf has no preconditions.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0);
    if page == 0 || len == 0 {
        return;
    }
    // The whole pages inside the buffer (madvise takes a page-aligned start).
    let first = (start as usize).div_ceil(page) * page;
    let end = (start as usize + len) / page * page;
    if end > first {
        // SAFETY: the range lies inside the buffer's own allocation, and populating pages changes no contents; a
        // failure (an older kernel) only leaves the pages to fault in later.
        unsafe { libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_POPULATE_WRITE) };
    }
}

#[cfg(not(target_os = "linux"))]
fn populate(_start: *const u8, _len: usize) {}

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
    fn a_buffer_with_pages_has_the_room_asked_for_and_is_empty() {
        for len in [0, 1, 4095, 4096, 3 << 20, (3 << 20) + 17] {
            let mut buffer = with_pages(len);
            assert!(buffer.capacity() >= len && buffer.is_empty(), "{len} bytes");
            buffer.extend(std::iter::repeat_n(7u8, len));
            assert!(buffer.iter().all(|&b| b == 7), "{len} bytes");
        }
    }

    /// The pages of a fresh 8 MiB buffer (mapped anew by the allocator, not yet touched) are resident as it is
    /// returned, which they would not be without the populate call.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_buffer_with_pages_is_resident_before_it_is_written() {
        let len = 8 << 20;
        let buffer = with_pages(len);
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
        let first = (buffer.as_ptr() as usize).div_ceil(page) * page;
        let pages = ((buffer.as_ptr() as usize + len) / page * page - first) / page;
        let mut resident = vec![0u8; pages];
        // SAFETY: the range is inside the buffer's allocation and `resident` has one byte per page.
        let status = unsafe { libc::mincore(first as *mut libc::c_void, pages * page, resident.as_mut_ptr()) };
        assert_eq!(status, 0);
        assert!(
            resident.iter().all(|&r| r & 1 == 1),
            "{} of {pages} pages resident",
            resident.iter().filter(|&&r| r & 1 == 1).count()
        );
    }

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
