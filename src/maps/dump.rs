//! The scan behind `map_dump`: every entry read (exact totals), filtered, ranked or paged,
//! and only the entries returned kept in memory.

use std::collections::BinaryHeap;
use std::time::Instant;

use serde_json::Value;

use super::*;
use crate::call::CallContext;
use crate::ebpf::maps::OpenMap;
use crate::error::{Code, EbpfError};

/// Everything `map_dump` returns except the entries themselves.
#[derive(Debug)]
pub struct DumpSummary {
    pub(crate) map: MapSummary,
    pub(crate) total_entries: u64,
    pub(crate) matched: u64,
    pub(crate) returned: usize,
    pub(crate) truncated: bool,
    pub(crate) next_cursor: Option<String>,
    pub(crate) started: Instant,
    pub(crate) read_one_by_one: bool,
    pub(crate) hint: Option<String>,
}

impl DumpSummary {
    pub(crate) fn into_output(self, entries: Vec<Entry>) -> MapDumpOutput {
        MapDumpOutput {
            map: self.map,
            entries,
            total_entries: self.total_entries,
            matched: self.matched,
            returned: self.returned,
            truncated: self.truncated,
            next_cursor: self.next_cursor,
            execution_time_ms: u64::try_from(self.started.elapsed().as_millis())
                .unwrap_or(u64::MAX),
            read_one_by_one: self.read_one_by_one,
            hint: self.hint,
        }
    }
}

/// The work of `map_dump`: hands each returned entry, as JSON text and in order, to `row`
/// (which returns false to stop), and returns the totals. Unsorted pages are written while
/// the map is scanned; sorted ones keep only the best `offset + max_entries` entries.
pub(crate) fn dump_rows(
    p: &MapDumpParams,
    ctx: &CallContext,
    row: &mut dyn FnMut(&str) -> bool,
) -> Result<DumpSummary, EbpfError> {
    let started = Instant::now();
    let cap = ctx.config.tools.map_dump.max_entries.get();
    let asked = p.max_entries.unwrap_or(1000);
    if asked == 0 {
        return Err(EbpfError::new(
            Code::InvalidArguments,
            "`max_entries` must be at least 1",
        ));
    }
    let limit = asked.min(cap) as usize;
    let map = open(&MapSelector {
        map_name: p.map_name.as_deref(),
        map_id: p.map_id,
        pin_path: p.pin_path.as_deref(),
    })?;
    check_dumpable(&map)?;
    let dec = Decoder::new(&map);
    let filters: Vec<(Field, &Predicate)> = p
        .filter
        .iter()
        .map(|pred| Field::compile(&pred.field, &dec).map(|f| (f, pred)))
        .collect::<Result<_, _>>()?;
    let sort = p
        .sort_by
        .as_deref()
        .map(|s| Field::compile(s, &dec))
        .transpose()?;
    let fp = fingerprint(p);
    let offset = match &p.cursor {
        Some(c) => parse_cursor(c, map.record.id, fp)?,
        None => 0,
    } as usize;
    let keep = offset.saturating_add(limit);
    // A sorted page keeps every entry before it in order: bound how deep that goes, so a
    // cursor far into a huge map cannot make the server hold most of it.
    if sort.is_some() && keep > MAX_SORTED_DEPTH {
        return Err(EbpfError::new(
            Code::InvalidArguments,
            format!(
                "a sorted dump pages at most {MAX_SORTED_DEPTH} entries deep; narrow it with \
                 `filter`, or reverse `order` to page from the other end"
            ),
        ));
    }
    let ks = map.key_size();
    let vs = map.value_stride;
    let desc = p.order == Order::Desc;

    let mut total: u64 = 0;
    let mut matched: u64 = 0;
    let mut returned = 0usize;
    let mut heap: BinaryHeap<Ranked> = BinaryHeap::new();
    let mut stopped = false;
    let mut text = String::new();
    let stats = map
        .scan(|keys, values, n| {
            for i in 0..n {
                let key = &keys[i * ks..(i + 1) * ks];
                let value = &values[i * vs..(i + 1) * vs];
                total += 1;
                if !filters
                    .iter()
                    .all(|(f, pred)| matches(pred.op, &f.get(&dec, key, value), &pred.value))
                {
                    continue;
                }
                matched += 1;
                match &sort {
                    Some(field) => {
                        let candidate = Ranked {
                            sort: field.get(&dec, key, value),
                            key: key.to_vec(),
                            value: value.to_vec(),
                            desc,
                        };
                        if heap.len() < keep {
                            heap.push(candidate);
                        } else if heap.peek().is_some_and(|worst| candidate < *worst) {
                            heap.pop();
                            heap.push(candidate);
                        }
                    }
                    None => {
                        let index = (matched - 1) as usize;
                        if index >= offset && index < keep && !stopped {
                            text.clear();
                            dec.write_entry(key, value, &mut text);
                            // A refused row is not returned: the cursor restarts at it.
                            if row(&text) {
                                returned += 1;
                            } else {
                                stopped = true;
                            }
                        }
                    }
                }
            }
            !ctx.cancel.is_cancelled()
        })
        .map_err(|e| kernel_err(&format!("reading map {}", map.record.id), e))?;
    if ctx.cancel.is_cancelled() {
        return Err(EbpfError::new(Code::Cancelled, "map_dump was cancelled"));
    }
    if sort.is_some() {
        for r in heap.into_sorted_vec().into_iter().skip(offset) {
            text.clear();
            dec.write_entry(&r.key, &r.value, &mut text);
            if !row(&text) {
                break;
            }
            returned += 1;
        }
    }
    let more = (offset + returned) < matched as usize;
    let hint = (asked > cap).then(|| {
        format!("max_entries {asked} exceeds tools.map_dump.max_entries ({cap}); returned at most {cap} per page")
    });
    Ok(DumpSummary {
        map: summary(&map),
        total_entries: total,
        matched,
        returned,
        truncated: more,
        next_cursor: more.then(|| format!("{}:{}:{:x}", map.record.id, offset + returned, fp)),
        started,
        read_one_by_one: stats.fallback,
        hint,
    })
}

/// How deep sorted paging goes: the entries a sorted page keeps (it and all before it).
pub(crate) const MAX_SORTED_DEPTH: usize = 100_000;

/// Turns a JSON key into the map's key bytes.
pub(crate) fn key_bytes(
    map: &OpenMap,
    dec: &Decoder<'_>,
    key: &Value,
) -> Result<Vec<u8>, EbpfError> {
    let size = map.key_size();
    let bad = |m: String| EbpfError::new(Code::InvalidArguments, m).with_context("key", key);
    if let Some(text) = key.as_str().and_then(|s| s.strip_prefix("0x"))
        && text.len() == size * 2
        && text.chars().all(|c| c.is_ascii_hexdigit())
    {
        return (0..size)
            .map(|i| {
                u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).map_err(|e| bad(e.to_string()))
            })
            .collect();
    }
    match dec.btf {
        Some(btf) if dec.key_type != 0 => {
            let mut out = vec![0u8; size];
            btf.encode(dec.key_type, key, &mut out).map_err(|m| {
                bad(format!(
                    "key does not fit {}: {m}",
                    btf.type_name(dec.key_type)
                ))
            })?;
            Ok(out)
        }
        _ => Err(bad(format!(
            "map {} has no BTF for its key; give the key as {size} bytes of hex, e.g. \"0x{}\"",
            map.record.id,
            "00".repeat(size)
        ))),
    }
}
