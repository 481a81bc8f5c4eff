//! One protection per module, each a tower `Layer` + `Service` over shared, reload-surviving state.
//! A route's stack composes them in the order `proxy::stack` documents.

pub mod breaker;
pub mod concurrency;
pub mod outlier;
pub mod rate_limit;
pub mod retry;
