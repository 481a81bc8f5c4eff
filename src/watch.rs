//! Opt-in file watching (`[admin] watch = true` or `levee run --watch`): a change to the config
//! file, or to a listener's certificate or key file, triggers the same [`Levee::reload`] as SIGHUP,
//! debounced so an editor's burst of writes (or a cert and its key replaced together) makes one
//! reload.
//!
//! The watch is on the files' *directories*, not the files: editors and deploy tools replace a
//! file by writing a temporary one and renaming it over the old, which ends a watch on the file
//! itself. Events for other files in those directories are ignored, except Kubernetes' `..data`
//! symlink swap (ConfigMap and Secret volumes).

use crate::runtime::Levee;
use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long the files must stay quiet before a reload.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// A running watch; dropping it stops watching.
struct FileWatch {
    watcher: RecommendedWatcher,
    dirs: HashSet<PathBuf>,
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The files whose change should reload: the config file and every listener certificate and key.
pub fn watched_files(config_path: &Path, levee: &Levee) -> HashSet<PathBuf> {
    let mut files = HashSet::new();
    files.insert(absolute(config_path));
    let snapshot = levee.shared.snapshot.load();
    for l in &snapshot.config.listeners {
        if let Some(tls) = &l.tls {
            for c in &tls.certificates {
                files.insert(absolute(&c.cert));
                files.insert(absolute(&c.key));
            }
        }
    }
    files
}

/// Whether an event can mean new content: creations, writes, renames and removals, not the opens
/// and reads levee's own reload makes.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
        EventKind::Any | EventKind::Other => false,
    }
}

fn relevant(event: &notify::Event, files: &HashSet<PathBuf>) -> bool {
    is_change(&event.kind)
        && event
            .paths
            .iter()
            .any(|p| files.contains(p) || p.file_name().is_some_and(|n| n == "..data"))
}

impl FileWatch {
    /// Watches the directories of `files` (adding new ones, dropping ones no longer needed).
    fn watch_dirs(&mut self, files: &HashSet<PathBuf>) {
        let wanted: HashSet<PathBuf> = files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        for dir in self.dirs.difference(&wanted).cloned().collect::<Vec<_>>() {
            let _ = self.watcher.unwatch(&dir);
            self.dirs.remove(&dir);
        }
        for dir in wanted {
            if self.dirs.contains(&dir) {
                continue;
            }
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::debug!(dir = %dir.display(), "watching for changes");
                    self.dirs.insert(dir);
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory")
                }
            }
        }
    }
}

/// The file watch of one levee: off until [`Watch::start`], then on for as long as it lives.
pub struct Watch {
    levee: Weak<Levee>,
    config_path: PathBuf,
    files: Arc<parking_lot::Mutex<Option<FileWatch>>>,
}

impl Watch {
    /// A watch, not yet started, for `levee`, whose config lives at `config_path`.
    pub fn new(levee: &Arc<Levee>, config_path: PathBuf) -> Watch {
        Watch {
            levee: Arc::downgrade(levee),
            config_path,
            files: Arc::new(parking_lot::Mutex::new(None)),
        }
    }

    /// Starts watching the config file and the listeners' certificate and key files; a change
    /// reloads (debounced). Idempotent.
    pub fn start(&self) {
        let mut slot = self.files.lock();
        let Some(levee) = self.levee.upgrade().filter(|_| slot.is_none()) else {
            return;
        };
        let (tx, rx) = mpsc::unbounded_channel::<notify::Event>();
        let watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
                Ok(event) => {
                    let _ = tx.send(event);
                }
                Err(e) => tracing::warn!(error = %e, "file watch error"),
            });
        let watcher = match watcher {
            Ok(w) => w,
            Err(e) => return tracing::error!("cannot start the file watch: {e}"),
        };
        let mut fw = FileWatch {
            watcher,
            dirs: HashSet::new(),
        };
        let files = watched_files(&self.config_path, &levee);
        fw.watch_dirs(&files);
        tracing::info!(
            files = files.len(),
            "watching the config and certificate files for changes"
        );
        *slot = Some(fw);
        let (levee, path) = (Arc::downgrade(&levee), self.config_path.clone());
        tokio::spawn(run(rx, levee, Arc::downgrade(&self.files), path, files));
    }

    /// Whether the file watch runs.
    pub fn is_on(&self) -> bool {
        self.files.lock().is_some()
    }
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<notify::Event>,
    levee: Weak<Levee>,
    watch: Weak<parking_lot::Mutex<Option<FileWatch>>>,
    config_path: PathBuf,
    mut files: HashSet<PathBuf>,
) {
    while let Some(event) = rx.recv().await {
        if !relevant(&event, &files) {
            continue;
        }
        let mut changed: Vec<PathBuf> = event.paths;
        // Debounce: wait until nothing relevant happened for DEBOUNCE.
        loop {
            match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                Ok(Some(e)) => {
                    if relevant(&e, &files) {
                        changed.extend(e.paths);
                    }
                }
                Ok(None) => return,
                Err(_) => break,
            }
        }
        let Some(levee) = levee.upgrade() else { return };
        changed.sort();
        changed.dedup();
        let names: Vec<String> = changed.iter().map(|p| p.display().to_string()).collect();
        tracing::info!(changed = ?names, "file change: reloading config");
        // Errors are logged and counted by reload itself; the old config keeps serving.
        let _ = levee.reload().await;
        files = watched_files(&config_path, &levee);
        drop(levee);
        match watch.upgrade() {
            Some(w) => w.lock().iter_mut().for_each(|w| w.watch_dirs(&files)),
            None => return,
        }
    }
}
