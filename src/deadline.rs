//! Deadlines that cannot overflow. `Instant + Duration` panics when the sum leaves the clock's
//! range, and with `panic = "abort"` one such request ends the process. Config durations are
//! bounded at validation (10 years), but deadlines also add values from peers (a Redis
//! `retry_after`) and sums of several settings, so every deadline is computed here.

use std::time::Duration;
use tokio::time::Instant;

/// About 30 years: "never" for a deadline, and still far from the clock's end.
const FAR: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// `now + d`, or a deadline far in the future when the sum would overflow.
pub fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_overflows() {
        let now = Instant::now();
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert!(after(now, Duration::MAX) > now + Duration::from_secs(3600 * 24 * 365));
        assert!(after(now, Duration::from_secs(18_000_000_000_000_000_000)) > now);
    }
}
