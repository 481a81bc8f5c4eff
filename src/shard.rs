//! Per-worker shards: one value per worker thread, each on its own cache lines, indexed by the
//! calling thread's worker number. The workers (`crate::worker`) set the number; everything that
//! keeps per-worker state (metrics, history, connection pools) reads it. A leaf: it imports
//! nothing from the crate.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

thread_local! {
    /// This thread's worker number: 1..=N on worker threads, 0 elsewhere (inline, control).
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// Shards of per-worker state the process needs: the most workers any levee in it started,
/// plus one for the control runtime. Only grows.
static SHARDS: AtomicUsize = AtomicUsize::new(1);

/// The shard of the calling thread: its worker number (0 outside worker threads).
#[inline]
pub fn current() -> usize {
    INDEX.with(|i| i.get())
}

/// How many shards per-worker state has (see [`SHARDS`]); at least 1.
pub fn shard_count() -> usize {
    SHARDS.load(Ordering::Relaxed)
}

/// Makes room for `workers` worker threads in shards built from now on.
pub fn reserve_shards(workers: usize) {
    SHARDS.fetch_max(workers + 1, Ordering::Relaxed);
}

/// One worker's handle on state every worker shares (an upstream's breaker, limit, detector):
/// a worker's route stacks hold an `Arc<Local<T>>` and clone it for every request, so the
/// reference count that writes is this worker's own, where cloning the shared `Arc<T>` would
/// bounce its cache line between cores several times per request (`crate::worker`).
pub struct Local<T: ?Sized>(pub std::sync::Arc<T>);

impl<T: ?Sized> std::ops::Deref for Local<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Pads a per-worker value to its own cache lines (128 bytes: two 64-byte lines, since adjacent
/// line prefetch pairs them on x86), so that one worker writing its shard never invalidates the
/// line another worker's shard is on. Written here rather than taken from crossbeam-utils, which
/// levee does not otherwise depend on, for one `repr(align)`.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// One value per worker shard ([`current`]), each on its own cache lines.
#[derive(Debug)]
pub struct Sharded<T>(Box<[Padded<T>]>);

impl<T: Default> Default for Sharded<T> {
    fn default() -> Self {
        Sharded((0..shard_count()).map(|_| Padded(T::default())).collect())
    }
}

impl<T> Sharded<T> {
    pub fn new(mut make: impl FnMut() -> T) -> Self {
        Sharded((0..shard_count()).map(|_| Padded(make())).collect())
    }

    /// The calling worker's shard (a shard built before more workers started is shared).
    #[inline]
    pub fn local(&self) -> &T {
        let i = current();
        // `len` is at least 1: `shard_count` is.
        &self.0[i % self.0.len().max(1)]
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|p| &p.0)
    }
}

/// Makes the calling thread count as worker `index` (a worker thread as it starts; tests).
pub(crate) fn set_current(index: usize) {
    INDEX.with(|i| i.set(index));
}
