//! levee's integration tests: one binary, one module per behaviour, real sockets throughout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod architecture;
mod core;
mod dashboard;
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
mod packaging;
mod peer_limits;
mod resilience;
mod tls;
mod upstream_h1;
mod websocket;
mod workers;
