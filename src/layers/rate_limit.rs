//! Rate limiting per route.

pub mod gcra;
