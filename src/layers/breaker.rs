//! Circuit breaker per upstream.

pub mod state;
pub mod window;
