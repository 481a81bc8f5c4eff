//! Counters, gauges and histograms with one shard per worker (`crate::shard::Sharded`), summed
//! when scraped. The request path writes only its own worker's cache lines: with prometheus-client's
//! own types every request on every core wrote the same atomic (counters, gauges) or took the same
//! write lock (a histogram's `RwLock`), and those lines bounced between cores on every request.
//! The exposition is unchanged: these encode as the counter, gauge or histogram they replace.

use crate::shard::Sharded;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// A monotonic counter.
#[derive(Clone, Debug, Default)]
pub struct ShardedCounter(Arc<Sharded<AtomicU64>>);

impl ShardedCounter {
    #[inline]
    pub fn inc(&self) {
        self.0.local().fetch_add(1, Ordering::Relaxed);
    }

    /// The total over every worker.
    pub fn get(&self) -> u64 {
        self.0.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Each shard's count: index 0 the control (or only) runtime, then worker 1, 2, …
    pub fn per_worker(&self) -> Vec<u64> {
        self.0.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A gauge that only goes up and down by one (things open, things in flight): a worker's shard
/// may go negative (a connection opened on one runtime and closed on another); the sum is right.
#[derive(Clone, Debug, Default)]
pub struct ShardedGauge(Arc<Sharded<AtomicI64>>);

impl ShardedGauge {
    #[inline]
    pub fn inc(&self) {
        self.0.local().fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub fn dec(&self) {
        self.0.local().fetch_sub(1, Ordering::Relaxed);
    }

    /// The value over every worker.
    pub fn get(&self) -> i64 {
        self.0.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for ShardedGauge {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for ShardedGauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.get())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Cells of one histogram shard: the count, the sum (`f64` bits), then one per bucket (the
/// last one `+Inf`). Fixed so a shard is one padded array, not a pointer to another allocation.
const CELLS: usize = 32;
/// Upper bounds a histogram can have besides `+Inf`.
const MAX_BOUNDS: usize = CELLS - 3;

#[derive(Debug)]
struct HistogramShards {
    /// Upper bounds, ascending, without `+Inf`.
    bounds: Box<[f64]>,
    shards: Sharded<[AtomicU64; CELLS]>,
}

/// A histogram over fixed buckets.
#[derive(Clone, Debug)]
pub struct ShardedHistogram(Arc<HistogramShards>);

impl ShardedHistogram {
    /// A histogram over `bounds` (ascending; beyond [`MAX_BOUNDS`] they are ignored).
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        ShardedHistogram(Arc::new(HistogramShards {
            bounds: bounds.into_iter().take(MAX_BOUNDS).collect(),
            shards: Sharded::default(),
        }))
    }

    #[inline]
    pub fn observe(&self, v: f64) {
        let h = &*self.0;
        let cells = h.shards.local();
        let bucket = h.bounds.iter().take_while(|b| **b < v).count();
        cells[0].fetch_add(1, Ordering::Relaxed);
        // Only this worker writes this shard (or, without worker threads, a handful of
        // threads rarely at once): the update loop nearly always succeeds first time.
        let _ = cells[1].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
            Some((f64::from_bits(bits) + v).to_bits())
        });
        cells[2 + bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Sum, count and per-bucket counts (not cumulative) over every worker; the last bucket's
    /// bound is `f64::MAX`, which prometheus-client writes as `+Inf`.
    pub fn get(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let h = &*self.0;
        let mut sum = 0.0;
        let mut count = 0;
        let mut buckets: Vec<(f64, u64)> = h
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .map(|b| (b, 0))
            .collect();
        for cells in h.shards.iter() {
            count += cells[0].load(Ordering::Relaxed);
            sum += f64::from_bits(cells[1].load(Ordering::Relaxed));
            for (b, cell) in buckets.iter_mut().zip(&cells[2..]) {
                b.1 += cell.load(Ordering::Relaxed);
            }
        }
        (sum, count, buckets)
    }
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.get();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Registry;

    fn encode(register: impl FnOnce(&mut Registry)) -> String {
        let mut registry = Registry::with_prefix("levee");
        register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    /// The exposition is byte for byte what prometheus-client's own types write.
    #[test]
    fn encodes_as_the_metrics_it_replaces() {
        let bounds = || prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 17);
        let (ours, theirs) = (ShardedHistogram::new(bounds()), Histogram::new(bounds()));
        for v in [0.0001, 0.0005, 0.0007, 0.3, 2.5, 100.0] {
            ours.observe(v);
            theirs.observe(v);
        }
        let (oc, tc) = (
            ShardedCounter::default(),
            prometheus_client::metrics::counter::Counter::<u64>::default(),
        );
        let (og, tg) = (
            ShardedGauge::default(),
            prometheus_client::metrics::gauge::Gauge::<i64>::default(),
        );
        for _ in 0..3 {
            oc.inc();
            tc.inc();
            og.inc();
            tg.inc();
        }
        og.dec();
        tg.dec();
        let a = encode(|r| {
            r.register("d", "help", ours);
            r.register("c", "help", oc);
            r.register("g", "help", og);
        });
        let b = encode(|r| {
            r.register("d", "help", theirs);
            r.register("c", "help", tc);
            r.register("g", "help", tg);
        });
        assert_eq!(a, b);
        assert!(a.contains("levee_d_bucket{le=\"0.001\"} 3"), "{a}");
    }

    /// Every worker's shard counts: a sum over threads that each wrote their own.
    #[test]
    fn sums_the_shards_of_every_worker() {
        crate::shard::reserve_shards(3);
        let c = ShardedCounter::default();
        let h = ShardedHistogram::new([1.0]);
        std::thread::scope(|s| {
            for i in 1..=3 {
                let (c, h) = (c.clone(), h.clone());
                s.spawn(move || {
                    crate::shard::set_current(i);
                    for _ in 0..1000 {
                        c.inc();
                        h.observe(0.5);
                    }
                });
            }
        });
        assert_eq!(c.get(), 3000);
        let (sum, count, buckets) = h.get();
        assert_eq!((sum, count), (1500.0, 3000));
        assert_eq!(buckets, vec![(1.0, 3000), (f64::MAX, 0)]);
    }
}
