//! What a route matches and how it changes or answers a request, as settings the config builds
//! and the request path applies: matchers (`matcher`), header and path rewrites (`rewrite`),
//! redirects and direct responses (`redirect`), one host's routes with their regexes compiled into
//! sets (`regex_set`), and which routes can never match (`shadow`).
//! It imports nothing else of levee's, so `config` (below the request path) can own these types.

pub mod matcher;
pub mod redirect;
pub mod regex_set;
pub mod rewrite;
pub mod shadow;
