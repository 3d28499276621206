//! Reading tensor bytes out of the shard files with positioned reads (no memory map), and reading a whole
//! decoder layer ahead in the background while the current one computes.
//!
//! Positioned reads instead of a memory map: a file truncated by another process mid-run makes a mapped
//! reader die of SIGBUS, while a read returns a short count that becomes `E_INPUT_CHANGED`. Every read also
//! checks that the file still has the size and modification time it had when opened, so an input rewritten
//! during the run is reported instead of silently mixing two versions. And a layer read as a few large
//! requests over several threads is faster than the page faults of a cold map.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::SystemTime;

use super::bytes::BufferPool;
pub use super::bytes::SharedBytes;
use crate::error::{Error, IoContext, Result};

/// An open shard file and what it looked like when opened.
#[derive(Debug)]
pub(crate) struct ShardSource {
    pub path: PathBuf,
    file: File,
    size: u64,
    modified: Option<SystemTime>,
}

impl ShardSource {
    pub fn new(path: PathBuf, file: File) -> Result<Self> {
        let metadata = file.metadata().with_path(&path)?;
        Ok(ShardSource { size: metadata.len(), modified: metadata.modified().ok(), path, file })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    fn changed(&self, message: String) -> Error {
        Error::InputChanged { path: self.path.clone(), message }
    }

    /// Fails with `E_INPUT_CHANGED` when the file's size or modification time differ from when it was opened.
    pub fn check_unchanged(&self) -> Result<()> {
        let metadata = self.file.metadata().with_path(&self.path)?;
        if metadata.len() != self.size {
            return Err(self.changed(format!("its size went from {} to {} bytes", self.size, metadata.len())));
        }
        if metadata.modified().ok() != self.modified {
            return Err(self.changed("it was modified".into()));
        }
        Ok(())
    }

    /// Fills `buf` from byte `offset` on, then checks the file did not change meanwhile.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        read_exact_at(&self.file, offset, buf).map_err(|error| {
            if error.kind() == std::io::ErrorKind::UnexpectedEof {
                self.changed(format!(
                    "it ended before byte {} that its header promised (opened with {} bytes)",
                    offset + buf.len() as u64,
                    self.size
                ))
            } else {
                Error::Io { path: self.path.clone(), source: error }
            }
        })?;
        self.check_unchanged()
    }

    /// The length of a read of `range`, checked to fit memory.
    fn range_len(&self, range: &Range<u64>) -> Result<usize> {
        usize::try_from(range.end - range.start)
            .map_err(|_| Error::internal(format!("{}: a read of {range:?} does not fit memory", self.path.display())))
    }

    /// A zeroed buffer for a read of `len` bytes (`E_OUT_OF_MEMORY` when refused).
    fn buffer(&self, len: usize) -> Result<Vec<u8>> {
        crate::memory::try_zeroed(len, || format!("reading {} bytes of {}", len, self.path.display()))
    }

    /// Reads `range` into a new buffer, in pieces over a few threads when it is large.
    pub fn read_range(&self, range: Range<u64>) -> Result<Vec<u8>> {
        let mut buf = self.buffer(self.range_len(&range)?)?;
        self.read_into(range.start, &mut buf)?;
        Ok(buf)
    }

    /// Fills `buf` from byte `offset` on, in pieces over a few threads when it is large.
    fn read_into(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        const PIECE: usize = 16 << 20;
        const THREADS: usize = 4;
        let len = buf.len();
        if len <= PIECE {
            return self.read_at(offset, buf);
        }
        let share = len.div_ceil(THREADS).next_multiple_of(PIECE);
        std::thread::scope(|scope| {
            let handles: Vec<_> = buf
                .chunks_mut(share)
                .enumerate()
                .map(|(i, chunk)| {
                    let offset = offset + (i * share) as u64;
                    scope.spawn(move || self.read_at(offset, chunk))
                })
                .collect();
            handles.into_iter().try_for_each(|handle| {
                handle.join().unwrap_or_else(|_| Err(Error::internal("a checkpoint read thread panicked")))
            })
        })
    }

    /// Reads `range` into a buffer of `pool` (a new one when none is large enough), handed out as shared bytes
    /// that go back to the pool once dropped.
    fn read_pooled(&self, range: Range<u64>, pool: &Arc<BufferPool>) -> Result<SharedBytes> {
        let len = self.range_len(&range)?;
        let mut buf = match pool.take(len) {
            Some(buf) => buf,
            None => self.buffer(BufferPool::size_for(len))?,
        };
        self.read_into(range.start, &mut buf[..len])?;
        Ok(SharedBytes::pooled(buf, len, pool))
    }
}

/// Fills `buf` from byte `offset` of `file` (a short file is `UnexpectedEof`), without moving a file position.
#[cfg(unix)]
pub(super) fn read_exact_at(file: &File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
pub(super) fn read_exact_at(file: &File, mut offset: u64, mut buf: &mut [u8]) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, offset) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One tensor a read-ahead will fetch: its name, file and absolute byte range.
pub(crate) struct Wanted {
    pub name: String,
    pub file: usize,
    pub range: Range<u64>,
}

enum Slot {
    /// The background read has not reached it yet.
    Pending,
    Ready(SharedBytes),
}

#[derive(Default)]
struct AheadState {
    /// Bumped by every new read-ahead; a read finishing for an older one is dropped.
    generation: u64,
    slots: HashMap<String, Slot>,
    /// What the background thread reads next, in order (entries no longer pending are skipped).
    queue: VecDeque<Wanted>,
    /// Background threads of the current generation reading (at most [`READERS`]).
    readers: usize,
    /// Name prefixes whose tensors are handed out to every taker until released (a layer loaded on several
    /// devices), not once; a prefix shared twice is in it twice, and stays shared until released twice.
    shared: Vec<String>,
}

/// Tensors read ahead of need, handed out once each.
#[derive(Default)]
pub(crate) struct ReadAhead {
    state: Mutex<AheadState>,
    changed: Condvar,
    /// The buffers its reads fill, reused.
    pool: Arc<BufferPool>,
}

/// Reads coalesced into one request stop growing at this size.
pub(super) const MAX_REQUEST: u64 = 64 << 20;

/// Requests a read-ahead has in flight at once, each split over [`ShardSource::read_into`]'s threads. With one, the
/// disk idles from the moment a request's first piece is in until its last one is, and again until the next request
/// begins. Reading 4.8 GB of expert weights cold, layer by layer as a run does, on a 2-core virtual machine's disk:
/// 1.84 GB/s on average with one request in flight, 2.13 GB/s with two (faster in 7 of 8 paired runs), 2.06 GB/s
/// with three. On an H100 machine's disk (9.97 GB, two rounds) the three were within its noise: 1.51–1.68 GB/s.
const READERS: usize = 2;

impl ReadAhead {
    fn lock(&self) -> MutexGuard<'_, AheadState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forgets what an earlier read-ahead fetched and starts fetching `wanted` on a background thread,
    /// contiguous tensors in one request. Returns at once. Asked for exactly the tensors the current
    /// read-ahead still holds or fetches (none of them handed out yet), it lets that read-ahead go on: a run
    /// starts reading its first layer before it opens its device, and the layer stream asks for the same
    /// read once it exists.
    pub fn start(self: &Arc<Self>, sources: Arc<Vec<ShardSource>>, wanted: Vec<Wanted>) {
        let mut state = self.lock();
        let same = !wanted.is_empty()
            && state.slots.len() == wanted.len()
            && wanted.iter().all(|w| state.slots.contains_key(&w.name));
        if same {
            return;
        }
        state.generation += 1;
        state.slots.clear();
        state.queue.clear();
        state.readers = 0;
        self.pool.forget();
        drop(state);
        self.changed.notify_all();
        self.queue(sources, wanted);
    }

    /// Adds `wanted` behind what the current read-ahead still has to read (the next layer, asked for while this
    /// one loads, so that the disk never waits for the device), keeping what it holds. Tensors it already holds
    /// or fetches are not read twice.
    pub fn queue(self: &Arc<Self>, sources: Arc<Vec<ShardSource>>, mut wanted: Vec<Wanted>) {
        wanted.sort_by_key(|w| (w.file, w.range.start));
        let mut state = self.lock();
        wanted.retain(|w| !state.slots.contains_key(&w.name));
        if wanted.is_empty() {
            return;
        }
        self.pool.expect(wanted.iter().map(|w| (w.range.end - w.range.start) as usize).sum());
        for w in &wanted {
            state.slots.insert(w.name.clone(), Slot::Pending);
        }
        state.queue.extend(wanted);
        let spawn = READERS.saturating_sub(state.readers);
        state.readers += spawn;
        let generation = state.generation;
        drop(state);
        for spawned in 0..spawn {
            let (ahead, sources) = (Arc::clone(self), Arc::clone(&sources));
            let thread = std::thread::Builder::new()
                .name("moe-quant-read-ahead".into())
                .spawn(move || ahead.read_queue(&sources, generation));
            if thread.is_ok() {
                continue;
            }
            let mut state = self.lock();
            if state.generation == generation {
                state.readers -= spawn - spawned;
                if state.readers == 0 {
                    // No thread: every tensor is read directly when needed.
                    state.slots.clear();
                    state.queue.clear();
                }
            }
            drop(state);
            self.changed.notify_all();
            break;
        }
    }

    /// A background thread: reads the queue in requests of contiguous tensors until it is empty or a new
    /// read-ahead replaces this generation's. [`READERS`] of them take requests in turn.
    fn read_queue(&self, sources: &[ShardSource], generation: u64) {
        loop {
            let group = {
                let mut state = self.lock();
                if state.generation != generation {
                    return;
                }
                let group = next_request(&mut state);
                if group.is_empty() {
                    state.readers -= 1;
                    return;
                }
                group
            };
            let span = group[0].range.start..group[group.len() - 1].range.end;
            let read = sources[group[0].file].read_pooled(span.clone(), &self.pool);
            let mut state = self.lock();
            if state.generation != generation {
                return;
            }
            match read {
                Ok(bytes) => {
                    for w in &group {
                        // Released while it was read: nobody wants it any more.
                        if let Some(slot @ Slot::Pending) = state.slots.get_mut(&w.name) {
                            let local = (w.range.start - span.start) as usize..(w.range.end - span.start) as usize;
                            *slot = Slot::Ready(bytes.slice(local));
                        }
                    }
                }
                // The reader reports the error itself when it reads the tensor directly.
                Err(_) => {
                    for w in &group {
                        state.slots.remove(&w.name);
                    }
                }
            }
            drop(state);
            self.changed.notify_all();
        }
    }

    /// Ends one [`share`](Self::share) of each of `prefixes` (if any), then forgets the tensors whose names start with
    /// one of them, held or still to be read, that no share left covers: what a layer left untaken once it is loaded
    /// (the fused tensors its slices were cut from), or a tensor whose last sharer is done with it.
    pub fn release(&self, prefixes: &[&str]) {
        let mut state = self.lock();
        let AheadState { slots, shared, .. } = &mut *state;
        for prefix in prefixes {
            if let Some(at) = shared.iter().position(|one| one == prefix) {
                shared.swap_remove(at);
            }
        }
        let covered = |name: &str| shared.iter().any(|one| name.starts_with(one.as_str()));
        slots.retain(|name, _| !prefixes.iter().any(|prefix| name.starts_with(prefix)) || covered(name));
        drop(state);
        self.changed.notify_all();
    }

    /// Hands the tensors whose names start with one of `prefixes` to every [`take`](Self::take) until
    /// [`release`](Self::release) names the same prefix as often as it was shared: the bytes of a layer that several
    /// devices load, or an embedding both looked up in and copied.
    pub fn share(&self, prefixes: &[&str]) {
        self.lock().shared.extend(prefixes.iter().map(|prefix| prefix.to_string()));
    }

    /// Stops the current read-ahead at its next request and forgets what it fetched.
    pub fn cancel(&self) {
        let mut state = self.lock();
        state.generation += 1;
        state.slots.clear();
        state.queue.clear();
        state.readers = 0;
        self.pool.forget();
        state.shared.clear();
        drop(state);
        self.changed.notify_all();
    }

    /// The bytes of `name` if a read-ahead fetched them (waiting for one that is on its way), handed out once
    /// (unless [shared](Self::share)): `None` when the tensor is not part of the current read-ahead, or was already taken.
    pub fn take(&self, name: &str) -> Option<SharedBytes> {
        let mut state = self.wait_ready(name)?;
        if state.shared.iter().any(|prefix| name.starts_with(prefix.as_str())) {
            return match state.slots.get(name) {
                Some(Slot::Ready(bytes)) => Some(bytes.clone()),
                _ => None,
            };
        }
        match state.slots.remove(name) {
            Some(Slot::Ready(bytes)) => Some(bytes),
            _ => None,
        }
    }

    /// Like [`take`](Self::take) but leaves the bytes for later callers (slices of one fused tensor).
    pub fn get(&self, name: &str) -> Option<SharedBytes> {
        let state = self.wait_ready(name)?;
        match state.slots.get(name) {
            Some(Slot::Ready(bytes)) => Some(bytes.clone()),
            _ => None,
        }
    }

    /// The lock, once `name` is no longer pending; `None` when it is not part of the read-ahead.
    fn wait_ready(&self, name: &str) -> Option<MutexGuard<'_, AheadState>> {
        let mut state = self.lock();
        loop {
            match state.slots.get(name) {
                None => return None,
                Some(Slot::Pending) => {
                    state = self.changed.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                Some(Slot::Ready(_)) => return Some(state),
            }
        }
    }

    /// Tensors held or on their way, not yet handed out.
    pub fn outstanding(&self) -> usize {
        self.lock().slots.len()
    }
}

/// A read-ahead's bytes for another thread: [`get`](Self::get) waits for a tensor on its way and leaves it for
/// the checkpoint's own readers.
#[derive(Clone)]
pub struct AheadBytes(Arc<ReadAhead>);

impl AheadBytes {
    pub(crate) fn new(ahead: Arc<ReadAhead>) -> Self {
        AheadBytes(ahead)
    }

    /// The bytes of `name` once read ahead; `None` when the tensor is not part of the read-ahead (any more).
    pub fn get(&self, name: &str) -> Option<SharedBytes> {
        self.0.get(name)
    }
}

/// The next request of the queue: its first tensor still pending and those contiguous with it in the same file,
/// up to [`MAX_REQUEST`] bytes (tensors no longer pending are dropped from the queue).
fn next_request(state: &mut AheadState) -> Vec<Wanted> {
    let pending = |state: &AheadState, w: &Wanted| matches!(state.slots.get(&w.name), Some(Slot::Pending));
    let mut group: Vec<Wanted> = Vec::new();
    while let Some(next) = state.queue.front() {
        if !pending(state, next) {
            state.queue.pop_front();
            continue;
        }
        if let (Some(first), Some(last)) = (group.first(), group.last()) {
            let contiguous = next.file == first.file && next.range.start == last.range.end;
            if !contiguous || next.range.end - first.range.start > MAX_REQUEST {
                break;
            }
        }
        group.extend(state.queue.pop_front());
    }
    group
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tensors of `len` bytes with a gap of one byte after each (so no two share a request), in a file of bytes
    /// counting up.
    fn apart(count: usize, len: u64) -> (tempfile::TempDir, Arc<Vec<ShardSource>>, Vec<Wanted>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard.safetensors");
        let bytes: Vec<u8> = (0..count as u64 * (len + 1)).map(|i| i as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let source = ShardSource::new(path.clone(), File::open(&path).unwrap()).unwrap();
        let wanted = (0..count as u64)
            .map(|i| Wanted { name: format!("t{i}"), file: 0, range: i * (len + 1)..i * (len + 1) + len })
            .collect();
        (dir, Arc::new(vec![source]), wanted)
    }

    fn readers(ahead: &ReadAhead) -> usize {
        ahead.lock().readers
    }

    #[test]
    fn the_readers_take_requests_in_turn_and_leave_when_the_queue_is_empty() {
        let (_dir, sources, wanted) = apart(40, 1000);
        let expected: Vec<(String, Vec<u8>)> =
            wanted.iter().map(|w| (w.name.clone(), (w.range.start..w.range.end).map(|i| i as u8).collect())).collect();
        let ahead = Arc::new(ReadAhead::default());
        for round in 0..3 {
            let again = wanted.iter().map(|w| Wanted { name: w.name.clone(), file: w.file, range: w.range.clone() });
            ahead.queue(Arc::clone(&sources), again.collect());
            assert!(readers(&ahead) <= READERS);
            for (name, bytes) in &expected {
                assert_eq!(ahead.take(name).as_deref(), Some(&bytes[..]), "round {round}, {name}");
            }
            // Every request was handed out: the readers find the queue empty and leave, so that the next queue
            // starts new ones (a reader counted but gone would leave the next tensors pending for ever).
            let started = std::time::Instant::now();
            while readers(&ahead) > 0 {
                assert!(started.elapsed().as_secs() < 10, "round {round}: {} readers left", readers(&ahead));
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        // A new read-ahead forgets the readers of the one before, whose threads stop at their next request.
        ahead.queue(Arc::clone(&sources), wanted);
        ahead.start(Arc::clone(&sources), Vec::new());
        assert_eq!((readers(&ahead), ahead.outstanding()), (0, 0));
        assert!(ahead.take("t0").is_none());
    }

    #[test]
    fn a_tensor_shared_twice_stays_until_released_twice_and_a_release_without_a_share_forgets_it() {
        let (_dir, sources, wanted) = apart(3, 100);
        let ahead = Arc::new(ReadAhead::default());
        ahead.queue(Arc::clone(&sources), wanted);
        ahead.share(&["t0"]);
        ahead.share(&["t0", "t1"]);
        let bytes = |i: u64| (i * 101..i * 101 + 100).map(|b| b as u8).collect::<Vec<u8>>();
        for _ in 0..2 {
            assert_eq!(ahead.take("t0").as_deref(), Some(&bytes(0)[..]), "shared: handed to every taker");
        }
        ahead.release(&["t0", "t1"]);
        assert_eq!(ahead.get("t0").as_deref(), Some(&bytes(0)[..]), "t0 is still shared once");
        assert!(ahead.get("t1").is_none(), "t1's only share ended, and it was forgotten");
        assert_eq!(ahead.take("t0").as_deref(), Some(&bytes(0)[..]));
        ahead.release(&["t0"]);
        assert!(ahead.get("t0").is_none(), "t0's last share ended");
        // A release of a prefix never shared forgets what it covers (a loaded layer's leftovers).
        ahead.release(&["t2"]);
        assert!(ahead.take("t2").is_none());
    }
}
