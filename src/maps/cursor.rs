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

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: serde_json::Value) -> MapDumpParams {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_cursor_continues_only_its_own_query() {
        let p = params(serde_json::json!({"map_id": 7, "sort_by": "bytes"}));
        let fp = fingerprint(&p);
        let cursor = format!("7:40:{fp:x}");
        assert_eq!(parse_cursor(&cursor, 7, fp).unwrap(), 40);
        for bad in [
            format!("8:40:{fp:x}"),       // another map
            format!("7:40:{:x}", fp ^ 1), // another query
            format!("7:-1:{fp:x}"),
            format!("7:40:{fp:x}:1"),
            "7:40".to_owned(),
            String::new(),
            "x:y:z".to_owned(),
        ] {
            let e = parse_cursor(&bad, 7, fp).unwrap_err();
            assert_eq!(e.code, Code::InvalidCursor, "{bad}");
            assert!(e.message.contains("next_cursor"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn the_fingerprint_follows_filter_sort_and_order_only() {
        let base = fingerprint(&params(
            serde_json::json!({"map_id": 1, "sort_by": "bytes"}),
        ));
        let same = fingerprint(&params(
            serde_json::json!({"map_id": 2, "sort_by": "bytes", "max_entries": 5}),
        ));
        assert_eq!(base, same, "map and page size are not part of the query");
        for other in [
            serde_json::json!({"map_id": 1, "sort_by": "packets"}),
            serde_json::json!({"map_id": 1, "sort_by": "bytes", "order": "asc"}),
            serde_json::json!({"map_id": 1, "sort_by": "bytes",
                "filter": [{"field": "bytes", "op": "gt", "value": 1}]}),
        ] {
            assert_ne!(base, fingerprint(&params(other.clone())), "{other}");
        }
    }
}
