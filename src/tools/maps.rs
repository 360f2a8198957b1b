//! `map_dump` and `map_lookup`: the tools of the map engine (`crate::maps`), which reads a
//! map's entries decoded through its BTF, filtered, sorted and paged on the server.

use serde_json::Value;

use super::{CallContext, Hints, ToolMeta, ToolSpec};
use crate::config::Tier;
use crate::core::Core;
use crate::error::EbpfError;
use crate::maps::*;

pub fn dump_spec() -> ToolSpec {
    ToolSpec::new(
        ToolMeta {
            name: "map_dump",
            title: "Read a BPF map",
            description: "Entries of any BPF map on the host, decoded through its BTF (hex \
                without). Select it by `map_name`, `map_id` or `pin_path`; filter, sort \
                (`sort_by: \"bytes\"`, `max_entries: 20`) and page on the server; totals exact. \
                One key: map_lookup.",
            tier: Tier::Read,
            hints: Hints::READ_ONLY,
            list_field: Some("entries"),
        },
        dump,
    )
    .with_stream(dump_stream)
    .with_switch("tools.map_dump.enabled", |c| c.tools.map_dump.enabled)
    .with_timeout(|c| c.tools.map_dump.timeout.0.min(c.server.request_timeout.0))
}

pub fn lookup_spec() -> ToolSpec {
    ToolSpec::new(
        ToolMeta {
            name: "map_lookup",
            title: "Look up one map key",
            description: "One entry of a BPF map by key, decoded like map_dump; `found: \
                false` when the key is absent.",
            tier: Tier::Read,
            hints: Hints::READ_ONLY,
            list_field: None,
        },
        lookup,
    )
    .with_switch("tools.map_dump.enabled", |c| c.tools.map_dump.enabled)
    .with_timeout(|c| c.tools.map_dump.timeout.0.min(c.server.request_timeout.0))
}

fn dump(_core: &Core, p: MapDumpParams, ctx: &CallContext) -> Result<MapDumpOutput, EbpfError> {
    let mut entries = Vec::new();
    let mut bad = None;
    // The page ends early, at an exact cursor, when its rows would not fit the result size.
    let budget = super::row_budget(&ctx.config);
    let mut used = 0usize;
    let mut cut = false;
    let mut summary = dump_rows(&p, ctx, &mut |row| {
        used += row.len() + 1;
        if used > budget && !entries.is_empty() {
            cut = true;
            return false;
        }
        match serde_json::from_str::<Entry>(row) {
            Ok(e) => {
                entries.push(e);
                true
            }
            Err(e) => {
                bad = Some(e);
                false
            }
        }
    })?;
    if let Some(e) = bad {
        return Err(EbpfError::internal(format!(
            "map_dump produced an unreadable entry: {e}"
        )));
    }
    if cut {
        summary.hint = Some(
            "page ended early to fit server.max_result_bytes; continue with next_cursor, or \
             ask for fewer entries"
                .to_owned(),
        );
    }
    Ok(summary.into_output(entries))
}

/// `map_dump` for `--output jsonl`: entries go to `row` as they are decoded, never held.
fn dump_stream(
    _core: &Core,
    args: Value,
    ctx: &CallContext,
    row: &mut dyn FnMut(&str) -> bool,
) -> Result<Value, EbpfError> {
    let p: MapDumpParams = super::parse_args("map_dump", args)?;
    let summary = dump_rows(&p, ctx, row)?;
    serde_json::to_value(summary.into_output(Vec::new()))
        .map_err(|e| EbpfError::internal(e.to_string()))
}

fn lookup(
    _core: &Core,
    p: MapLookupParams,
    _ctx: &CallContext,
) -> Result<MapLookupOutput, EbpfError> {
    let map = open(&MapSelector {
        map_name: p.map_name.as_deref(),
        map_id: p.map_id,
        pin_path: p.pin_path.as_deref(),
    })?;
    check_dumpable(&map)?;
    let dec = Decoder::new(&map);
    let key = key_bytes(&map, &dec, &p.key)?;
    let value = map
        .lookup(&key)
        .map_err(|e| kernel_err(&format!("looking up in map {}", map.record.id), e))?;
    let entry = match value {
        Some(v) => {
            let mut text = String::new();
            dec.write_entry(&key, &v, &mut text);
            Some(
                serde_json::from_str(&text)
                    .map_err(|e| EbpfError::internal(format!("decoded entry unreadable: {e}")))?,
            )
        }
        None => None,
    };
    Ok(MapLookupOutput {
        map: summary(&map),
        found: entry.is_some(),
        entry,
    })
}
