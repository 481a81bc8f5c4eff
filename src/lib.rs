//! levee: a reverse proxy whose job is protecting the backends behind it.
#![forbid(unsafe_code)]

pub mod layers;
