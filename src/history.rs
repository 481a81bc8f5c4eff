//! A short, fixed-size history for the dashboard: the last [`SLOTS`] seconds of two counters
//! (requests and failures for an upstream; requests and 429s for a route).
//!
//! Each counter of each slot is one `AtomicU64` packing the unix second it counts for (high 32
//! bits) with the count (low 32 bits). Recording is a load and a `fetch_add` — or, on the first
//! event of a new second, a compare-and-swap that claims the slot for that second and restarts
//! its count at one. A reader ignores slots tagged with another second, so a slot nobody wrote
//! to for a while reads as zero without anything clearing it. Memory is fixed: 60 × 2 × 8 bytes per worker.
//!
//! The clock is the wall clock (`SystemTime`): the history is for display only, and a wall-clock
//! step merely misplaces a few seconds of it.

use crate::shard::Sharded;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds of history kept.
pub const SLOTS: usize = 60;

/// The current unix second.
pub fn unix_second() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[inline]
fn tag(second: u64) -> u64 {
    (second & 0xffff_ffff) << 32
}

/// `ring[s % SLOTS][series]`: tag of the second in the high half, count in the low half.
type Ring = [[AtomicU64; 2]; SLOTS];

/// A 60-second ring of two per-second counters, one ring per worker (`crate::worker`): a
/// request writes its own worker's ring, a reader sums them.
pub struct History {
    slots: Sharded<Ring>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").finish_non_exhaustive()
    }
}

/// The last [`SLOTS`] seconds of both series, oldest first; the last entry is `end`, the current
/// (partial) second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub end: u64,
    pub total: Vec<u64>,
    pub marked: Vec<u64>,
}

impl History {
    pub fn new() -> Self {
        History {
            slots: Sharded::new(|| std::array::from_fn(|_| [AtomicU64::new(0), AtomicU64::new(0)])),
        }
    }

    /// Counts one event now; `marked` also counts it in the second series (a failure, a 429).
    #[inline]
    pub fn record(&self, marked: bool) {
        self.record_at(unix_second(), marked);
    }

    /// Counts one event in `second`.
    pub fn record_at(&self, second: u64, marked: bool) {
        let slot = &self.slots.local()[(second % SLOTS as u64) as usize];
        bump(&slot[0], second);
        if marked {
            bump(&slot[1], second);
        }
    }

    /// The history as of now.
    pub fn series(&self) -> Series {
        self.series_at(unix_second())
    }

    /// The [`SLOTS`] seconds ending with `end`, oldest first; seconds nobody recorded read zero.
    pub fn series_at(&self, end: u64) -> Series {
        let mut total = Vec::with_capacity(SLOTS);
        let mut marked = Vec::with_capacity(SLOTS);
        let first = end.saturating_sub(SLOTS as u64 - 1);
        for _ in 0..(SLOTS as u64 - (end - first + 1)) {
            total.push(0);
            marked.push(0);
        }
        for s in first..=end {
            let i = (s % SLOTS as u64) as usize;
            let (mut t, mut m) = (0, 0);
            for ring in self.slots.iter() {
                t += read(&ring[i][0], s);
                m += read(&ring[i][1], s);
            }
            total.push(t);
            marked.push(m);
        }
        Series { end, total, marked }
    }
}

#[inline]
fn read(cell: &AtomicU64, second: u64) -> u64 {
    let v = cell.load(Ordering::Relaxed);
    if v & !0xffff_ffff == tag(second) {
        v & 0xffff_ffff
    } else {
        0
    }
}

#[inline]
fn bump(cell: &AtomicU64, second: u64) {
    let want = tag(second);
    let mut v = cell.load(Ordering::Relaxed);
    loop {
        let have = v & !0xffff_ffff;
        if have == want {
            // 2^32 events in one second would carry into the tag; no proxy gets there.
            cell.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if have > want && have - want < tag(SLOTS as u64 * 1000) {
            // The slot already counts a later second: this event is too late to show.
            return;
        }
        match cell.compare_exchange_weak(v, want | 1, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(now) => v = now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_land_in_their_second_oldest_first() {
        let h = History::new();
        h.record_at(1_000, false);
        h.record_at(1_000, true);
        h.record_at(1_002, true);
        let s = h.series_at(1_002);
        assert_eq!(s.total.len(), SLOTS);
        assert_eq!(s.marked.len(), SLOTS);
        assert_eq!(&s.total[SLOTS - 3..], &[2, 0, 1]);
        assert_eq!(&s.marked[SLOTS - 3..], &[1, 0, 1]);
        assert!(s.total[..SLOTS - 3].iter().all(|&n| n == 0));
        assert_eq!(s.end, 1_002);
    }

    #[test]
    fn wraps_around_and_forgets_old_seconds() {
        let h = History::new();
        // Three full laps: every slot is reused twice.
        for sec in 5_000..5_000 + 3 * SLOTS as u64 {
            for _ in 0..(sec % 7) {
                h.record_at(sec, sec % 2 == 0);
            }
        }
        let end = 5_000 + 3 * SLOTS as u64 - 1;
        let s = h.series_at(end);
        for (i, sec) in (end + 1 - SLOTS as u64..=end).enumerate() {
            assert_eq!(s.total[i], sec % 7, "second {sec}");
            assert_eq!(s.marked[i], if sec % 2 == 0 { sec % 7 } else { 0 });
        }
        // A new second reuses the oldest slot from one.
        h.record_at(end + 1, false);
        let s = h.series_at(end + 1);
        assert_eq!(s.total[SLOTS - 1], 1);
        assert_eq!(s.total[SLOTS - 2], end % 7);
    }

    #[test]
    fn stale_slots_read_as_zero() {
        let h = History::new();
        for sec in 100..160 {
            h.record_at(sec, true);
        }
        // 30 s later, only the last 30 of those seconds are still in the window.
        let s = h.series_at(189);
        assert_eq!(s.total.iter().sum::<u64>(), 30);
        assert!(s.total[..30].iter().all(|&n| n == 1));
        assert!(s.total[30..].iter().all(|&n| n == 0));
        // Two minutes later, nothing.
        let s = h.series_at(400);
        assert_eq!(s.total.iter().sum::<u64>(), 0);
        assert_eq!(s.marked.iter().sum::<u64>(), 0);
    }

    #[test]
    fn late_events_for_a_reused_slot_are_dropped() {
        let h = History::new();
        h.record_at(1_060, false);
        h.record_at(1_000, false); // same slot, a lap too late
        assert_eq!(h.series_at(1_060).total[SLOTS - 1], 1);
    }

    #[test]
    fn early_clock_has_leading_zeros() {
        let h = History::new();
        h.record_at(3, false);
        let s = h.series_at(3);
        assert_eq!(s.total.len(), SLOTS);
        assert_eq!(s.total[SLOTS - 1], 1);
    }

    #[test]
    fn size_is_bounded() {
        // Per worker: one ring, nothing that grows.
        assert_eq!(std::mem::size_of::<Ring>(), SLOTS * 2 * 8);
        let h = History::new();
        for sec in 0..10_000 {
            h.record_at(sec, true);
        }
        assert_eq!(h.series_at(9_999).total.len(), SLOTS);
    }

    #[test]
    fn concurrent_recording_loses_nothing() {
        let h = Arc::new(History::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    // Every thread crosses the same second boundaries: the claims race.
                    for sec in 10_000..10_010u64 {
                        for i in 0..5_000 {
                            h.record_at(sec, (i + t) % 4 == 0);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = h.series_at(10_009);
        assert_eq!(&s.total[SLOTS - 10..], &[20_000; 10]);
        assert_eq!(&s.marked[SLOTS - 10..], &[5_000; 10]);
    }
}
