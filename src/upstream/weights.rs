//! Endpoint weights (`endpoints = ["a:80", { address = "b:80", weight = 3 }]`) as the balancers
//! use them. Endpoints with equal weights need none of this: the balancers then run exactly as
//! they did before weights existed.
//!
//! - round robin: a cycle of `total weight` slots in which endpoint `i` owns `weight[i]`
//!   consecutive slots; the k-th pick takes slot `k × stride mod total`, with `stride` coprime to
//!   the total, so each cycle visits every slot once (exact proportions) and the visits to one
//!   endpoint are spread over the cycle instead of coming in a row.
//! - p2c: both candidates are drawn with probability proportional to weight, and the one with
//!   fewer in-flight requests per unit of weight wins. With no load both are even and the first
//!   draw wins, so idle traffic splits exactly by weight; under load a heavier endpoint is
//!   allowed proportionally more outstanding requests.

/// Cumulative weights of an upstream's endpoints.
#[derive(Debug)]
pub struct WeightTable {
    /// `ends[i]`: the sum of the weights of endpoints `0..=i`.
    ends: Box<[u64]>,
    total: u64,
    stride: u64,
}

impl WeightTable {
    /// `None` when every endpoint has the same weight (or there are none).
    pub fn new(weights: &[u32]) -> Option<WeightTable> {
        let first = *weights.first()?;
        if weights.iter().all(|w| *w == first) {
            return None;
        }
        let mut sum = 0u64;
        let ends: Box<[u64]> = weights
            .iter()
            .map(|w| {
                sum += u64::from((*w).max(1));
                sum
            })
            .collect();
        let total = sum;
        // Near the golden section of the total, and coprime to it.
        let mut stride = ((total as f64) * 0.618).round().max(1.0) as u64;
        while gcd(stride, total) != 1 {
            stride += 1;
        }
        Some(WeightTable {
            ends,
            total,
            stride,
        })
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// The endpoint owning position `r` (taken modulo the total weight).
    #[inline]
    pub fn at(&self, r: u64) -> usize {
        let r = r % self.total.max(1);
        self.ends.partition_point(|end| *end <= r)
    }

    /// A random endpoint, drawn with probability proportional to its weight.
    #[inline]
    pub fn sample(&self) -> usize {
        self.at(fastrand::u64(..self.total.max(1)))
    }

    /// The endpoint for the `k`-th round-robin pick.
    #[inline]
    pub fn round_robin(&self, k: usize) -> usize {
        let slot = (k as u128 * u128::from(self.stride)) % u128::from(self.total.max(1));
        self.at(slot as u64)
    }

    /// `endpoints[i]`'s weight.
    pub fn weight(&self, i: usize) -> u64 {
        let end = self.ends.get(i).copied().unwrap_or(0);
        let start = match i.checked_sub(1) {
            Some(j) => self.ends.get(j).copied().unwrap_or(0),
            None => 0,
        };
        end - start
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_weights_need_no_table() {
        assert!(WeightTable::new(&[1, 1, 1]).is_none());
        assert!(WeightTable::new(&[5, 5]).is_none());
        assert!(WeightTable::new(&[]).is_none());
    }

    #[test]
    fn round_robin_gives_exact_proportions_per_cycle_and_spreads_them() {
        let t = WeightTable::new(&[1, 3]).unwrap_or_else(|| panic!("table"));
        let picks: Vec<usize> = (0..4).map(|k| t.round_robin(k)).collect();
        assert_eq!(picks.iter().filter(|p| **p == 0).count(), 1);
        assert_eq!(picks.iter().filter(|p| **p == 1).count(), 3);
        let t = WeightTable::new(&[2, 3, 5]).unwrap_or_else(|| panic!("table"));
        let mut counts = [0; 3];
        let mut longest_run = 0;
        let mut run = 0;
        let mut last = usize::MAX;
        for k in 0..100 {
            let p = t.round_robin(k);
            counts[p] += 1;
            run = if p == last { run + 1 } else { 1 };
            longest_run = longest_run.max(run);
            last = p;
        }
        assert_eq!(counts, [20, 30, 50]);
        // The weight-5 endpoint never gets its 5 slots in a row.
        assert!(longest_run < 5, "longest run {longest_run}");
    }

    #[test]
    fn positions_map_to_their_owner() {
        let t = WeightTable::new(&[1, 3, 2]).unwrap_or_else(|| panic!("table"));
        let owners: Vec<usize> = (0..6).map(|r| t.at(r)).collect();
        assert_eq!(owners, [0, 1, 1, 1, 2, 2]);
        assert_eq!((t.weight(0), t.weight(1), t.weight(2)), (1, 3, 2));
    }
}
