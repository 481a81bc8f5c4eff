//! Workers: how levee uses many cores without the cores sharing what a request writes.
//!
//! With `--workers N` (N > 1) levee runs N workers, each a single-threaded (`current_thread`)
//! tokio runtime on a thread of its own, with its own listener socket per listener
//! (`SO_REUSEPORT`: the kernel spreads new connections over the workers' sockets), its own copy
//! of the snapshot pointer ([`Worker::snapshot`]), its own idle upstream connections and its own
//! shards of the hottest metrics (indexed by [`current`]). A connection lives and dies on the
//! worker that accepted it, and so does every request on it: no work stealing, no cross-thread
//! wakeups, and nothing written per request that another core writes too, except the protection
//! state that must be shared (breaker windows, rate limit cells, outlier counts, P2C loads).
//! The control plane (admin listener, reloads, signals, health checks, the file watch) runs on
//! the runtime that started levee. With one worker everything runs on that one runtime, as
//! before ([`Workers::Inline`]).
//!
//! Why `SO_REUSEPORT` rather than one acceptor handing connections out: handing out costs a
//! cross-thread wakeup per connection (the very thing this model removes), and one accepting
//! thread becomes the ceiling for short connections. One socket shared by every worker's epoll
//! wakes every worker per connection (no `EPOLLEXCLUSIVE` in tokio). nginx (`reuseport`),
//! Envoy and Pingora take the same per-worker-socket route.

use crate::layers::breaker::RampBy;
use crate::metrics::RouteMetrics;
use crate::proxy::stack::{self, RouteStack};
use crate::shard::Local;
pub use crate::shard::{current, reserve_shards, shard_count};
use crate::shared::{Follow, Shared};
use crate::snapshot::Snapshot;
use crate::upstream::WorkerUpstream;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;

/// How a levee runs its listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// On the runtime that starts levee (one worker; the runtime may have any flavour).
    Inline,
    /// On this many single-threaded runtimes, each on its own thread.
    Threads(usize),
}

impl Workers {
    /// `--workers N`: one worker runs inline, more get threads of their own.
    pub fn from_count(n: usize) -> Workers {
        if n <= 1 {
            Workers::Inline
        } else {
            Workers::Threads(n)
        }
    }

    pub fn count(self) -> usize {
        match self {
            Workers::Inline => 1,
            Workers::Threads(n) => n.max(1),
        }
    }
}

/// The snapshot as one worker holds it, with the worker's own route stacks. A request takes a
/// reference to it and clones its route's stack: every reference count written per request
/// belongs to this worker alone, where the shared snapshot's, its upstreams' and its route
/// metrics' counts would be written by every core.
pub struct WorkerSnapshot {
    pub snapshot: Arc<Snapshot>,
    /// `snapshot.routes[i]`'s stack is `stacks[i]`; `None` for a route that answers itself.
    pub stacks: Vec<Option<WorkerRoute>>,
}

/// One route's stack as a worker runs it.
pub struct WorkerRoute {
    pub stack: RouteStack,
    pub upstream: Arc<WorkerUpstream>,
    /// A split route's targets, in the order of its `split` (empty for one upstream).
    pub split: Box<[crate::proxy::split::WorkerTarget]>,
}

impl WorkerSnapshot {
    pub fn new(snapshot: Arc<Snapshot>) -> WorkerSnapshot {
        let upstreams: Vec<Arc<WorkerUpstream>> = snapshot
            .upstreams
            .iter()
            .map(|u| Arc::new(Local(u.clone())))
            .collect();
        let stacks = snapshot
            .routes
            .iter()
            .map(|r| {
                let route_upstream = r.upstream.as_ref()?;
                let upstream = upstreams
                    .iter()
                    .find(|u| Arc::ptr_eq(&u.0, route_upstream))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Local(route_upstream.clone())));
                let metrics = Arc::new(RouteMetrics::clone(&r.metrics));
                let split = match &r.split {
                    Some(split) => crate::proxy::split::worker_targets(
                        split,
                        &upstreams,
                        r.limiter.as_ref(),
                        r.retry.as_ref(),
                    ),
                    None => Box::new([]),
                };
                Some(WorkerRoute {
                    split,
                    stack: stack::build(
                        &upstream,
                        r.limiter.as_ref(),
                        r.retry.as_ref(),
                        &metrics,
                        RampBy::Breaker,
                    ),
                    upstream,
                })
            })
            .collect();
        WorkerSnapshot { snapshot, stacks }
    }
}

impl std::ops::Deref for WorkerSnapshot {
    type Target = Snapshot;

    fn deref(&self) -> &Snapshot {
        &self.snapshot
    }
}

/// What one worker's connections and requests share.
pub struct Worker {
    /// This worker's shard number ([`current`] on its thread).
    pub index: usize,
    pub shared: Arc<Shared>,
    /// Refreshed by [`Shared::publish`] on every reload.
    snapshot: ArcSwap<WorkerSnapshot>,
}

impl Worker {
    /// A worker that follows `shared`'s published snapshot from now on.
    pub fn new(index: usize, shared: Arc<Shared>) -> Arc<Worker> {
        shared.clone().subscribe(|snapshot| {
            Arc::new(Worker {
                index,
                snapshot: ArcSwap::from_pointee(WorkerSnapshot::new(snapshot)),
                shared,
            })
        })
    }

    /// The current snapshot; a request holds it to the end, whatever reloads happen meanwhile.
    #[inline]
    pub fn snapshot(&self) -> Arc<WorkerSnapshot> {
        self.snapshot.load_full()
    }
}

impl Follow for Worker {
    fn follow(&self, snapshot: &Arc<Snapshot>) {
        self.snapshot
            .store(Arc::new(WorkerSnapshot::new(snapshot.clone())));
    }
}

/// A worker and the runtime its listeners run on.
pub struct WorkerRuntime {
    pub worker: Arc<Worker>,
    pub handle: Handle,
    /// Dropping it ends the worker's thread and runtime (and every connection on it); `None`
    /// for an inline worker.
    _stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Starts the workers: the calling runtime's own for [`Workers::Inline`], else one thread with
/// a single-threaded runtime per worker. Must be called on a runtime.
pub fn start(shared: &Arc<Shared>, workers: Workers) -> std::io::Result<Vec<WorkerRuntime>> {
    match workers {
        Workers::Inline => Ok(vec![WorkerRuntime {
            worker: Worker::new(0, shared.clone()),
            handle: Handle::current(),
            _stop: None,
        }]),
        Workers::Threads(n) => {
            crate::shard::reserve_shards(n);
            (1..=n).map(|i| spawn_thread(i, shared)).collect()
        }
    }
}

fn spawn_thread(index: usize, shared: &Arc<Shared>) -> std::io::Result<WorkerRuntime> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, handle) = std::sync::mpsc::channel::<std::io::Result<Handle>>();
    std::thread::Builder::new()
        .name(format!("levee-worker-{index}"))
        .spawn(move || {
            crate::shard::set_current(index);
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            let _ = ready.send(Ok(runtime.handle().clone()));
            runtime.spawn(keep_timer_wheel_armed());
            runtime.block_on(async move {
                let _ = stopped.await;
            });
        })?;
    let handle = handle
        .recv()
        .map_err(|_| std::io::Error::other("worker thread ended before its runtime started"))??;
    Ok(WorkerRuntime {
        worker: Worker::new(index, shared.clone()),
        handle,
        _stop: Some(stop),
    })
}

/// Keeps a timer due within a second at all times. tokio wakes its I/O driver through an eventfd
/// (a system call, and one more return from epoll) whenever a timer is set earlier than every
/// timer the driver saw when it went to sleep, which with no timer pending is every timer: the
/// first request deadline after an idle moment, under load nearly once per request (strace).
/// With this timer pending, request deadlines (seconds away) are never the earliest.
pub async fn keep_timer_wheel_armed() {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}
