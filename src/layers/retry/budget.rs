//! Retry budget: retries may add at most a fixed share of recent traffic.
//!
//! Why not "retry up to N times"? A fixed count multiplies load by up to
//! `N + 1` precisely when a backend is struggling, and proxies stacked in
//! layers multiply again (3 tiers × 3 attempts = 27× at the bottom). That is a
//! *retry storm*: the retries themselves keep the backend down. A budget
//! (as in Finagle, linkerd and tower's `TpsBudget`) instead lets retries add at
//! most `ratio` of the original requests seen over the last `ttl`, plus a small
//! floor of `min_per_sec` so quiet services can still retry at all. Sporadic
//! failures are retried as before; in a sustained outage retries fade out to
//! that floor on their own.
//!
//! Accounting is in integer milli-retries, so a ratio like 0.2 is exact (100
//! requests buy exactly 20 retries) and concurrent withdrawals can be settled
//! with a compare-and-swap on a single total.
//!
//! Why not tower's `TpsBudget`, which is the same idea: the status page reports each route's
//! budget (`budget_balance` in `/status`, from [`RetryBudget::balance`]) and `TpsBudget` offers
//! only `deposit` and `withdraw`; and here the clock is passed in, so the unit tests below step
//! it instead of sleeping.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// Slots of the sliding window: entries expire between `ttl * 9/10` and `ttl`
/// after they were made.
const SLOTS: usize = 10;
/// Cost of one retry, in milli-retries.
const UNIT: i64 = 1000;
/// Ratios above this are meaningless and would risk overflowing the counters.
const MAX_RATIO: f64 = 1000.0;

/// A route's retry budget, shared by its workers; see the module docs.
#[derive(Debug)]
pub struct RetryBudget {
    origin: Instant,
    slot_ns: u64,
    /// Milli-retries earned by one original request.
    deposit_amount: i64,
    /// Milli-retries available on top of deposits (`min_per_sec` over `ttl`).
    reserve: i64,
    /// Generation (slot count since `origin`) the slots currently describe.
    generation: AtomicU64,
    /// Net milli-retries (deposits minus withdrawals) made during each slot.
    slots: [AtomicI64; SLOTS],
    /// Sum of `slots`, kept separately so a withdrawal is one CAS, not a scan.
    total: AtomicI64,
    /// Serialises expiring slots, which happens at most once per slot width.
    rotation: Mutex<()>,
}

impl RetryBudget {
    /// A budget letting retries add `ratio` of the requests deposited in the last
    /// `ttl`, plus `min_per_sec` retries per second (accrued over `ttl`).
    ///
    /// A NaN or negative `ratio` counts as 0; ratios above 1000 are capped.
    pub fn new(ratio: f64, min_per_sec: u32, ttl: Duration, now: Instant) -> Self {
        let deposit_amount = if ratio > 0.0 {
            (ratio.min(MAX_RATIO) * UNIT as f64).round() as i64
        } else {
            0
        };
        // min_per_sec retries/s over ttl ms is exactly min_per_sec * ttl_ms milli-retries.
        let reserve = (u128::from(min_per_sec) * ttl.as_millis()).min(i64::MAX as u128 / 4) as i64;
        let slot_ns = u64::try_from(ttl.as_nanos() / SLOTS as u128)
            .unwrap_or(u64::MAX)
            .max(1);
        RetryBudget {
            origin: now,
            slot_ns,
            deposit_amount,
            reserve,
            generation: AtomicU64::new(0),
            slots: Default::default(),
            total: AtomicI64::new(0),
            rotation: Mutex::new(()),
        }
    }

    /// Records an original (non-retry) request, which earns `ratio` of a retry.
    pub fn deposit(&self, now: Instant) {
        if self.deposit_amount == 0 {
            return;
        }
        let slot = self.sync(now);
        self.slots[slot].fetch_add(self.deposit_amount, Ordering::AcqRel);
        self.total.fetch_add(self.deposit_amount, Ordering::AcqRel);
    }

    /// Tries to pay for one retry; `false` means the budget is exhausted and the
    /// request should fail rather than be retried.
    pub fn withdraw(&self, now: Instant) -> bool {
        let slot = self.sync(now);
        let mut total = self.total.load(Ordering::Acquire);
        loop {
            if total.saturating_add(self.reserve) < UNIT {
                return false;
            }
            match self.total.compare_exchange_weak(
                total,
                total - UNIT,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => total = actual,
            }
        }
        // The total already accounts for this; a rotation in between merely
        // files the withdrawal under a newer slot, which expires it later
        // (the conservative direction).
        self.slots[slot].fetch_sub(UNIT, Ordering::AcqRel);
        true
    }

    /// Retries currently affordable (fractional). It can dip below zero for a
    /// while when deposits age out before the retries they paid for.
    pub fn balance(&self, now: Instant) -> f64 {
        self.sync(now);
        let milli = self
            .total
            .load(Ordering::Acquire)
            .saturating_add(self.reserve);
        milli as f64 / UNIT as f64
    }

    /// Expires slots older than `ttl` and returns the slot index to write to.
    fn sync(&self, now: Instant) -> usize {
        let elapsed = u64::try_from(now.saturating_duration_since(self.origin).as_nanos())
            .unwrap_or(u64::MAX);
        let generation = elapsed / self.slot_ns;
        let mut current = self.generation.load(Ordering::Acquire);
        if generation > current {
            self.rotate(generation);
            current = self.generation.load(Ordering::Acquire);
        }
        // A caller whose `now` lags another thread's writes into the newest slot
        // rather than into one that may already hold a later generation.
        (current.max(generation) % SLOTS as u64) as usize
    }

    fn rotate(&self, generation: u64) {
        let _guard = self.rotation.lock();
        let current = self.generation.load(Ordering::Acquire);
        if generation <= current {
            return;
        }
        let stale = (generation - current).min(SLOTS as u64);
        for step in 1..=stale {
            let idx = ((current + step) % SLOTS as u64) as usize;
            let expired = self.slots[idx].swap(0, Ordering::AcqRel);
            self.total.fetch_sub(expired, Ordering::AcqRel);
        }
        // Published only after clearing, so lock-free callers that see the new
        // generation never write into a slot that is about to be wiped.
        self.generation.store(generation, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::time::advance;

    const TTL: Duration = Duration::from_secs(10);

    fn withdraw_all(budget: &RetryBudget, now: Instant) -> usize {
        let mut n = 0;
        while budget.withdraw(now) {
            n += 1;
            assert!(n <= 1_000_000, "budget never runs out");
        }
        n
    }

    #[test]
    fn is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RetryBudget>();
    }

    #[tokio::test(start_paused = true)]
    async fn ratio_of_deposits_is_exact() {
        let budget = RetryBudget::new(0.2, 0, TTL, Instant::now());
        let now = Instant::now();
        assert!(!budget.withdraw(now));
        for _ in 0..100 {
            budget.deposit(now);
        }
        assert_eq!(budget.balance(now), 20.0);
        assert_eq!(withdraw_all(&budget, now), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn exhaustion_returns_false_until_more_deposits() {
        let budget = RetryBudget::new(0.5, 0, TTL, Instant::now());
        let now = Instant::now();
        for _ in 0..4 {
            budget.deposit(now);
        }
        assert!(budget.withdraw(now));
        assert!(budget.withdraw(now));
        assert!(!budget.withdraw(now));
        assert!(!budget.withdraw(now));
        assert_eq!(budget.balance(now), 0.0);
        budget.deposit(now);
        assert!(!budget.withdraw(now), "half a retry is not a retry");
        budget.deposit(now);
        assert!(budget.withdraw(now));
    }

    #[tokio::test(start_paused = true)]
    async fn min_per_sec_allows_retries_without_traffic() {
        let budget = RetryBudget::new(0.2, 10, TTL, Instant::now());
        assert_eq!(budget.balance(Instant::now()), 100.0);
        assert_eq!(withdraw_all(&budget, Instant::now()), 100);
        // The withdrawals age out with the window, restoring the reserve.
        advance(TTL).await;
        assert_eq!(withdraw_all(&budget, Instant::now()), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_age_out_after_ttl() {
        let budget = RetryBudget::new(0.2, 0, TTL, Instant::now());
        for _ in 0..100 {
            budget.deposit(Instant::now());
        }
        advance(TTL - Duration::from_nanos(1)).await;
        assert_eq!(budget.balance(Instant::now()), 20.0);
        assert!(budget.withdraw(Instant::now()));
        advance(Duration::from_nanos(1)).await;
        // Deposits expired; the retry just taken is still on the books.
        assert_eq!(budget.balance(Instant::now()), -1.0);
        assert!(!budget.withdraw(Instant::now()));
        advance(TTL).await;
        assert_eq!(budget.balance(Instant::now()), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn window_slides() {
        let budget = RetryBudget::new(1.0, 0, TTL, Instant::now());
        for _ in 0..10 {
            budget.deposit(Instant::now());
            advance(Duration::from_secs(1)).await;
        }
        // t = 10s: the deposit from t = 0 has just expired, nine remain.
        assert_eq!(budget.balance(Instant::now()), 9.0);
        advance(Duration::from_secs(5)).await;
        assert_eq!(budget.balance(Instant::now()), 4.0);
        // A long idle gap clears everything at once.
        advance(Duration::from_secs(3600)).await;
        assert_eq!(budget.balance(Instant::now()), 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn lagging_now_and_degenerate_params_do_not_panic() {
        let start = Instant::now();
        for budget in [
            RetryBudget::new(f64::NAN, 0, Duration::ZERO, start),
            RetryBudget::new(-1.0, u32::MAX, Duration::MAX, start),
            RetryBudget::new(f64::INFINITY, 5, Duration::from_nanos(3), start),
        ] {
            for i in 0..50u64 {
                let now = start + Duration::from_millis(i * 997);
                budget.deposit(now);
                budget.withdraw(now);
                // An older `now` from a slower task.
                budget.deposit(start);
                budget.withdraw(start);
                budget.balance(now);
            }
        }
        let budget = RetryBudget::new(0.0, 0, TTL, start);
        budget.deposit(start);
        assert!(!budget.withdraw(start));
    }

    #[test]
    fn concurrent_withdrawals_never_overspend() {
        let now = Instant::now();
        let budget = Arc::new(RetryBudget::new(0.2, 0, TTL, now));
        for _ in 0..1000 {
            budget.deposit(now);
        }
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let budget = Arc::clone(&budget);
                std::thread::spawn(move || (0..100).filter(|_| budget.withdraw(now)).count())
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 200);
    }
}
