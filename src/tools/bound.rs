//! The backstop that keeps every tool result within `server.max_result_bytes` of JSON.
//! Tools that page (cursors) stay under it themselves; anything else that is too big gets
//! its largest lists and maps trimmed from the end, and says so in `truncated` and `hint`.
//! Trimming follows the output schema, so a cut result still validates: only arrays and
//! name→value maps lose entries, never a struct's fields.

use std::io;

use serde_json::{Map, Value};

use crate::error::{Code, EbpfError};

/// Room kept for the `truncated`/`hint` fields added after trimming.
const HINT_RESERVE: usize = 400;
const MAX_ROUNDS: usize = 256;

struct Counter(usize);

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Bytes of `v` as compact JSON.
pub fn json_len(v: &Value) -> usize {
    let mut c = Counter(0);
    // Writing a Value into a counter cannot fail.
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn path_string(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// The subschema for `key` of an object schema.
fn child_schema<'a>(schema: Option<&'a Value>, seg: &Seg) -> Option<&'a Value> {
    let schema = schema?;
    match seg {
        Seg::Key(k) => schema
            .get("properties")
            .and_then(|p| p.get(k))
            .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object())),
        Seg::Index(_) => schema.get("items"),
    }
}

/// Whether entries may be removed from this container without breaking its schema.
fn trimmable(value: &Value, schema: Option<&Value>) -> bool {
    match value {
        Value::Array(a) => !a.is_empty() && schema.and_then(|s| s.get("minItems")).is_none(),
        Value::Object(m) => {
            !m.is_empty()
                && schema.is_some_and(|s| {
                    s.get("properties").is_none()
                        && s.get("additionalProperties").is_some_and(Value::is_object)
                })
        }
        _ => false,
    }
}

/// The container to trim next: descend into the biggest child while it holds most of the
/// bytes, so cuts are as fine-grained as possible.
fn pick_target(value: &Value, schema: Option<&Value>) -> Option<Vec<Seg>> {
    let mut best: Option<(usize, Vec<Seg>)> = None;
    find(value, schema, &mut Vec::new(), &mut best);
    best.map(|(_, p)| p)
}

fn find(
    value: &Value,
    schema: Option<&Value>,
    path: &mut Vec<Seg>,
    best: &mut Option<(usize, Vec<Seg>)>,
) {
    if !path.is_empty() && trimmable(value, schema) {
        let size = json_len(value);
        if best.as_ref().is_none_or(|(s, _)| size > *s) {
            *best = Some((size, path.clone()));
        }
    }
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                let seg = Seg::Key(k.clone());
                let sub = child_schema(schema, &seg);
                path.push(seg);
                find(v, sub, path, best);
                path.pop();
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                let seg = Seg::Index(i);
                let sub = child_schema(schema, &seg);
                path.push(seg);
                find(v, sub, path, best);
                path.pop();
            }
        }
        _ => {}
    }
}

fn get_mut<'a>(value: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |v, seg| match seg {
        Seg::Key(k) => v.get_mut(k.as_str()),
        Seg::Index(i) => v.get_mut(*i),
    })
}

/// Removes entries from the end of the container until about `excess` bytes are gone.
/// Returns (kept, total).
fn trim(container: &mut Value, excess: usize) -> (usize, usize) {
    match container {
        Value::Array(a) => {
            let total = a.len();
            let mut removed = 0;
            while removed < excess
                && let Some(last) = a.pop()
            {
                removed += json_len(&last) + 1;
            }
            (a.len(), total)
        }
        Value::Object(m) => {
            let total = m.len();
            let mut removed = 0;
            while removed < excess
                && let Some(key) = m.keys().next_back().cloned()
            {
                if let Some(v) = m.remove(&key) {
                    removed += key.len() + json_len(&v) + 4;
                }
            }
            (m.len(), total)
        }
        _ => (0, 0),
    }
}

/// Cuts `value` (a tool's result, an object) to at most `cap` bytes of JSON, guided by
/// `schema` (the tool's cleaned output schema). Untouched when it already fits.
pub fn bound_result(
    value: &mut Value,
    schema: &Map<String, Value>,
    cap: usize,
) -> Result<(), EbpfError> {
    let original = json_len(value);
    if original <= cap {
        return Ok(());
    }
    let schema = Value::Object(schema.clone());
    let mut cuts: Vec<(String, usize, usize)> = Vec::new();
    for _ in 0..MAX_ROUNDS {
        let size = json_len(value);
        if size + HINT_RESERVE <= cap {
            break;
        }
        let Some(path) = pick_target(value, Some(&schema)) else {
            break;
        };
        let excess = size + HINT_RESERVE - cap;
        let Some(container) = get_mut(value, &path) else {
            break;
        };
        let (kept, total) = trim(container, excess);
        let name = path_string(&path);
        match cuts.iter_mut().find(|(p, _, _)| *p == name) {
            Some(c) => c.1 = kept,
            None => cuts.push((name, kept, total)),
        }
    }
    // The hint stays within its reserve: the first cuts by name, then how many more.
    const NAMED_CUTS: usize = 4;
    let mut what: Vec<String> = cuts
        .iter()
        .take(NAMED_CUTS)
        .map(|(p, kept, total)| format!("`{p}` kept {kept} of {total}"))
        .collect();
    if cuts.len() > NAMED_CUTS {
        what.push(format!("{} more lists cut", cuts.len() - NAMED_CUTS));
    }
    let hint = format!(
        "result cut from {original} to fit server.max_result_bytes ({cap} bytes): {}; narrow \
         the call (filters, smaller max_entries, a cursor) or raise the limit",
        if what.is_empty() {
            "nothing could be trimmed".to_owned()
        } else {
            what.join(", ")
        }
    );
    if let Value::Object(m) = value {
        m.insert("truncated".into(), Value::Bool(true));
        // A hint the result had (how to get more of it) stays, after this one.
        let hint = match m.get("hint") {
            Some(Value::String(had)) => format!("{hint}; {had}"),
            _ => hint,
        };
        m.insert("hint".into(), Value::String(hint));
        let cuts = m.entry("cut").or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(cuts) = cuts
            && !cuts.iter().any(|c| c == "size")
        {
            cuts.push("size".into());
        }
    }
    let size = json_len(value);
    if size > cap {
        return Err(EbpfError::new(
            Code::ResultTooLarge,
            format!(
                "the result ({original} bytes) cannot be cut to server.max_result_bytes ({cap} \
                 bytes) without losing required fields; raise the limit or narrow the call"
            ),
        )
        .with_context("result_bytes", original)
        .with_context("max_result_bytes", cap));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Map<String, Value> {
        let v = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "rows": {"type": "array", "items": {"type": "object", "properties": {"n": {"type": "integer"}}}},
                "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                "fixed": {"type": "object", "properties": {"a": {"type": "string"}}}
            }
        });
        v.as_object().unwrap().clone()
    }

    #[test]
    fn small_results_are_untouched() {
        let mut v = json!({"name": "x", "rows": [{"n": 1}]});
        let before = v.clone();
        bound_result(&mut v, &schema(), 1000).unwrap();
        assert_eq!(v, before);
    }

    #[test]
    fn big_lists_are_cut_and_the_cut_is_named() {
        let rows: Vec<Value> = (0..5000).map(|n| json!({"n": n})).collect();
        let mut v = json!({"name": "x", "rows": rows, "fixed": {"a": "keep me"}});
        bound_result(&mut v, &schema(), 4096).unwrap();
        assert!(json_len(&v) <= 4096, "{}", json_len(&v));
        assert_eq!(v["truncated"], true);
        let hint = v["hint"].as_str().unwrap();
        assert!(hint.contains("`rows` kept"), "{hint}");
        assert!(hint.contains("of 5000"), "{hint}");
        // Kept rows are the first ones, in order.
        assert_eq!(v["rows"][0]["n"], 0);
        assert_eq!(v["fixed"]["a"], "keep me");
    }

    #[test]
    fn maps_are_trimmable_but_structs_are_not() {
        let counts: Map<String, Value> =
            (0..3000).map(|i| (format!("k{i:05}"), json!(i))).collect();
        let mut v = json!({"name": "x", "counts": counts, "fixed": {"a": "y".repeat(100)}});
        bound_result(&mut v, &schema(), 2048).unwrap();
        assert!(json_len(&v) <= 2048);
        assert!(v["counts"].as_object().unwrap().len() < 3000);
        assert_eq!(v["fixed"]["a"].as_str().unwrap().len(), 100);
    }

    #[test]
    fn untrimmable_results_fail_with_a_clear_error() {
        let mut v = json!({"name": "n".repeat(5000)});
        let err = bound_result(&mut v, &schema(), 1024).unwrap_err();
        assert_eq!(err.code, Code::ResultTooLarge.as_str());
        assert!(err.message.contains("raise the limit"));
    }
}
