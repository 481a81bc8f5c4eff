//! `levee::run`: one levee assembled, the same way for `main`, the demo and the tests: the
//! runtime (`crate::runtime`), the admin listener, the file watch (started now or by the first
//! reload that turns `[admin] watch` on), systemd, the tuning of the tokio runtimes, and signals.

use crate::lifecycle::{self, Signals};
use crate::runtime::{ConfigSource, Levee, Reload, StartError};
use crate::shared::Shared;
use crate::watch::Watch;
use crate::worker::Workers;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// How to run a levee.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Watch the config and certificate files even without `[admin] watch = true`.
    pub watch: bool,
    pub workers: Workers,
    /// Hands freed memory back to the OS now (the allocator's collect; `main` passes mimalloc's,
    /// see [`release_memory_after_parking`]). `None`: leave it to the allocator.
    pub release_memory: Option<fn()>,
}

/// A started levee and its drivers.
pub struct Running {
    pub levee: Arc<Levee>,
    watch: Option<Arc<Watch>>,
}

impl Running {
    /// Whether the file watch runs.
    pub fn is_watching(&self) -> bool {
        self.watch.as_ref().is_some_and(|w| w.is_on())
    }
}

/// Runs levee as a process does: a single-threaded tokio runtime (with one worker it serves
/// everything; with more it carries the control plane and each worker gets a runtime of its
/// own, `crate::worker`), signals, then [`start`]; serves until SIGTERM or SIGINT, then drains.
pub fn run(source: ConfigSource, options: Options) -> ExitCode {
    block_on(async move {
        // Before binding: a SIGHUP right after the listeners are up must reload, not kill us.
        let signals = match Signals::install() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers");
                return ExitCode::FAILURE;
            }
        };
        match start(source, options).await {
            Ok(running) => signals.serve(running.levee).await,
            Err(e) => {
                for line in e.to_string().lines() {
                    tracing::error!("{line}");
                    eprintln!("{line}");
                }
                ExitCode::FAILURE
            }
        }
    })
}

/// The runtime `main` runs on. Single-threaded: no cross-thread wakeups.
pub fn block_on(fut: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("levee: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Starts levee on the current runtime: binds, serves the admin listener, starts the file watch
/// when asked (before `/ready` says 200, so a change made right after readiness is never
/// missed), and tells systemd it is ready.
pub async fn start(source: ConfigSource, options: Options) -> Result<Running, StartError> {
    // The worker threads' runtimes arm theirs in `crate::worker`.
    tokio::spawn(crate::worker::keep_timer_wheel_armed());
    let (levee, admin) = Levee::start(source.clone(), options.workers).await?;
    crate::admin::spawn(admin, levee.shared.clone(), Arc::downgrade(&levee));
    levee.on_reload(|reload| match reload {
        Reload::Begins => lifecycle::notify_reloading(),
        Reload::Ended(result) => lifecycle::notify_reloaded(result),
    });
    let watch = match &source {
        ConfigSource::File(path) => Some(Arc::new(Watch::new(&levee, path.clone()))),
        ConfigSource::Text { .. } => None,
    };
    if let Some(watch) = &watch {
        let (w, shared) = (watch.clone(), levee.shared.clone());
        levee.on_reload(move |reload| {
            if matches!(reload, Reload::Ended(Ok(_))) && shared.snapshot.load().config.admin.watch {
                w.start();
            }
        });
        if options.watch || levee.shared.snapshot.load().config.admin.watch {
            watch.start();
        }
    }
    levee.shared.ready.store(true, Ordering::Release);
    lifecycle::notify_ready(&levee).await;
    if let Some(collect) = options.release_memory {
        tokio::spawn(release_memory_after_parking(levee.shared.clone(), collect));
    }
    Ok(Running { levee, watch })
}

/// mimalloc returns freed pages to the OS a while (its purge delay, 1 s) after they were freed,
/// but only when it next frees a page: a process that goes quiet keeps the last second's frees
/// resident. Parking idle keep-alive connections (`crate::server::park`) frees hyper's buffers in
/// a burst just before a quiet spell, so without this 10 000 parked connections kept 137–200 MiB
/// resident instead of about 47 MiB. Once parking has stopped for a moment, `collect` returns
/// what is free; while connections keep parking, mimalloc's own purging keeps up.
async fn release_memory_after_parking(shared: Arc<Shared>, collect: fn()) {
    const QUIET: std::time::Duration = std::time::Duration::from_millis(250);
    let parks = &shared.metrics.parks;
    let mut seen = parks.get();
    let mut freed = false;
    let mut tick = tokio::time::interval(QUIET);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = parks.get();
        if now != seen {
            seen = now;
            freed = true;
        } else if freed {
            freed = false;
            collect();
        }
    }
}
