//! MCP resources: read-only JSON views of the host's eBPF state, each backed by a read-tier
//! tool so that a resource and its tool can never disagree.

use rmcp::model::{Resource, ResourceTemplate};
use serde_json::{Value, json};

/// Fixed resources: (uri, name, title, description).
const FIXED: &[(&str, &str, &str, &str)] = &[
    (
        "ebpf://system",
        "system",
        "Host eBPF capabilities",
        "The same JSON as the `info` tool: kernel facts, probed features, server setup",
    ),
    (
        "ebpf://gadgets",
        "gadgets",
        "Trace gadgets",
        "The trace gadgets: what each reports, its modes, hooks and fields, and whether this \
         kernel supports it (the gadget part of `info`)",
    ),
    (
        "ebpf://programs",
        "programs",
        "BPF programs",
        "Every loaded BPF program (first page of list_programs)",
    ),
    (
        "ebpf://maps",
        "maps",
        "BPF maps",
        "Every BPF map (first page of list_maps)",
    ),
    (
        "ebpf://links",
        "links",
        "BPF links",
        "Every BPF link and its attach target (first page of list_links)",
    ),
];

/// Templates: (uri template, name, title, description).
const TEMPLATES: &[(&str, &str, &str, &str)] = &[
    (
        "ebpf://programs/{id}",
        "program",
        "One BPF program",
        "A program with its instructions, maps, holders and attachments",
    ),
    (
        "ebpf://maps/{id}",
        "map",
        "One BPF map",
        "A map's metadata and its first 20 entries, decoded",
    ),
];

/// Entries shown by `ebpf://maps/{id}`.
const MAP_PREVIEW: u32 = 20;

pub fn list() -> Vec<Resource> {
    FIXED
        .iter()
        .map(|(uri, name, title, description)| {
            Resource::new(*uri, *name)
                .with_title(*title)
                .with_description(*description)
                .with_mime_type("application/json")
        })
        .collect()
}

pub fn templates() -> Vec<ResourceTemplate> {
    TEMPLATES
        .iter()
        .map(|(uri, name, title, description)| {
            ResourceTemplate::new(*uri, *name)
                .with_title(*title)
                .with_description(*description)
                .with_mime_type("application/json")
        })
        .collect()
}

/// How to produce a resource: one or two tool calls.
#[derive(Debug, PartialEq)]
pub enum Plan {
    /// The tool's result is the resource.
    Tool(&'static str, Value),
    /// These fields of the tool's result.
    Part(&'static str, Value, &'static [&'static str]),
    /// A map: its list_maps entry plus a map_dump preview.
    Map(u32),
}

/// The plan for `uri`, or `None` when no such resource can exist.
pub fn resolve(uri: &str) -> Option<Plan> {
    let rest = uri.strip_prefix("ebpf://")?;
    let id = |s: &str| s.parse::<u32>().ok().filter(|id| *id > 0);
    match rest.split_once('/') {
        None => match rest {
            "system" => Some(Plan::Tool("info", json!({"sections": ["all"]}))),
            "gadgets" => Some(Plan::Part(
                "info",
                json!({"sections": ["gadgets"]}),
                &["gadgets", "gadget_common_fields"],
            )),
            "programs" => Some(Plan::Tool("list_programs", json!({}))),
            "maps" => Some(Plan::Tool("list_maps", json!({}))),
            "links" => Some(Plan::Tool("list_links", json!({}))),
            _ => None,
        },
        Some(("programs", n)) => {
            id(n).map(|id| Plan::Tool("list_programs", json!({"id": id, "detail": true})))
        }
        Some(("maps", n)) => id(n).map(Plan::Map),
        _ => None,
    }
}

pub fn map_preview_args(id: u32) -> (Value, Value) {
    (
        json!({"id": id}),
        json!({"map_id": id, "max_entries": MAP_PREVIEW}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_known_uris_only() {
        assert_eq!(
            resolve("ebpf://system"),
            Some(Plan::Tool("info", json!({"sections": ["all"]})))
        );
        assert_eq!(resolve("ebpf://maps/7"), Some(Plan::Map(7)));
        assert!(
            matches!(resolve("ebpf://gadgets"), Some(Plan::Part("info", _, f)) if f.contains(&"gadgets"))
        );
        assert_eq!(
            resolve("ebpf://programs/12"),
            Some(Plan::Tool(
                "list_programs",
                json!({"id": 12, "detail": true})
            ))
        );
        for bad in [
            "ebpf://maps/x",
            "ebpf://maps/0",
            "ebpf://nothing",
            "file:///etc/passwd",
            "ebpf://programs/1/2",
        ] {
            assert_eq!(resolve(bad), None, "{bad}");
        }
    }
}
