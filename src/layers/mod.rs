//! One protection per module, each a tower `Layer` + `Service` over shared, reload-surviving state.

pub mod breaker;
pub mod outlier;
pub mod rate_limit;
pub mod retry;
