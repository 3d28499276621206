//! Bytes read from a checkpoint: shared, cheap-to-clone ranges of a buffer ([`SharedBytes`]), and the pool the
//! read-ahead's buffers go back to once their bytes are dropped ([`BufferPool`]).

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use super::source::MAX_REQUEST;

/// New buffers are rounded up to a power of two below this size (the read-ahead's largest request).
const MAX_POOLED_ROUNDING: usize = MAX_REQUEST as usize;

/// Bytes of one tensor (or one slice of it), owned and cheap to clone: a range of a shared buffer that may
/// hold several tensors read together.
#[derive(Debug, Clone)]
pub struct SharedBytes {
    buffer: Arc<Buffer>,
    range: Range<usize>,
}

impl SharedBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        let range = 0..bytes.len();
        SharedBytes { buffer: Arc::new(Buffer { bytes, pool: None }), range }
    }

    /// The first `len` bytes of `buffer`, which goes back to `pool` once the last share of it is dropped.
    pub(crate) fn pooled(buffer: Vec<u8>, len: usize, pool: &Arc<BufferPool>) -> Self {
        SharedBytes { buffer: Arc::new(Buffer { bytes: buffer, pool: Some(Arc::clone(pool)) }), range: 0..len }
    }

    /// The sub-range `range` (relative to these bytes), without copying.
    pub fn slice(&self, range: Range<usize>) -> Self {
        debug_assert!(range.end <= self.range.len());
        SharedBytes {
            buffer: Arc::clone(&self.buffer),
            range: self.range.start + range.start..self.range.start + range.end,
        }
    }
}

impl std::ops::Deref for SharedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buffer.bytes[self.range.clone()]
    }
}

/// Read buffers kept for the next reads. A new buffer is zeroed page by page as it is first written (a fault per
/// 4 KiB page: about 1.5 GB/s on a GPU host whose page cache delivers 6–7 GB/s into a buffer already mapped), which
/// made reading a layer slower than the disk itself. The read-ahead's buffers come back here when their bytes are
/// dropped, but only for reads still to come: the pool holds at most the bytes queued and not yet read, and one
/// request more. That is memory those reads would allocate anyway, so the peak stays what it was (on a GPU, this
/// layer's buffers serve the next layer's reads; on the CPU, which reads the next layer once this one is loaded,
/// nothing is pending while a layer loads, and its buffers are freed as before).
#[derive(Default)]
pub(crate) struct BufferPool {
    state: Mutex<PoolState>,
}

#[derive(Default)]
struct PoolState {
    free: Vec<Vec<u8>>,
    /// Bytes of the free buffers.
    held: usize,
    /// Bytes queued and not yet read.
    pending: usize,
}

impl PoolState {
    /// Frees buffers until those left fit the reads still to come.
    fn trim(&mut self) {
        while self.held > self.pending + MAX_POOLED_ROUNDING {
            let Some(buf) = self.free.pop() else { break };
            self.held -= buf.len();
        }
    }
}

impl BufferPool {
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads of `bytes` in all were queued.
    pub fn expect(&self, bytes: usize) {
        self.lock().pending += bytes;
    }

    /// The queued reads were dropped (a new read-ahead replaces them).
    pub fn forget(&self) {
        let mut state = self.lock();
        state.pending = 0;
        state.trim();
    }

    /// The size of a new buffer for a read of `len` bytes: a power of two up to [`MAX_POOLED_ROUNDING`], so that
    /// the buffer of one small read serves the next; a larger read gets its own size (the read-ahead's requests are
    /// mostly of exactly that maximum).
    pub fn size_for(len: usize) -> usize {
        if len >= MAX_POOLED_ROUNDING {
            len
        } else {
            len.next_power_of_two()
        }
    }

    /// A read of `len` bytes starts: the smallest free buffer that holds it, if any.
    pub fn take(&self, len: usize) -> Option<Vec<u8>> {
        let mut state = self.lock();
        state.pending = state.pending.saturating_sub(len);
        let found = state.free.iter().enumerate().filter(|(_, b)| b.len() >= len).min_by_key(|(_, b)| b.len());
        let buf = found.map(|(i, _)| i).map(|i| state.free.swap_remove(i));
        state.held -= buf.as_ref().map_or(0, Vec::len);
        state.trim();
        buf
    }

    /// Keeps `buf` for a read still to come, if there is room for it.
    pub fn give(&self, buf: Vec<u8>) {
        let mut state = self.lock();
        if state.held + buf.len() <= state.pending + MAX_POOLED_ROUNDING {
            state.held += buf.len();
            state.free.push(buf);
        }
    }
}

/// The bytes behind [`SharedBytes`], returned to their pool (if any) when the last share goes.
#[derive(Debug)]
struct Buffer {
    bytes: Vec<u8>,
    pool: Option<Arc<BufferPool>>,
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.give(std::mem::take(&mut self.bytes));
        }
    }
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        write!(f, "BufferPool {{ {} buffers, {} bytes, {} pending }}", state.free.len(), state.held, state.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    fn buffer(mib: usize) -> Vec<u8> {
        vec![0; mib * MIB]
    }

    #[test]
    fn the_pool_keeps_buffers_only_for_reads_still_to_come() {
        let pool = BufferPool::default();
        // Nothing queued: one request of slack, no more.
        pool.give(buffer(64));
        pool.give(buffer(1));
        assert_eq!(pool.lock().held, 64 * MIB);
        // 100 MiB queued: kept up to 164 MiB.
        pool.expect(100 * MIB);
        pool.give(buffer(64));
        pool.give(buffer(64));
        assert_eq!(pool.lock().held, 128 * MIB);
        // A read of 10 MiB starts: the smallest buffer that holds it (all are 64 MiB), 90 MiB still to come.
        assert_eq!(pool.take(10 * MIB).map(|b| b.len()), Some(64 * MIB));
        let state = pool.lock();
        assert_eq!((state.held, state.pending), (64 * MIB, 90 * MIB));
        drop(state);
        // None large enough: nothing handed out, but the read is counted.
        assert!(pool.take(80 * MIB).is_none());
        assert_eq!(pool.lock().pending, 10 * MIB);
        // The reads dropped: back to one request of slack.
        pool.give(buffer(8));
        pool.forget();
        assert_eq!(pool.lock().pending, 0);
        assert!(pool.lock().held <= 64 * MIB);
    }

    #[test]
    fn a_new_buffer_is_a_power_of_two_below_a_request_and_exact_above() {
        assert_eq!(BufferPool::size_for(3 * MIB + 1), 4 * MIB);
        assert_eq!(BufferPool::size_for(64 * MIB), 64 * MIB);
        assert_eq!(BufferPool::size_for(65 * MIB + 3), 65 * MIB + 3);
    }
}
