//! Retries with a budget.

pub mod backoff;
pub mod budget;
