//! `map_dump` and `map_lookup`: a map's entries decoded through its BTF, filtered, sorted
//! and paged on the server, so "top 20 flows by bytes" over a million entries is one call
//! that returns 20 entries. The map is always scanned whole (the totals are exact), but only
//! the entries that will be returned are kept in memory.
//! The tools in tools/maps.rs are its adapters.

mod cursor;
mod decode;
mod dump;
mod query;
mod select;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub(crate) use cursor::*;
pub(crate) use decode::*;
pub(crate) use dump::*;
pub(crate) use query::*;
pub(crate) use select::*;

/// Which map: exactly one of name, id or pin.
#[derive(Debug, Default)]
pub struct MapSelector<'a> {
    pub map_name: Option<&'a str>,
    pub map_id: Option<u32>,
    pub pin_path: Option<&'a str>,
}

/// A comparison on one field of the key or value.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Predicate {
    /// `value.bytes`, `key.sport`, `value.hist.3` (no prefix: the value); `key`, `value`.
    pub field: String,
    /// contains and prefix: strings.
    pub op: Op,
    /// Number, string, bool or enum name.
    pub value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Contains,
    Prefix,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Asc,
    #[default]
    Desc,
}

/// Arguments of `map_dump`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MapDumpParams {
    /// Its name (several maps share one: use `map_id`).
    #[serde(default)]
    pub map_name: Option<String>,
    /// The map's id.
    #[serde(default)]
    pub map_id: Option<u32>,
    /// A pinned map's path (on bpffs).
    #[serde(default)]
    pub pin_path: Option<String>,
    /// Entries to return (default 1000).
    #[serde(default)]
    pub max_entries: Option<u32>,
    /// Entries matching every predicate.
    #[serde(default)]
    pub filter: Vec<Predicate>,
    /// Order by this field (same paths as `filter`); per-CPU maps order by the sum.
    #[serde(default)]
    pub sort_by: Option<String>,
    #[serde(default)]
    pub order: Order,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// One decoded entry. Per-CPU maps carry `values` (one per CPU) and `sum` instead of `value`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Entry {
    pub key: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<CpuValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sum: Option<Value>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct CpuValue {
    pub cpu: usize,
    pub value: Value,
}

/// The map a result came from.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MapSummary {
    pub id: u32,
    pub name: String,
    #[serde(rename = "type")]
    pub map_type: String,
    /// Key and value types from BTF, or their sizes when the map has no BTF (then keys and
    /// values are hex strings of their bytes).
    pub key_type: String,
    pub value_type: String,
}

/// Result of `map_dump`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MapDumpOutput {
    pub map: MapSummary,
    pub entries: Vec<Entry>,
    /// Entries in the map (exact: counted while scanning).
    pub total_entries: u64,
    /// Entries that matched `filter` (equals total_entries without a filter).
    pub matched: u64,
    pub returned: usize,
    /// More matching entries exist; pass `next_cursor` to get them.
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    pub execution_time_ms: u64,
    /// The kernel refused batch reads for this map; it was read one entry at a time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_one_by_one: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// Arguments of `map_lookup`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MapLookupParams {
    /// Its name (several maps share one: use `map_id`).
    #[serde(default)]
    pub map_name: Option<String>,
    /// The map's id.
    #[serde(default)]
    pub map_id: Option<u32>,
    /// A pinned map's path (on bpffs).
    #[serde(default)]
    pub pin_path: Option<String>,
    /// As map_dump shows keys (number, string, object), or raw hex `0x…`.
    pub key: Value,
}

/// Result of `map_lookup`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct MapLookupOutput {
    pub map: MapSummary,
    pub found: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<Entry>,
}
