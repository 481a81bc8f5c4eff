//! The request path: from a client's request to an upstream's response (or levee's own answer).

pub mod access_log;
pub mod forward;
pub mod framing;
pub mod path;
pub mod request_id;
pub mod respond;
pub mod route;
pub mod split;
pub mod stack;
pub mod tunnel;
