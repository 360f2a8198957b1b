//! Cursors: where the next page starts, bound to the map and to the query that made it.

use super::*;
use crate::error::{Code, EbpfError};

/// Cursor: "<map id>:<offset>:<query fingerprint>".
pub(crate) fn fingerprint(p: &MapDumpParams) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&p.filter)
        .unwrap_or_default()
        .hash(&mut h);
    p.sort_by.hash(&mut h);
    (p.order == Order::Asc).hash(&mut h);
    h.finish()
}

pub(crate) fn parse_cursor(cursor: &str, map_id: u32, fp: u64) -> Result<u64, EbpfError> {
    let bad = || {
        EbpfError::new(
            Code::InvalidCursor,
            "`cursor` does not belong to this query; pass the `next_cursor` of the previous page of the same map, filter and sort, or drop it to start over",
        )
        .with_context("cursor", cursor)
    };
    let mut parts = cursor.split(':');
    let (Some(id), Some(offset), Some(f), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if id.parse::<u32>().ok() != Some(map_id) || u64::from_str_radix(f, 16).ok() != Some(fp) {
        return Err(bad());
    }
    offset.parse().map_err(|_| bad())
}
