//! levee: a reverse proxy whose job is protecting the backends behind it — rate limits, circuit
//! breakers, retries with budgets, outlier ejection — and explaining why it is protecting them.
#![forbid(unsafe_code)]

pub mod admin;
pub mod body;
pub mod call;
pub mod cli_docs;
pub mod config;
pub mod conn;
pub mod deadline;
pub mod demo;
pub mod diff_cli;
pub mod dns;
pub mod error;
pub mod fuzzing;
pub mod grpc;
pub mod h1;
pub mod history;
pub mod layers;
pub mod lifecycle;
pub mod logging;
pub mod metrics;
pub mod metrics_sharded;
pub mod override_cli;
pub mod overrides;
pub mod proxy;
pub mod redis;
pub mod rewind;
pub mod run;
pub mod runtime;
pub mod send_timeout;
pub mod server;
pub mod shard;
pub mod shared;
pub mod snapshot;
pub mod status;
pub mod status_cli;
pub mod tls;
pub mod traffic;
pub mod upstream;
pub mod watch;
pub mod worker;

pub use run::{run, Options, Running};
pub use runtime::{ConfigSource, Levee, StartError};
pub use worker::Workers;
