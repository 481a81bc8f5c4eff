//! levee's integration tests: one binary, one module per behaviour, real sockets throughout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod architecture;
mod config_diff;
mod core;
mod dashboard;
mod dns;
mod faults;
mod framing;
mod fuzz_corpus;
mod global_limit;
mod grpc;
mod hostile;
mod hygiene;
mod keepalive;
mod layers;
mod lifecycle;
mod observability;
mod overrides;
mod packaging;
mod peer_limits;
mod recovery;
mod resilience;
mod routing;
mod split;
mod tls;
mod upstream_h1;
mod websocket;
mod workers;
