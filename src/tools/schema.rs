//! Turns schemars output into schemas strict clients accept: references inlined, no
//! non-standard `format` (`uint32`, `int64`, …), no `["type", "null"]` unions, no titles
//! derived from Rust names. Output schemas gain the `truncated`/`hint`/`cut` fields every
//! result may carry; they are published in docs/tools.md and `ebpf-mcp tools --output json`
//! (not in `tools/list`, whose size is an agent's context).

use serde_json::{Map, Value, json};

/// Formats defined by JSON Schema 2020-12; anything else is dropped.
const STANDARD_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// Which side of a call a schema describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Input,
    Output,
}

/// The clean form of `schema` as a JSON object with `type: object` at the root.
pub fn clean(schema: &schemars::Schema, side: Side) -> Map<String, Value> {
    let mut root = schema.as_value().clone();
    let defs = root
        .as_object_mut()
        .and_then(|o| o.remove("$defs"))
        .and_then(|d| match d {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .unwrap_or_default();
    let mut root = inline(root, &defs, 0);
    normalize(&mut root, true);
    let mut obj = match root {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    obj.insert("type".into(), json!("object"));
    if side == Side::Output {
        let props = obj
            .entry("properties")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(props) = props {
            props.insert(
                "truncated".into(),
                json!({"type": "boolean", "description": "true when the result was cut to fit the size limit"}),
            );
            props.insert(
                "hint".into(),
                json!({"type": "string", "description": "what was cut and how to get the rest"}),
            );
            props.entry("cut").or_insert_with(|| {
                json!({"type": "array", "items": {"type": "string"},
                       "description": "what cut the result (size: server.max_result_bytes)"})
            });
        }
    }
    obj
}

/// Replaces `{"$ref": "#/$defs/X"}` with the definition (recursion is cut at a fixed depth:
/// our types are not recursive, and a runaway would be a bug, not data).
fn inline(value: Value, defs: &Map<String, Value>, depth: usize) -> Value {
    match value {
        Value::Object(mut m) => {
            if let Some(Value::String(r)) = m.get("$ref")
                && let Some(name) = r.strip_prefix("#/$defs/")
                && let Some(def) = defs.get(name)
                && depth < 32
            {
                let mut inlined = inline(def.clone(), defs, depth + 1);
                // Keep sibling keywords of the $ref (descriptions, defaults).
                m.remove("$ref");
                if let Value::Object(target) = &mut inlined {
                    for (k, v) in m {
                        target.insert(k, inline(v, defs, depth + 1));
                    }
                }
                return inlined;
            }
            Value::Object(
                m.into_iter()
                    .map(|(k, v)| (k, inline(v, defs, depth + 1)))
                    .collect(),
            )
        }
        Value::Array(a) => {
            Value::Array(a.into_iter().map(|v| inline(v, defs, depth + 1)).collect())
        }
        other => other,
    }
}

fn is_null_schema(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str) == Some("null")
        || v.get("const").is_some_and(Value::is_null)
}

/// Keywords whose value is one subschema.
const SUBSCHEMA: &[&str] = &[
    "items",
    "additionalProperties",
    "not",
    "contains",
    "propertyNames",
    "if",
    "then",
    "else",
];
/// Keywords whose value is a list of subschemas.
const SUBSCHEMA_LISTS: &[&str] = &["anyOf", "oneOf", "allOf", "prefixItems"];
/// Keywords whose value maps names to subschemas.
const SUBSCHEMA_MAPS: &[&str] = &["properties", "patternProperties"];

fn normalize(value: &mut Value, is_root: bool) {
    let Value::Object(m) = value else {
        return;
    };
    m.remove("$schema");
    if is_root {
        // The tool's own title and description say this better than a Rust type's docs.
        m.remove("title");
        m.remove("description");
    }
    // Doc comments wrap lines; a description is one paragraph.
    if let Some(Value::String(d)) = m.get_mut("description") {
        *d = d.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    if let Some(Value::String(f)) = m.get("format")
        && !STANDARD_FORMATS.contains(&f.as_str())
    {
        m.remove("format");
    }
    // ["integer", "null"] -> "integer"
    if let Some(Value::Array(types)) = m.get("type") {
        let kept: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        let new = if kept.len() == 1 {
            kept[0].clone()
        } else {
            Value::Array(kept)
        };
        m.insert("type".into(), new);
    }
    if m.get("default").is_some_and(Value::is_null) {
        m.remove("default");
    }
    if let Some(Value::Array(e)) = m.get_mut("enum") {
        e.retain(|v| !v.is_null());
    }
    // anyOf/oneOf with a null branch: drop the branch, and unwrap a lone survivor.
    for key in ["anyOf", "oneOf"] {
        let Some(Value::Array(branches)) = m.get_mut(key) else {
            continue;
        };
        branches.retain(|b| !is_null_schema(b));
        if branches.len() == 1 {
            let only = branches.pop().unwrap_or(Value::Null);
            m.remove(key);
            if let Value::Object(inner) = only {
                for (k, v) in inner {
                    m.entry(k).or_insert(v);
                }
            }
        }
    }
    // oneOf [{const: a}, {const: b}] (documented enum variants) -> enum [a, b]: smaller, and
    // understood by every client.
    if let Some(Value::Array(branches)) = m.get("oneOf")
        && !branches.is_empty()
        && branches
            .iter()
            .all(|b| b.get("const").is_some_and(Value::is_string))
    {
        let values: Vec<Value> = branches
            .iter()
            .filter_map(|b| b.get("const").cloned())
            .collect();
        m.remove("oneOf");
        m.insert("type".into(), json!("string"));
        m.insert("enum".into(), Value::Array(values));
    }
    for key in SUBSCHEMA {
        if let Some(v) = m.get_mut(*key) {
            normalize(v, false);
        }
    }
    for key in SUBSCHEMA_LISTS {
        if let Some(Value::Array(list)) = m.get_mut(*key) {
            for v in list {
                normalize(v, false);
            }
        }
    }
    for key in SUBSCHEMA_MAPS {
        if let Some(Value::Object(map)) = m.get_mut(*key) {
            for v in map.values_mut() {
                normalize(v, false);
            }
        }
    }
}

/// The input schema as `tools/list` shows it: `minimum: 0` (every unsigned integer has it,
/// and the server rejects negatives with a clear error anyway) left out.
pub fn listed_input(schema: &Map<String, Value>) -> Map<String, Value> {
    let mut out = schema.clone();
    if let Some(Value::Object(props)) = out.get_mut("properties") {
        for prop in props.values_mut() {
            if let Value::Object(p) = prop
                && p.get("minimum").and_then(Value::as_u64) == Some(0)
            {
                p.remove("minimum");
            }
        }
    }
    out
}

/// A copy of `schema` whose properties carry no descriptions (the root keeps its own).
pub fn without_descriptions(schema: &Map<String, Value>) -> Map<String, Value> {
    let mut out = schema.clone();
    if let Some(Value::Object(props)) = out.get_mut("properties") {
        for prop in props.values_mut() {
            strip_descriptions(prop);
        }
    }
    out
}

/// Removes `description` from a schema and its subschemas (not from property names: a
/// property may be called `description`).
fn strip_descriptions(v: &mut Value) {
    let Value::Object(m) = v else {
        return;
    };
    m.remove("description");
    for key in SUBSCHEMA {
        if let Some(child) = m.get_mut(*key) {
            strip_descriptions(child);
        }
    }
    for key in SUBSCHEMA_LISTS {
        if let Some(Value::Array(list)) = m.get_mut(*key) {
            list.iter_mut().for_each(strip_descriptions);
        }
    }
    for key in SUBSCHEMA_MAPS {
        if let Some(Value::Object(map)) = m.get_mut(*key) {
            map.values_mut().for_each(strip_descriptions);
        }
    }
}

/// Every problem a strict client would have with `schema`, as JSON-pointer-ish paths.
pub fn lint(schema: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    lint_at(schema, "", &mut problems);
    problems
}

fn lint_at(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(f)) = m.get("format")
                && !STANDARD_FORMATS.contains(&f.as_str())
            {
                out.push(format!("{at}/format: non-standard `{f}`"));
            }
            if let Some(Value::Array(t)) = m.get("type")
                && t.iter().any(|x| x == "null")
            {
                out.push(format!("{at}/type: union with null"));
            }
            if m.contains_key("$ref") || m.contains_key("$defs") {
                out.push(format!("{at}: uninlined reference"));
            }
            for (k, child) in m {
                lint_at(child, &format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                lint_at(child, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};

    use super::*;

    /// Input of a test tool.
    #[derive(Deserialize, JsonSchema)]
    #[expect(dead_code, reason = "only its schema is used")]
    struct In {
        /// An id.
        id: Option<u32>,
        /// A size.
        size: u64,
        nested: Option<Inner>,
    }

    #[derive(Deserialize, Serialize, JsonSchema)]
    struct Inner {
        /// A name.
        name: String,
        ratio: f64,
        /// A field whose name is a JSON Schema keyword.
        description: String,
    }

    #[test]
    fn input_schema_is_clean() {
        let s = Value::Object(clean(&schemars::schema_for!(In), Side::Input));
        assert!(lint(&s).is_empty(), "{:?} in {s}", lint(&s));
        assert_eq!(s["type"], "object");
        assert_eq!(s["properties"]["id"]["type"], "integer");
        assert_eq!(s["properties"]["id"]["description"], "An id.");
        assert_eq!(
            s["properties"]["nested"]["properties"]["name"]["type"],
            "string"
        );
        assert!(s.get("title").is_none());
        assert!(s.get("$schema").is_none());
    }

    #[test]
    fn output_schema_gains_truncation_fields() {
        let s = Value::Object(clean(&schemars::schema_for!(Inner), Side::Output));
        assert!(lint(&s).is_empty());
        assert_eq!(s["properties"]["truncated"]["type"], "boolean");
        assert_eq!(s["properties"]["cut"]["type"], "array");
        assert_eq!(s["properties"]["name"]["description"], "A name.");
    }

    #[test]
    fn brief_input_drops_parameter_docs_but_keeps_parameters() {
        let full = clean(&schemars::schema_for!(Inner), Side::Input);
        let s = Value::Object(without_descriptions(&full));
        assert!(lint(&s).is_empty());
        assert!(s["properties"]["name"].get("description").is_none());
        // A parameter called `description` is a parameter, not a doc string.
        assert_eq!(s["properties"]["description"]["type"], "string");
        assert_eq!(s["properties"], {
            let mut props = full["properties"].clone();
            props.as_object_mut().unwrap().values_mut().for_each(|p| {
                p.as_object_mut().unwrap().remove("description");
            });
            props
        });
    }
}
