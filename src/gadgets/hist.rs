//! Latency histograms the kernel keeps (bpf/hist.h): per key, an exact count and sum and
//! log2 buckets of microseconds. Slot 0 holds 0 µs (under one), slot k holds
//! [2^(k-1), 2^k - 1] µs.

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value};

use super::decode::{At, Layout};

/// Bytes of struct hist_key.
pub const KEY_SIZE: usize = 24;
pub const SLOTS: usize = 32;
/// Entries of the `hists` table (bpf/hist.h's `max_entries`).
pub const TABLE_ENTRIES: u32 = 4096;

const ID: At = At::new(0, 4);
const KIND: At = At::new(4, 4);
const COMM: At = At::new(8, 16);

/// struct hist_key, the key every histogram gadget decodes.
pub const KEY_LAYOUT: Layout = Layout {
    btf_struct: "hist_key",
    skip: 0,
    fields: &[("id", ID), ("kind", KIND), ("comm", COMM)],
};

const COUNT: At = At::new(0, 8);
const SUM_NS: At = At::new(8, 8);
const SLOT: At = At::new(16, 8 * SLOTS);

/// struct hist, the histograms' values.
pub const VALUE_LAYOUT: Layout = Layout {
    btf_struct: "hist",
    skip: 0,
    fields: &[
        ("count", COUNT),
        ("sum_ns", SUM_NS),
        ("slots", SLOT),
        ("slots.0", SLOT.index(0, 8)),
        ("slots.31", SLOT.index(SLOTS - 1, 8)),
    ],
};

/// One histogram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hist {
    pub count: u64,
    pub sum_ns: u64,
    pub slots: [u64; SLOTS],
}

impl Default for Hist {
    fn default() -> Self {
        Self {
            count: 0,
            sum_ns: 0,
            slots: [0; SLOTS],
        }
    }
}

/// The fields of struct hist_key, for a gadget's decoder.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    pub id: u32,
    pub kind: u32,
    pub comm: &'a [u8],
}

impl Key<'_> {
    pub fn parse(b: &[u8]) -> Key<'_> {
        Key {
            id: ID.u32(b),
            kind: KIND.u32(b),
            comm: COMM.bytes(b),
        }
    }

    pub fn comm(&self) -> String {
        At::new(0, self.comm.len()).str(self.comm)
    }
}

/// Decodes a per-process key (`pid`, `comm`); pid 0 is the one key of a gadget asked for
/// no per-process grouping, and decodes to nothing.
pub fn decode_process_key(b: &[u8], out: &mut Map<String, Value>) {
    let key = Key::parse(b);
    if key.id != 0 {
        out.insert("pid".into(), key.id.into());
        out.insert("comm".into(), key.comm().into());
    }
}

impl Hist {
    /// Reads struct hist.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < SLOT.offset + SLOT.size {
            return None;
        }
        let mut h = Hist {
            count: COUNT.u64(b),
            sum_ns: SUM_NS.u64(b),
            ..Hist::default()
        };
        for (i, slot) in h.slots.iter_mut().enumerate() {
            *slot = SLOT.index(i, 8).u64(b);
        }
        Some(h)
    }

    pub fn merge(&mut self, other: &Hist) {
        self.count = self.count.saturating_add(other.count);
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        for (a, b) in self.slots.iter_mut().zip(other.slots.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    /// The microseconds slot `i` covers, both ends included.
    pub fn bounds(i: usize) -> (u64, u64) {
        match i {
            0 => (0, 0),
            _ => (1 << (i - 1), (1u64 << i) - 1),
        }
    }

    /// The upper end of the bucket holding the `q` quantile (0 < q <= 1): the latency at or
    /// below which at least that share of observations fall.
    pub fn quantile_bound(&self, q: f64) -> u64 {
        let slot_total: u64 = self.slots.iter().sum();
        if slot_total == 0 {
            return 0;
        }
        let rank = ((slot_total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.slots.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::bounds(i).1;
            }
        }
        Self::bounds(SLOTS - 1).1
    }

    /// From the first to the last non-empty slot: index, bounds, count.
    fn filled(&self) -> impl Iterator<Item = (usize, (u64, u64), u64)> + '_ {
        let first = self.slots.iter().position(|n| *n > 0).unwrap_or(SLOTS);
        let last = self.slots.iter().rposition(|n| *n > 0).unwrap_or(0);
        // Empty (first past last) when every slot is.
        (first..=last).map(|i| (i, Self::bounds(i), self.slots[i]))
    }

    /// The result row: non-empty range of buckets, exact mean, quantile bounds.
    pub fn row(&self, key: Map<String, Value>) -> HistRow {
        let buckets = self
            .filled()
            .map(|(_, (low_us, high_us), count)| Bucket {
                low_us,
                high_us,
                count,
            })
            .collect();
        HistRow {
            key,
            count: self.count,
            avg_us: if self.count == 0 {
                0.0
            } else {
                (self.sum_ns as f64 / self.count as f64 / 1000.0 * 100.0).round() / 100.0
            },
            p50_us: self.quantile_bound(0.50),
            p90_us: self.quantile_bound(0.90),
            p99_us: self.quantile_bound(0.99),
            buckets,
        }
    }
}

/// One log2 bucket.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Bucket {
    pub low_us: u64,
    pub high_us: u64,
    pub count: u64,
}

/// A histogram as a result shows it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct HistRow {
    /// The group's field values (empty: everything traced).
    pub key: Map<String, Value>,
    /// Observations (exact).
    pub count: u64,
    /// Mean latency (exact, from the kernel's sum).
    pub avg_us: f64,
    /// Upper end of the bucket holding the median: half took at most this long.
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    /// From the first to the last non-empty bucket, in order.
    pub buckets: Vec<Bucket>,
}

/// One histogram of a value (a size, a count: not a time), log2 buckets of the value.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ValueRow {
    /// The group's field values (empty: everything traced).
    pub key: Map<String, Value>,
    /// Observations (exact).
    pub count: u64,
    /// Sum and mean of the values (exact; values below 1 count as 0).
    pub sum: u64,
    pub avg: f64,
    /// Upper end of the bucket holding the median: half were at most this (`null`: in the
    /// last bucket, which has no upper end).
    pub p50: Option<u64>,
    pub p90: Option<u64>,
    pub p99: Option<u64>,
    /// From the first to the last non-empty bucket, in order.
    pub buckets: Vec<ValueBucket>,
}

/// One log2 bucket of values.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ValueBucket {
    pub low: u64,
    /// `null` for the last bucket: it holds every value from `low` up.
    pub high: Option<u64>,
    pub count: u64,
}

impl ValueRow {
    pub fn new(key: Map<String, Value>, h: &Hist) -> Self {
        let buckets = h
            .filled()
            .map(|(i, (low, high), count)| ValueBucket {
                low,
                high: (i < SLOTS - 1).then_some(high),
                count,
            })
            .collect();
        ValueRow {
            key,
            count: h.count,
            sum: h.sum_ns,
            avg: if h.count == 0 {
                0.0
            } else {
                (h.sum_ns as f64 / h.count as f64 * 100.0).round() / 100.0
            },
            p50: bounded(h.quantile_bound(0.50)),
            p90: bounded(h.quantile_bound(0.90)),
            p99: bounded(h.quantile_bound(0.99)),
            buckets,
        }
    }
}

/// A quantile's bound, unless it is the last bucket's (which has none).
fn bounded(bound: u64) -> Option<u64> {
    (bound != Hist::bounds(SLOTS - 1).1).then_some(bound)
}

/// Histograms merged by the values of `group_by`, largest count first.
pub fn grouped(entries: &[(Map<String, Value>, Hist)], group_by: &[String]) -> Vec<HistRow> {
    merged(entries, group_by)
        .into_iter()
        .map(|(key, h)| h.row(key))
        .collect()
}

/// Histograms merged by the values of `group_by`, largest count first.
pub fn merged(
    entries: &[(Map<String, Value>, Hist)],
    group_by: &[String],
) -> Vec<(Map<String, Value>, Hist)> {
    let mut groups: HashMap<String, (Map<String, Value>, Hist)> = HashMap::new();
    for (record, hist) in entries {
        let key: Map<String, Value> = group_by
            .iter()
            .map(|f| (f.clone(), record.get(f).cloned().unwrap_or(Value::Null)))
            .collect();
        let id = Value::Object(key.clone()).to_string();
        groups
            .entry(id)
            .or_insert_with(|| (key, Hist::default()))
            .1
            .merge(hist);
    }
    let mut rows: Vec<_> = groups.into_iter().collect();
    rows.sort_by(|a, b| b.1.1.count.cmp(&a.1.1.count).then_with(|| a.0.cmp(&b.0)));
    rows.into_iter().map(|(_, row)| row).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(slots: &[(usize, u64)], sum_ns: u64) -> Hist {
        let mut h = Hist::default();
        for (i, n) in slots {
            h.slots[*i] = *n;
            h.count += n;
        }
        h.sum_ns = sum_ns;
        h
    }

    #[test]
    fn buckets_are_log2_microseconds() {
        assert_eq!(Hist::bounds(0), (0, 0));
        assert_eq!(Hist::bounds(1), (1, 1));
        assert_eq!(Hist::bounds(2), (2, 3));
        assert_eq!(Hist::bounds(11), (1024, 2047));
    }

    #[test]
    fn rows_keep_the_nonempty_range_exact_mean_and_quantile_bounds() {
        // 90 observations in 2-3 µs, 10 in 1024-2047 µs.
        let h = hist(&[(2, 90), (11, 10)], 90 * 2_500 + 10 * 1_500_000);
        let row = h.row(Map::new());
        assert_eq!(row.count, 100);
        assert_eq!(row.buckets.len(), 10);
        assert_eq!(row.buckets[0].low_us, 2);
        assert_eq!(row.buckets[9].count, 10);
        assert_eq!(row.p50_us, 3);
        assert_eq!(row.p90_us, 3);
        assert_eq!(row.p99_us, 2047);
        assert_eq!(row.avg_us, 152.25);
    }

    #[test]
    fn value_rows_leave_the_last_bucket_open() {
        // 3 values of 100..127, 1 at 2^40 (in the last bucket).
        let mut h = hist(&[(7, 3), (SLOTS - 1, 1)], 3 * 100 + (1 << 40));
        let row = ValueRow::new(Map::new(), &h);
        assert_eq!((row.count, row.sum), (4, 3 * 100 + (1 << 40)));
        assert_eq!((row.p50, row.p99), (Some(127), None));
        let last = row.buckets.last().unwrap();
        assert_eq!((last.low, last.high, last.count), (1 << 30, None, 1));
        assert_eq!(row.buckets[0].high, Some(127));
        h.sum_ns = u64::MAX;
        h.merge(&hist(&[(1, 1)], 5));
        assert_eq!(h.sum_ns, u64::MAX, "sums saturate");
    }

    #[test]
    fn grouping_merges_by_the_chosen_fields() {
        let rec = |dev: &str, op: &str| {
            let mut m = Map::new();
            m.insert("device".into(), dev.into());
            m.insert("op".into(), op.into());
            m
        };
        let entries = vec![
            (rec("vda", "read"), hist(&[(3, 5)], 5_000)),
            (rec("vda", "write"), hist(&[(4, 7)], 7_000)),
            (rec("vdb", "write"), hist(&[(4, 1)], 1_000)),
        ];
        let rows = grouped(&entries, &["device".to_owned()]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].key["device"], "vda");
        assert_eq!(rows[0].count, 12);
        let all = grouped(&entries, &[]);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].count, 13);
        assert!(all[0].key.is_empty());
    }
}
