//! A Redis for tests that need one: `LEVEE_TEST_REDIS` (which `.ci/run` sets), or a
//! `redis-server` started here on a free loopback port. Only when neither is possible does a test
//! skip, loudly.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct TestRedis {
    pub url: String,
    port: u16,
    child: Option<Child>,
}

fn skipped(why: &str) {
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!("SKIPPED: redis-server not available ({why})");
    eprintln!("install it (apt-get install redis-server) or set LEVEE_TEST_REDIS=redis://...");
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_server(port: u16) -> std::io::Result<Child> {
    let mut last = None;
    for bin in [
        "redis-server",
        "/usr/bin/redis-server",
        "/usr/sbin/redis-server",
    ] {
        match Command::new(bin)
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no redis-server")))
}

async fn wait_listening(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..200 {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

impl TestRedis {
    /// The shared test Redis, or one of our own; `None` (after a loud message) if there is none.
    pub async fn get() -> Option<TestRedis> {
        if let Ok(url) = std::env::var("LEVEE_TEST_REDIS") {
            if !url.is_empty() {
                return Some(TestRedis {
                    url,
                    port: 0,
                    child: None,
                });
            }
        }
        TestRedis::own().await
    }

    /// Always a `redis-server` of this test's own, so the test may kill and restart it.
    pub async fn own() -> Option<TestRedis> {
        let port = free_port();
        let child = match spawn_server(port) {
            Ok(c) => c,
            Err(e) => {
                skipped(&format!("cannot run redis-server: {e}"));
                return None;
            }
        };
        let mut r = TestRedis {
            url: format!("redis://127.0.0.1:{port}"),
            port,
            child: Some(child),
        };
        if !wait_listening(port).await {
            r.kill();
            skipped("redis-server did not listen");
            return None;
        }
        Some(r)
    }

    /// Stops our own server (no-op for the shared one).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts our own server again on the same port.
    pub async fn restart(&mut self) {
        assert!(self.port != 0, "only a test's own Redis restarts");
        self.kill();
        self.child = Some(spawn_server(self.port).unwrap());
        assert!(wait_listening(self.port).await, "redis-server came back");
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
