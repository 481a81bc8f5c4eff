//! A running levee: the shared state, its listeners, reloads and draining. It knows none of its
//! drivers: it announces each reload to whoever listens ([`Levee::on_reload`]), and `crate::run`
//! assembles it with the admin listener, the file watch, signals and systemd.

use crate::config::{self, Config, ConfigErrors, Problem};
use crate::metrics::{Metrics, ResultLabel};
use crate::server::{self, ListenerHandle};
use crate::shared::{ReloadOutcome, Shared};
use crate::snapshot::Snapshot;
use crate::worker::{WorkerRuntime, Workers};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::Mutex;

/// Where the config comes from: a file (reloadable) or text embedded in the binary (the demo).
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    Text { name: String, text: String },
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        match self {
            ConfigSource::File(p) => config::load(p),
            ConfigSource::Text { name, text } => {
                config::parse(name, text, std::path::Path::new("."))
            }
        }
    }

    fn name(&self) -> String {
        match self {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::Text { name, .. } => name.clone(),
        }
    }
}

/// Loads, validates and builds a snapshot without binding anything: exactly what `levee check`,
/// startup and reloads run.
pub fn check(source: &ConfigSource) -> Result<Config, ConfigErrors> {
    let config = source.load()?;
    let metrics = Arc::new(Metrics::new());
    Snapshot::build(config.clone(), None, &metrics).map_err(|e| build_error(source, e))?;
    Ok(config)
}

fn build_error(source: &ConfigSource, message: String) -> ConfigErrors {
    ConfigErrors(vec![Problem {
        file: source.name(),
        line: 1,
        column: 1,
        message,
    }])
}

/// Why levee could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the worker threads: {0}")]
    Workers(std::io::Error),
}

/// What [`Levee::reload`] announces: a reload begins; it ended with the new version, or failed
/// with this version still serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    Begins,
    Ended(Result<u64, u64>),
}

type OnReload = Box<dyn Fn(Reload) + Send + Sync>;

pub struct Levee {
    pub shared: Arc<Shared>,
    source: ConfigSource,
    listeners: Mutex<HashMap<String, ListenerHandle>>,
    admin_addr: Option<SocketAddr>,
    reload_lock: Mutex<()>,
    /// Told of every reload, in the reload's own task (so a driver's reaction, e.g. starting
    /// the file watch, is done when `reload` returns).
    on_reload: parking_lot::Mutex<Vec<OnReload>>,
    /// Where the listeners run (`crate::worker`); dropping levee ends the worker threads.
    workers: Vec<WorkerRuntime>,
    /// The resolver tasks of upstreams with `dns_refresh` (`crate::dns`).
    dns: crate::dns::Tasks,
}

impl Levee {
    /// Loads the config and binds every listener (on `workers`) and the admin listener, which
    /// it hands back unserved; not ready until the caller (`crate::run`) says so.
    pub async fn start(
        source: ConfigSource,
        workers: Workers,
    ) -> Result<(Arc<Levee>, tokio::net::TcpListener), StartError> {
        // Before any snapshot is built: per-worker shards are sized for the workers.
        if let Workers::Threads(n) = workers {
            crate::worker::reserve_shards(n);
        }
        let config = source.load()?;
        let metrics = Arc::new(Metrics::new());
        let snapshot =
            Snapshot::build(config, None, &metrics).map_err(|e| build_error(&source, e))?;
        let admin_bind = snapshot.config.admin.bind;
        let drain = snapshot.config.admin.drain_timeout;
        let listener_configs = snapshot.config.listeners.clone();
        snapshot.activate();
        let shared = Shared::new(snapshot, metrics);
        let worker_runtimes =
            crate::worker::start(&shared, workers).map_err(StartError::Workers)?;
        let mut listeners = HashMap::new();
        for l in &listener_configs {
            let tcp = server::bind_workers(l.bind, &worker_runtimes).map_err(|source| {
                StartError::Bind {
                    what: format!("listener \"{}\"", l.name),
                    addr: l.bind,
                    source,
                }
            })?;
            let h = server::spawn_listener(&worker_runtimes, l.name.clone(), l.bind, tcp, drain)
                .map_err(|source| StartError::Bind {
                    what: l.name.clone(),
                    addr: l.bind,
                    source,
                })?;
            listeners.insert(l.name.clone(), h);
        }
        let admin_tcp = server::bind(admin_bind).map_err(|source| StartError::Bind {
            what: "the admin listener".into(),
            addr: admin_bind,
            source,
        })?;
        let admin_addr = admin_tcp.local_addr().ok();
        let levee = Arc::new(Levee {
            shared,
            source,
            listeners: Mutex::new(listeners),
            admin_addr,
            reload_lock: Mutex::new(()),
            on_reload: parking_lot::Mutex::new(Vec::new()),
            workers: worker_runtimes,
            dns: crate::dns::Tasks::default(),
        });
        // The resolver tasks follow the upstreams with `dns_refresh`, now and after each reload.
        let follower: std::sync::Weak<dyn crate::dns::Follow> = Arc::downgrade(&levee) as _;
        levee
            .dns
            .follow(follower.clone(), &levee.shared.snapshot.load());
        let me = Arc::downgrade(&levee);
        levee.on_reload(move |reload| {
            if let (Reload::Ended(Ok(_)), Some(levee)) = (reload, me.upgrade()) {
                levee
                    .dns
                    .follow(follower.clone(), &levee.shared.snapshot.load());
            }
        });
        Ok((levee, admin_tcp))
    }

    /// Calls `f` on every reload from now on.
    pub fn on_reload(&self, f: impl Fn(Reload) + Send + Sync + 'static) {
        self.on_reload.lock().push(Box::new(f));
    }

    fn announce(&self, reload: Reload) {
        for f in self.on_reload.lock().iter() {
            f(reload);
        }
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The bound address of a listener, by name (useful with port 0).
    pub async fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.lock().await.get(name).map(|h| h.local_addr)
    }

    /// Re-reads the config; on success swaps in the new snapshot (keeping live state where the
    /// config is unchanged) and reconciles listeners. On failure the running config stays.
    pub async fn reload(&self) -> Result<u64, ConfigErrors> {
        let _serial = self.reload_lock.lock().await;
        self.announce(Reload::Begins);
        let result = self.try_reload().await;
        self.announce(Reload::Ended(
            result
                .as_ref()
                .map(|v| *v)
                .map_err(|_| self.shared.snapshot.load().version),
        ));
        let metrics = &self.shared.metrics;
        let outcome = match &result {
            Ok(v) => {
                metrics
                    .reloads
                    .get_or_create(&ResultLabel { result: "success" })
                    .inc();
                metrics.config_version.set(*v as i64);
                ReloadOutcome {
                    at: SystemTime::now(),
                    ok: true,
                    message: format!("version {v} loaded"),
                }
            }
            Err(e) => {
                metrics
                    .reloads
                    .get_or_create(&ResultLabel { result: "failure" })
                    .inc();
                for p in &e.0 {
                    tracing::error!("config reload failed: {p}");
                }
                ReloadOutcome {
                    at: SystemTime::now(),
                    ok: false,
                    message: e.to_string(),
                }
            }
        };
        *self.shared.last_reload.lock() = Some(outcome);
        result
    }

    async fn try_reload(&self) -> Result<u64, ConfigErrors> {
        let config = self.source.load()?;
        let old = self.shared.snapshot.load_full();
        let snapshot = Snapshot::build(config, Some(&old), &self.shared.metrics)
            .map_err(|e| build_error(&self.source, e))?;
        let new_config = snapshot.config.clone();
        let drain = new_config.admin.drain_timeout;
        if new_config.admin.bind != old.config.admin.bind {
            tracing::warn!("admin.bind changed: the admin listener moves only on restart");
        }

        // Bind added listeners before publishing, so a bind failure leaves everything as it was.
        let mut listeners = self.listeners.lock().await;
        let mut fresh = Vec::new();
        for l in &new_config.listeners {
            let keep = listeners.get(&l.name).is_some_and(|h| h.bind == l.bind);
            if !keep {
                let tcp = server::bind_workers(l.bind, &self.workers).map_err(|e| {
                    build_error(
                        &self.source,
                        format!("listener \"{}\": cannot bind {}: {e}", l.name, l.bind),
                    )
                })?;
                fresh.push((l, tcp));
            }
        }
        let version = snapshot.version;
        snapshot.activate();
        self.shared.publish(Arc::new(snapshot));
        for (l, tcp) in fresh {
            if let Some(old) = listeners.remove(&l.name) {
                old.begin_stop();
                tokio::spawn(old.join());
            }
            match server::spawn_listener(&self.workers, l.name.clone(), l.bind, tcp, drain) {
                Ok(h) => {
                    listeners.insert(l.name.clone(), h);
                }
                Err(e) => tracing::error!(listener = %l.name, error = %e, "cannot start listener"),
            }
        }
        let removed: Vec<String> = listeners
            .keys()
            .filter(|n| !new_config.listeners.iter().any(|l| &l.name == *n))
            .cloned()
            .collect();
        for name in removed {
            if let Some(h) = listeners.remove(&name) {
                tracing::info!(listener = %name, "listener removed; draining");
                h.begin_stop();
                tokio::spawn(h.join());
            }
        }
        log_changes(&old.config, &new_config, version);
        Ok(version)
    }

    /// Graceful drain: not ready, stop accepting, let in-flight requests finish (up to the drain
    /// timeout), close idle connections, GOAWAY on HTTP/2.
    pub async fn shutdown(&self) {
        self.shared.ready.store(false, Ordering::Release);
        let handles: Vec<ListenerHandle> = self
            .listeners
            .lock()
            .await
            .drain()
            .map(|(_, h)| h)
            .collect();
        for h in &handles {
            h.begin_stop();
        }
        for h in handles {
            h.join().await;
        }
    }
}

fn log_changes(old: &Config, new: &Config, version: u64) {
    fn diff<T: PartialEq>(
        old: &[T],
        new: &[T],
        name: impl Fn(&T) -> &str,
    ) -> (Vec<String>, Vec<String>, Vec<String>) {
        let added = new
            .iter()
            .filter(|n| !old.iter().any(|o| name(o) == name(n)))
            .map(|n| name(n).to_string())
            .collect();
        let removed = old
            .iter()
            .filter(|o| !new.iter().any(|n| name(o) == name(n)))
            .map(|o| name(o).to_string())
            .collect();
        let modified = new
            .iter()
            .filter(|n| old.iter().any(|o| name(o) == name(n) && o != *n))
            .map(|n| name(n).to_string())
            .collect();
        (added, removed, modified)
    }
    let (ra, rr, rm) = diff(&old.routes, &new.routes, |r| &r.name);
    let (ua, ur, um) = diff(&old.upstreams, &new.upstreams, |u| &u.name);
    tracing::info!(
        version,
        routes_added = ?ra,
        routes_removed = ?rr,
        routes_modified = ?rm,
        upstreams_added = ?ua,
        upstreams_removed = ?ur,
        upstreams_modified = ?um,
        "config reloaded"
    );
}

impl crate::dns::Follow for Levee {
    fn current(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// Rebuilds the running snapshot with `upstream`'s new addresses, under the reload lock and
    /// through `Snapshot::build`'s carry-over: its config (and version) stay as they are.
    fn publish_resolved<'a>(
        &'a self,
        upstream: &'a str,
        resolved: crate::config::dns::Resolved,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let _serial = self.reload_lock.lock().await;
            let old = self.shared.snapshot.load_full();
            let follows = old
                .config
                .upstreams
                .iter()
                .any(|u| u.name == upstream && u.dns_refresh.is_some());
            if !follows {
                return;
            }
            let mut all = (*old.resolved).clone();
            all.insert(upstream.to_string(), resolved);
            let config = (*old.config).clone();
            match Snapshot::build_resolved(config, Some(&old), &self.shared.metrics, Arc::new(all))
            {
                Ok(mut snapshot) => {
                    snapshot.version = old.version;
                    snapshot.loaded_at = old.loaded_at;
                    snapshot.activate();
                    self.shared.publish(Arc::new(snapshot));
                }
                Err(e) => tracing::error!(
                    upstream,
                    error = %e,
                    "DNS: cannot use the new addresses; keeping the old ones"
                ),
            }
        })
    }
}
