//! The query language of `map_dump`: fields addressed by dotted paths into key and value,
//! comparisons for `filter`, and the ordering `sort_by` ranks by.

use std::cmp::Ordering;

use serde_json::{Value, json};

use super::*;
use crate::ebpf::btf_reader::Located;
use crate::ebpf::maps::{self};
use crate::error::{Code, EbpfError};

/// A field reference compiled against the map's BTF.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub(crate) in_key: bool,
    pub(crate) loc: Located,
    /// Whole key/value of an integer or string type.
    pub(crate) whole: bool,
}

impl Field {
    pub(crate) fn compile(path: &str, dec: &Decoder<'_>) -> Result<Self, EbpfError> {
        let bad = |m: String| EbpfError::new(Code::InvalidArguments, m).with_context("field", path);
        let Some(btf) = dec.btf else {
            return Err(bad(format!(
                "map {} has no BTF, so its fields have no names; filter and sort need a map with BTF",
                dec.map.record.id
            )));
        };
        let mut parts: Vec<&str> = path.split('.').filter(|p| !p.is_empty()).collect();
        let in_key = match parts.first() {
            Some(&"key") => {
                parts.remove(0);
                true
            }
            Some(&"value") => {
                parts.remove(0);
                false
            }
            _ => false,
        };
        let root = if in_key { dec.key_type } else { dec.value_type };
        if root == 0 {
            return Err(bad(format!(
                "the map's {} has no BTF type",
                if in_key { "key" } else { "value" }
            )));
        }
        let loc = btf
            .locate(root, &parts)
            .map_err(|m| bad(format!("field `{path}`: {m}")))?;
        Ok(Self {
            in_key,
            loc,
            whole: parts.is_empty(),
        })
    }

    /// The field's value in an entry (per-CPU: summed over CPUs).
    pub(crate) fn get(&self, dec: &Decoder<'_>, key: &[u8], value: &[u8]) -> Value {
        let Some(btf) = dec.btf else {
            return Value::Null;
        };
        if self.in_key {
            return btf.decode_field(self.loc, key);
        }
        if maps::per_cpu(&dec.map.record.map_type) {
            let mut acc = btf.decode_field(self.loc, dec.map.cpu_slice(value, 0));
            for cpu in 1..dec.map.cpus {
                acc = add(
                    &acc,
                    &btf.decode_field(self.loc, dec.map.cpu_slice(value, cpu)),
                );
            }
            return acc;
        }
        let _ = self.whole;
        btf.decode_field(self.loc, value)
    }
}

/// A total order over decoded scalars: numbers by value, then strings, then the rest.
pub(crate) fn compare(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x.cmp(&y)
            } else if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x.cmp(&y)
            } else {
                x.as_f64()
                    .unwrap_or(0.0)
                    .total_cmp(&y.as_f64().unwrap_or(0.0))
            }
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(_), _) => Ordering::Less,
        (_, Value::Number(_)) => Ordering::Greater,
        _ => a.to_string().cmp(&b.to_string()),
    }
}

pub(crate) fn matches(op: Op, actual: &Value, wanted: &Value) -> bool {
    let wanted = match (actual, wanted) {
        // Numbers given as strings ("1000") compare as numbers.
        (Value::Number(_), Value::String(s)) => s
            .parse::<f64>()
            .map(|f| json!(f))
            .unwrap_or_else(|_| wanted.clone()),
        (Value::Bool(_), Value::Number(n)) => Value::Bool(n.as_u64() != Some(0)),
        _ => wanted.clone(),
    };
    let ord = compare(actual, &wanted);
    match op {
        Op::Eq => actual == &wanted || ord == Ordering::Equal && actual.is_number(),
        Op::Ne => !(actual == &wanted || ord == Ordering::Equal && actual.is_number()),
        Op::Gt => ord == Ordering::Greater,
        Op::Ge => ord != Ordering::Less,
        Op::Lt => ord == Ordering::Less,
        Op::Le => ord != Ordering::Greater,
        Op::Contains => match (actual, &wanted) {
            (Value::String(a), Value::String(w)) => a.contains(w.as_str()),
            (Value::Array(a), w) => a.contains(w),
            _ => false,
        },
        Op::Prefix => {
            matches!((actual, &wanted), (Value::String(a), Value::String(w)) if a.starts_with(w.as_str()))
        }
    }
}

/// An entry kept for the result, ordered by (sort value, key bytes) for a stable order.
pub(crate) struct Ranked {
    pub(crate) sort: Value,
    pub(crate) key: Vec<u8>,
    pub(crate) value: Vec<u8>,
    pub(crate) desc: bool,
}

impl Ranked {
    pub(crate) fn rank(&self, other: &Self) -> Ordering {
        let by_value = compare(&self.sort, &other.sort);
        let by_value = if self.desc {
            by_value.reverse()
        } else {
            by_value
        };
        by_value.then_with(|| self.key.cmp(&other.key))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.rank(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    /// Max-heap on rank: the heap top is the worst entry kept, evicted first.
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BinaryHeap;

    #[test]
    fn compare_is_a_total_order_over_scalars() {
        let ordered = [
            json!(-5),
            json!(0),
            json!(1.5),
            json!(2),
            json!(u64::MAX),
            json!(""),
            json!("a"),
            json!("b"),
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(compare(a, b), i.cmp(&j), "{a} vs {b}");
            }
        }
        // Large u64 values compare exactly, not through f64.
        assert_eq!(
            compare(&json!(u64::MAX), &json!(u64::MAX - 1)),
            Ordering::Greater
        );
        assert_eq!(compare(&json!(false), &json!(true)), Ordering::Less);
    }

    #[test]
    fn comparisons_by_operator() {
        let n = json!(1000);
        assert!(matches(Op::Eq, &n, &json!(1000)));
        assert!(
            matches(Op::Eq, &n, &json!("1000")),
            "numbers given as strings"
        );
        assert!(matches(Op::Eq, &n, &json!(1000.0)));
        assert!(!matches(Op::Ne, &n, &json!(1000)));
        assert!(matches(Op::Gt, &n, &json!(999)));
        assert!(!matches(Op::Gt, &n, &json!(1000)));
        assert!(matches(Op::Ge, &n, &json!(1000)));
        assert!(matches(Op::Lt, &json!(-1), &json!(0)));
        assert!(matches(Op::Le, &json!(0), &json!(0)));
        assert!(matches(
            Op::Contains,
            &json!("nginx-worker"),
            &json!("worker")
        ));
        assert!(!matches(Op::Contains, &n, &json!("1")));
        assert!(matches(Op::Contains, &json!([1, 2, 3]), &json!(2)));
        assert!(matches(Op::Prefix, &json!("10.0.0.1"), &json!("10.")));
        assert!(!matches(Op::Prefix, &json!("10.0.0.1"), &json!("0.")));
        assert!(
            matches(Op::Eq, &json!(true), &json!(1)),
            "bools from numbers"
        );
        assert!(matches(
            Op::Eq,
            &json!("TCP_ESTABLISHED"),
            &json!("TCP_ESTABLISHED")
        ));
        assert!(!matches(Op::Eq, &json!("a"), &json!(1)));
    }

    fn ranked(sort: Value, key: u8, desc: bool) -> Ranked {
        Ranked {
            sort,
            key: vec![key],
            value: Vec::new(),
            desc,
        }
    }

    #[test]
    fn the_heap_keeps_the_best_and_evicts_the_worst() {
        // Top 3 by descending value of 10 entries: the heap's top is the worst kept.
        let mut heap = BinaryHeap::new();
        for (k, v) in [5, 9, 1, 7, 3, 9, 2, 8, 6, 4].into_iter().enumerate() {
            heap.push(ranked(json!(v), k as u8, true));
            if heap.len() > 3 {
                heap.pop();
            }
        }
        let kept: Vec<(i64, u8)> = heap
            .into_sorted_vec()
            .into_iter()
            .map(|r| (r.sort.as_i64().unwrap(), r.key[0]))
            .collect();
        // Ties (two 9s) break by key bytes, so pages are stable.
        assert_eq!(kept, [(9, 1), (9, 5), (8, 7)]);
    }

    #[test]
    fn ascending_order_ranks_small_first() {
        let a = ranked(json!(1), 0, false);
        let b = ranked(json!(2), 0, false);
        assert_eq!(a.rank(&b), Ordering::Less);
        let a = ranked(json!(1), 0, true);
        assert_eq!(a.rank(&ranked(json!(2), 0, true)), Ordering::Greater);
    }
}
