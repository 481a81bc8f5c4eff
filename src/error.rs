//! Every failure levee answers for, in one place. Each is a [`ProxyError`] variant; its status,
//! `x-levee-error` kind and `retry-after` come from exhaustive matches below, so adding a variant
//! without deciding how it looks to a client does not compile. `proxy/respond.rs` renders them.

use http::{HeaderValue, StatusCode};
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where a failure came from, as Pingora's errors record it: the retry policy and the breaker ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client sent something wrong, or too much, too fast.
    Downstream,
    /// The upstream failed to connect, answer or finish.
    Upstream,
    /// levee itself refused to forward (breaker, limits), to protect the upstream.
    Protective,
}

/// A failure levee answers for instead of the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches this request")]
    NoRoute,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    #[error("request headers too large")]
    HeadersTooLarge,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("rate limit exceeded")]
    RateLimited {
        retry_after: Duration,
        /// The IETF `ratelimit` and `ratelimit-policy` header values.
        ratelimit: Option<(HeaderValue, HeaderValue)>,
    },
    #[error("circuit breaker for upstream is open")]
    CircuitOpen { retry_after: Duration },
    #[error("every endpoint of the upstream is ejected or unhealthy")]
    NoHealthyEndpoint { retry_after: Duration },
    #[error("upstream concurrency limit reached")]
    Overloaded,
    #[error("cannot connect to upstream: {0}")]
    UpstreamConnect(BoxError),
    #[error("upstream connection reset: {0}")]
    UpstreamReset(BoxError),
    /// The upstream answered, but beyond the limits levee is configured to accept (response
    /// head size, header count): a deployment mismatch, not a sick upstream.
    #[error("upstream response refused: {0}")]
    UpstreamProtocol(BoxError),
    #[error("upstream timed out")]
    UpstreamTimeout,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProxyError::CircuitOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::NoHealthyEndpoint { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamConnect(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamReset(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamProtocol(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `x-levee-error` value, part of the public contract.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no_route",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::HeadersTooLarge => "headers_too_large",
            ProxyError::BodyTooLarge => "body_too_large",
            ProxyError::RateLimited { .. } => "rate_limited",
            ProxyError::CircuitOpen { .. } => "circuit_open",
            ProxyError::NoHealthyEndpoint { .. } => "no_healthy_endpoint",
            ProxyError::Overloaded => "overloaded",
            ProxyError::UpstreamConnect(_) => "upstream_connect",
            ProxyError::UpstreamReset(_) => "upstream_reset",
            ProxyError::UpstreamProtocol(_) => "upstream_protocol",
            ProxyError::UpstreamTimeout => "upstream_timeout",
        }
    }

    /// Every [`ProxyError::kind`], so the errors counter can export a zero for each before it
    /// first happens. A test checks that it lists every variant's kind.
    pub const KINDS: [&'static str; 13] = [
        "no_route",
        "method_not_allowed",
        "bad_request",
        "headers_too_large",
        "body_too_large",
        "rate_limited",
        "circuit_open",
        "no_healthy_endpoint",
        "overloaded",
        "upstream_connect",
        "upstream_reset",
        "upstream_timeout",
        "upstream_protocol",
    ];

    pub fn side(&self) -> Side {
        match self {
            ProxyError::NoRoute
            | ProxyError::MethodNotAllowed
            | ProxyError::BadRequest(_)
            | ProxyError::HeadersTooLarge
            | ProxyError::BodyTooLarge
            | ProxyError::RateLimited { .. } => Side::Downstream,
            ProxyError::CircuitOpen { .. }
            | ProxyError::NoHealthyEndpoint { .. }
            | ProxyError::Overloaded => Side::Protective,
            ProxyError::UpstreamConnect(_)
            | ProxyError::UpstreamReset(_)
            | ProxyError::UpstreamProtocol(_)
            | ProxyError::UpstreamTimeout => Side::Upstream,
        }
    }

    /// Whether the upstream's health should be charged with this failure (breaker, ejection).
    /// A response beyond levee's header limits is not: the upstream is healthy, and ejecting or
    /// tripping on it would turn one oversized answer into an outage.
    pub fn is_upstream_failure(&self) -> bool {
        self.side() == Side::Upstream && !matches!(self, ProxyError::UpstreamProtocol(_))
    }

    /// How long a client should wait before trying again, where levee knows.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProxyError::RateLimited { retry_after, .. }
            | ProxyError::CircuitOpen { retry_after }
            | ProxyError::NoHealthyEndpoint { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One value of each variant. The match has no `_` arm, so a new variant does not compile
    /// until it is added here, and then the test below checks that `KINDS` names its kind.
    fn one_of_each() -> Vec<ProxyError> {
        let d = Duration::from_secs(1);
        let all = vec![
            ProxyError::NoRoute,
            ProxyError::MethodNotAllowed,
            ProxyError::BadRequest("x"),
            ProxyError::HeadersTooLarge,
            ProxyError::BodyTooLarge,
            ProxyError::RateLimited {
                retry_after: d,
                ratelimit: None,
            },
            ProxyError::CircuitOpen { retry_after: d },
            ProxyError::NoHealthyEndpoint { retry_after: d },
            ProxyError::Overloaded,
            ProxyError::UpstreamConnect("x".into()),
            ProxyError::UpstreamReset("x".into()),
            ProxyError::UpstreamTimeout,
            ProxyError::UpstreamProtocol("x".into()),
        ];
        for e in &all {
            match e {
                ProxyError::NoRoute
                | ProxyError::MethodNotAllowed
                | ProxyError::BadRequest(_)
                | ProxyError::HeadersTooLarge
                | ProxyError::BodyTooLarge
                | ProxyError::RateLimited { .. }
                | ProxyError::CircuitOpen { .. }
                | ProxyError::NoHealthyEndpoint { .. }
                | ProxyError::Overloaded
                | ProxyError::UpstreamConnect(_)
                | ProxyError::UpstreamReset(_)
                | ProxyError::UpstreamTimeout
                | ProxyError::UpstreamProtocol(_) => {}
            }
        }
        all
    }

    #[test]
    fn kinds_lists_the_kind_of_every_variant_once() {
        let mut kinds: Vec<_> = one_of_each().iter().map(ProxyError::kind).collect();
        kinds.sort_unstable();
        kinds.dedup();
        let mut listed = ProxyError::KINDS.to_vec();
        listed.sort_unstable();
        assert_eq!(kinds, listed);
    }
}
