//! `map_dump` and `map_lookup`: a map's entries decoded through its BTF, filtered, sorted
//! and paged on the server, so "top 20 flows by bytes" over a million entries is one call
//! that returns 20 entries. The map is always scanned whole (the totals are exact), but only
//! the entries that will be returned are kept in memory.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::path::Path;
use std::time::Instant;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{CallContext, Hints, ToolMeta, ToolSpec};
use crate::core::Core;
use crate::ebpf::bpf::Object;
use crate::ebpf::btf_reader::{Btf, Located};
use crate::ebpf::inventory;
use crate::ebpf::maps::{self, OpenMap};
use crate::error::{EbpfError, codes};
use crate::security::Tier;

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
    /// Dotted path: `value.bytes`, `key.sport`, `value.hist.3` (no prefix: the value);
    /// `key`/`value`: the whole key or value.
    pub field: String,
    /// Comparison; contains and prefix apply to strings.
    pub op: Op,
    /// A number, string, bool or enum name.
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
    /// The map's name (as `list_maps` shows it). Several maps with one name: use `map_id`.
    #[serde(default)]
    pub map_name: Option<String>,
    /// The map's id.
    #[serde(default)]
    pub map_id: Option<u32>,
    /// A pinned map's path, under a bpffs mount (e.g. /sys/fs/bpf/...).
    #[serde(default)]
    pub pin_path: Option<String>,
    /// Entries to return (default 1000; capped by tools.map_dump.max_entries).
    #[serde(default)]
    pub max_entries: Option<u32>,
    /// Keep only entries matching every predicate.
    #[serde(default)]
    pub filter: Vec<Predicate>,
    /// Order by this field (same paths as `filter`); per-CPU maps order by the sum.
    #[serde(default)]
    pub sort_by: Option<String>,
    /// Sort order (default desc: largest first).
    #[serde(default)]
    pub order: Order,
    /// `next_cursor` of the previous page of the same query.
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
    /// The map's name (as `list_maps` shows it). Several maps with one name: use `map_id`.
    #[serde(default)]
    pub map_name: Option<String>,
    /// The map's id.
    #[serde(default)]
    pub map_id: Option<u32>,
    /// A pinned map's path, under a bpffs mount (e.g. /sys/fs/bpf/...).
    #[serde(default)]
    pub pin_path: Option<String>,
    /// The key as decoded JSON, as `map_dump` shows keys (a number, a string, an object of
    /// fields), or its raw bytes as a hex string starting with `0x`.
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

pub fn dump_spec() -> ToolSpec {
    ToolSpec::new(
        ToolMeta {
            name: "map_dump",
            title: "Read a BPF map",
            description: "Entries of any BPF map on the host, keys and values decoded through \
                the map's BTF (structs to objects, enums by name, char arrays to strings; hex \
                without BTF; per-CPU maps give per-CPU values and their sum). Select the map \
                by `map_name`, `map_id` or `pin_path`. Filter, sort (`sort_by: \"bytes\"` with \
                `max_entries: 20` is the top 20) and page on the server; totals are exact. For \
                one key use map_lookup.",
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
            description: "One entry of a BPF map by key, decoded like map_dump. Give the key as \
                map_dump shows it (a number, a string, an object of fields) or as raw hex \
                (`0x...`). `found: false` when the key is absent.",
            tier: Tier::Read,
            hints: Hints::READ_ONLY,
            list_field: None,
        },
        lookup,
    )
    .with_switch("tools.map_dump.enabled", |c| c.tools.map_dump.enabled)
    .with_timeout(|c| c.tools.map_dump.timeout.0.min(c.server.request_timeout.0))
}

fn not_found(message: String) -> EbpfError {
    EbpfError::validation("MAP_NOT_FOUND", message)
}

fn kernel_err(what: &str, e: impl std::fmt::Display) -> EbpfError {
    EbpfError::kernel("BPF_SYSCALL_FAILED", format!("{what}: {e}"))
}

/// Opens the selected map, or says exactly what is wrong with the selection.
fn open(sel: &MapSelector<'_>) -> Result<OpenMap, EbpfError> {
    let given = usize::from(sel.map_name.is_some())
        + usize::from(sel.map_id.is_some())
        + usize::from(sel.pin_path.is_some());
    if given != 1 {
        return Err(EbpfError::validation(
            codes::INVALID_ARGUMENTS,
            "give exactly one of `map_name`, `map_id` or `pin_path` (list_maps shows names and ids)",
        ));
    }
    if let Some(id) = sel.map_id {
        return OpenMap::by_id(id).map_err(|e| {
            if e.errno() == Some(libc::ENOENT) {
                not_found(format!(
                    "no map with id {id}; list_maps shows the maps on this host"
                ))
                .with_context("map_id", id)
            } else {
                kernel_err(&format!("opening map {id}"), e)
            }
        });
    }
    if let Some(path) = sel.pin_path {
        return open_pinned(Path::new(path));
    }
    let name = sel.map_name.unwrap_or_default();
    let mut matches = Vec::new();
    for id in inventory::ids(Object::Map).map_err(|e| kernel_err("listing maps", e))? {
        if let Ok((record, _)) = inventory::read_map(id)
            && record.name == name
        {
            matches.push(id);
        }
    }
    match matches.as_slice() {
        [] => Err(not_found(format!(
            "no map named `{name}` (BPF map names are at most 15 characters); list_maps shows the maps on this host"
        ))
        .with_context("map_name", name)),
        [id] => OpenMap::by_id(*id).map_err(|e| kernel_err(&format!("opening map {id}"), e)),
        many => Err(EbpfError::validation(
            "AMBIGUOUS_MAP_NAME",
            format!("{} maps are named `{name}` (ids {}); select one with `map_id`", many.len(), join_ids(many)),
        )
        .with_context("ids", many)),
    }
}

fn join_ids(ids: &[u32]) -> String {
    ids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn open_pinned(path: &Path) -> Result<OpenMap, EbpfError> {
    // One answer for a path that does not exist, is not on a bpffs or leads elsewhere: the
    // read tier must not learn what exists on the host outside bpffs.
    let none = || {
        EbpfError::validation(
            "PIN_PATH_NOT_ON_BPFFS",
            format!(
                "no BPF object is pinned at {} (pinned maps live on a bpffs mount, /sys/fs/bpf)",
                path.display()
            ),
        )
        .with_context("pin_path", path)
    };
    let pinned = crate::ebpf::sys::PinnedFile::open(path).map_err(|_| none())?;
    if !pinned.is_on_bpffs() || pinned.is_dir() {
        return Err(none());
    }
    OpenMap::by_pin(&pinned.proc_path()).map_err(|e| match e.errno() {
        Some(libc::EINVAL) => EbpfError::validation(
            "NOT_A_MAP",
            format!(
                "{} is not a pinned map (a program or link?)",
                pinned.real.display()
            ),
        ),
        _ => kernel_err(&format!("opening {}", pinned.real.display()), e),
    })
}

/// Refuses maps whose contents are not key/value entries, saying what to use instead.
fn check_dumpable(map: &OpenMap) -> Result<(), EbpfError> {
    let t = map.record.map_type.as_str();
    if maps::dumpable(t) {
        return Ok(());
    }
    let instead = match t {
        "ringbuf" | "user_ringbuf" | "perf_event_array" => {
            "it carries a stream of events, not entries; read events with the trace tools"
        }
        "prog_array" => "it holds program references; list_programs shows the programs",
        "queue" | "stack" => "reading it would pop (remove) its elements",
        "sk_storage"
        | "inode_storage"
        | "task_storage"
        | "cgrp_storage"
        | "cgroup_storage"
        | "percpu_cgroup_storage" => {
            "its entries are keyed by kernel objects and cannot be walked from user space"
        }
        "bloom_filter" => "a bloom filter cannot be enumerated; map_lookup checks one value",
        _ => "the kernel does not let user space walk its entries",
    };
    Err(EbpfError::validation(
        "MAP_NOT_DUMPABLE",
        format!(
            "map {} (`{}`) is a {t} map: {instead}",
            map.record.id, map.record.name
        ),
    )
    .with_context("map_type", t))
}

fn summary(map: &OpenMap) -> MapSummary {
    let (key_type, value_type) = match &map.btf {
        Some(btf) if map.record.btf_key_type_id != 0 || map.record.btf_value_type_id != 0 => (
            btf.type_name(map.record.btf_key_type_id),
            btf.type_name(map.record.btf_value_type_id),
        ),
        _ => (
            format!("{} bytes", map.record.key_size),
            format!("{} bytes", map.record.value_size),
        ),
    };
    MapSummary {
        id: map.record.id,
        name: map.record.name.clone(),
        map_type: map.record.map_type.clone(),
        key_type,
        value_type,
    }
}

/// Decodes keys and values of one map.
struct Decoder<'a> {
    map: &'a OpenMap,
    btf: Option<&'a Btf>,
    key_type: u32,
    value_type: u32,
}

impl<'a> Decoder<'a> {
    fn new(map: &'a OpenMap) -> Self {
        let btf = map
            .btf
            .as_ref()
            .filter(|_| map.record.btf_value_type_id != 0 || map.record.btf_key_type_id != 0);
        Self {
            map,
            btf,
            key_type: map.record.btf_key_type_id,
            value_type: map.record.btf_value_type_id,
        }
    }

    fn write_key(&self, bytes: &[u8], out: &mut String) {
        match self.btf {
            Some(btf) if self.key_type != 0 => btf.write_json(self.key_type, bytes, out),
            _ => write_hex(bytes, out),
        }
    }

    fn write_value(&self, bytes: &[u8], out: &mut String) {
        match self.btf {
            Some(btf) if self.value_type != 0 => btf.write_json(self.value_type, bytes, out),
            _ => write_hex(bytes, out),
        }
    }

    /// One entry as a JSON object appended to `out`: `{"key":..,"value":..}`, or for per-CPU
    /// maps `{"key":..,"values":[{"cpu":0,"value":..},..],"sum":..}`.
    fn write_entry(&self, key: &[u8], value: &[u8], out: &mut String) {
        out.push_str("{\"key\":");
        self.write_key(key, out);
        if !maps::per_cpu(&self.map.record.map_type) {
            out.push_str(",\"value\":");
            self.write_value(value, out);
            out.push('}');
            return;
        }
        out.push_str(",\"values\":[");
        let mut sum: Option<Value> = None;
        for cpu in 0..self.map.cpus {
            if cpu > 0 {
                out.push(',');
            }
            out.push_str(&format!("{{\"cpu\":{cpu},\"value\":"));
            let start = out.len();
            self.write_value(self.map.cpu_slice(value, cpu), out);
            let v: Value = serde_json::from_str(&out[start..]).unwrap_or(Value::Null);
            sum = Some(match sum {
                Some(acc) => add(&acc, &v),
                None => v,
            });
            out.push('}');
        }
        out.push_str("],\"sum\":");
        out.push_str(&sum.unwrap_or(Value::Null).to_string());
        out.push('}');
    }
}

fn write_hex(bytes: &[u8], out: &mut String) {
    use std::fmt::Write;
    out.push_str("\"0x");
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out.push('"');
}

/// Field-wise sum of two decoded values: numbers add, objects and arrays add member by
/// member, anything else keeps the first value.
fn add(a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                json!(x.saturating_add(y))
            } else if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                json!(x.saturating_add(y))
            } else {
                json!(x.as_f64().unwrap_or(0.0) + y.as_f64().unwrap_or(0.0))
            }
        }
        (Value::Object(x), Value::Object(y)) => Value::Object(
            x.iter()
                .map(|(k, v)| (k.clone(), y.get(k).map_or_else(|| v.clone(), |w| add(v, w))))
                .collect::<Map<_, _>>(),
        ),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            Value::Array(x.iter().zip(y).map(|(v, w)| add(v, w)).collect())
        }
        (a, _) => a.clone(),
    }
}

/// A field reference compiled against the map's BTF.
#[derive(Debug, Clone)]
struct Field {
    in_key: bool,
    loc: Located,
    /// Whole key/value of an integer or string type.
    whole: bool,
}

impl Field {
    fn compile(path: &str, dec: &Decoder<'_>) -> Result<Self, EbpfError> {
        let bad = |m: String| {
            EbpfError::validation(codes::INVALID_ARGUMENTS, m).with_context("field", path)
        };
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
    fn get(&self, dec: &Decoder<'_>, key: &[u8], value: &[u8]) -> Value {
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
fn compare(a: &Value, b: &Value) -> Ordering {
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

fn matches(op: Op, actual: &Value, wanted: &Value) -> bool {
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
struct Ranked {
    sort: Value,
    key: Vec<u8>,
    value: Vec<u8>,
    desc: bool,
}

impl Ranked {
    fn rank(&self, other: &Self) -> Ordering {
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

/// Cursor: "<map id>:<offset>:<query fingerprint>".
fn fingerprint(p: &MapDumpParams) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&p.filter)
        .unwrap_or_default()
        .hash(&mut h);
    p.sort_by.hash(&mut h);
    (p.order == Order::Asc).hash(&mut h);
    h.finish()
}

fn parse_cursor(cursor: &str, map_id: u32, fp: u64) -> Result<u64, EbpfError> {
    let bad = || {
        EbpfError::validation(
            "INVALID_CURSOR",
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

/// Everything `map_dump` returns except the entries themselves.
#[derive(Debug)]
pub struct DumpSummary {
    map: MapSummary,
    total_entries: u64,
    matched: u64,
    returned: usize,
    truncated: bool,
    next_cursor: Option<String>,
    started: Instant,
    read_one_by_one: bool,
    hint: Option<String>,
}

impl DumpSummary {
    fn into_output(self, entries: Vec<Entry>) -> MapDumpOutput {
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
fn dump_rows(
    core: &Core,
    p: &MapDumpParams,
    ctx: &CallContext,
    row: &mut dyn FnMut(&str) -> bool,
) -> Result<DumpSummary, EbpfError> {
    let started = Instant::now();
    let cap = core.config().tools.map_dump.max_entries.get();
    let asked = p.max_entries.unwrap_or(1000);
    if asked == 0 {
        return Err(EbpfError::validation(
            codes::INVALID_ARGUMENTS,
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
        return Err(EbpfError::validation(
            codes::INVALID_ARGUMENTS,
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
        return Err(EbpfError::validation(
            codes::CANCELLED,
            "map_dump was cancelled",
        ));
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
const MAX_SORTED_DEPTH: usize = 100_000;

fn dump(core: &Core, p: MapDumpParams, ctx: &CallContext) -> Result<MapDumpOutput, EbpfError> {
    let mut entries = Vec::new();
    let mut bad = None;
    // The page ends early, at an exact cursor, when its rows would not fit the result size.
    let budget = super::row_budget(core);
    let mut used = 0usize;
    let mut cut = false;
    let mut summary = dump_rows(core, &p, ctx, &mut |row| {
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
    core: &Core,
    args: Value,
    ctx: &CallContext,
    row: &mut dyn FnMut(&str) -> bool,
) -> Result<Value, EbpfError> {
    let p: MapDumpParams = super::parse_args("map_dump", args)?;
    let summary = dump_rows(core, &p, ctx, row)?;
    serde_json::to_value(summary.into_output(Vec::new()))
        .map_err(|e| EbpfError::internal(e.to_string()))
}

/// Turns a JSON key into the map's key bytes.
fn key_bytes(map: &OpenMap, dec: &Decoder<'_>, key: &Value) -> Result<Vec<u8>, EbpfError> {
    let size = map.key_size();
    let bad =
        |m: String| EbpfError::validation(codes::INVALID_ARGUMENTS, m).with_context("key", key);
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
