//! A real levee, in process, on ephemeral ports, with its config in a temp file.

use levee::{ConfigSource, Levee, Options, Running, Workers};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub struct TestProxy {
    pub levee: Arc<Levee>,
    pub running: Running,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

/// Adds an admin table on an ephemeral port unless the config has one.
fn with_defaults(toml: &str) -> String {
    if toml.contains("[admin]") {
        toml.to_string()
    } else {
        format!("[admin]\nbind = \"127.0.0.1:0\"\ndrain_timeout = \"5s\"\n\n{toml}")
    }
}

/// The workers every test proxy runs with: `LEVEE_TEST_WORKERS` (default 1, on the test's own
/// runtime as `levee --workers 1` runs; more get threads of their own). `.ci/run` runs the suite
/// with 1 and with 4.
pub fn workers() -> Workers {
    let n = std::env::var("LEVEE_TEST_WORKERS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(1);
    Workers::from_count(n)
}

impl TestProxy {
    /// Starts levee on `toml`; the first listener should be named "main" and bind 127.0.0.1:0.
    pub async fn start(toml: &str) -> TestProxy {
        Self::start_with(toml, workers()).await
    }

    /// Like [`TestProxy::start`], on `workers` whatever `LEVEE_TEST_WORKERS` says.
    pub async fn start_with(toml: &str, workers: Workers) -> TestProxy {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("levee.toml");
        std::fs::write(&path, with_defaults(toml)).unwrap();
        let options = Options {
            watch: false,
            workers,
            release_memory: None,
        };
        let running = levee::run::start(ConfigSource::File(path.clone()), options)
            .await
            .unwrap_or_else(|e| panic!("levee did not start: {e}"));
        let levee = running.levee.clone();
        let addr = levee
            .listener_addr("main")
            .await
            .expect("a listener named \"main\"");
        let admin = levee.admin_addr().unwrap();
        TestProxy {
            levee,
            running,
            addr,
            admin,
            dir,
            path,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// Rewrites the config file and reloads.
    pub async fn reload(&self, toml: &str) -> Result<u64, levee::config::ConfigErrors> {
        std::fs::write(&self.path, with_defaults(toml)).unwrap();
        self.levee.reload().await
    }

    pub async fn shutdown(&self) {
        self.levee.shutdown().await;
    }
}

/// A minimal config: listener "main", one route "/" to upstream "app" with these endpoints.
pub fn simple_config(endpoints: &[SocketAddr], route_extra: &str, upstream_extra: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"[[listener]]
name = "main"
bind = "127.0.0.1:0"

[[route]]
name = "app"
path_prefix = "/"
upstream = "app"
{route_extra}

[[upstream]]
name = "app"
endpoints = [{}]
{upstream_extra}
"#,
        eps.join(", ")
    )
}
