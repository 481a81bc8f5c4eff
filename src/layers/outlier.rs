//! Passive outlier detection per endpoint.

pub mod ejection;
