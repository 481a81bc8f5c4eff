//! The world each integration test owns: origins, a proxy and a client, all on ephemeral ports.

#![allow(dead_code)]

pub mod client;
pub mod fault;
pub mod grpc;
pub mod origin;
pub mod proxy;
pub mod raw;
pub mod redis;
pub mod scrape;

#[allow(unused_imports)]
pub use client::{Client, Reply};
#[allow(unused_imports)]
pub use origin::{Behaviour, Origin, OriginHandle};
pub use proxy::TestProxy;

use std::future::Future;
use std::time::Duration;

/// Polls `check` until it returns true, for at most `limit`; panics with `what` otherwise.
/// A bounded wait for state that changes asynchronously, instead of a fixed sleep.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
