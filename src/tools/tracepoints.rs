//! `list_tracepoints`: which tracepoints this kernel has, and the fields of one, so that an
//! agent can pick a hook for the `tracepoint` gadget.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CallContext, Hints, ToolMeta, ToolSpec};
use crate::config::Tier;
use crate::core::Core;
use crate::ebpf::tracefs::{self, Format};
use crate::error::{Code, EbpfError};
use crate::glob::Glob;

const DEFAULT_LIMIT: u32 = 200;
const MAX_LIMIT: u32 = 2000;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListTracepointsParams {
    /// `category:name` glob, e.g. `sched:*` (without `:`, either part);
    /// none: the categories.
    #[serde(default)]
    pub pattern: Option<String>,
    /// The fields of the one tracepoint the pattern matches.
    #[serde(default)]
    pub detail: bool,
    /// Names per page (default 200, at most 2000).
    #[serde(default)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// A category and how many tracepoints it has.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Category {
    pub category: String,
    pub tracepoints: usize,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListTracepointsOutput {
    /// Without a pattern: every category.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<Category>>,
    /// With a pattern: matching `category:name`s, sorted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracepoints: Option<Vec<String>>,
    /// With detail: the record layout (trace it with gadget `tracepoint`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// Tracepoints matching (all of them without a pattern).
    pub total: usize,
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

pub fn spec() -> ToolSpec {
    ToolSpec::new(
        ToolMeta {
            name: "list_tracepoints",
            title: "Find tracepoints",
            description: "The kernel's tracepoints: without `pattern`, the categories; with a \
                glob (`sched:*`), the names; with `detail` and a pattern matching one, its \
                fields. Trace them with gadget `tracepoint`.",
            tier: Tier::Read,
            hints: Hints::READ_ONLY,
            list_field: Some("tracepoints"),
        },
        run,
    )
}

/// Whether `category:name` matches `pattern` (a pattern without `:` matches either part).
fn matches(pattern: &Glob, colon: bool, full: &str) -> bool {
    if colon {
        return pattern.matches(full);
    }
    let (category, name) = full.split_once(':').unwrap_or(("", full));
    pattern.matches(category) || pattern.matches(name)
}

fn run(
    _core: &Core,
    p: ListTracepointsParams,
    ctx: &CallContext,
) -> Result<ListTracepointsOutput, EbpfError> {
    let all =
        tracefs::list().map_err(|e| EbpfError::new(Code::FilesystemNotMounted, e.to_string()))?;
    let invalid = |m: String| EbpfError::new(Code::InvalidArguments, m);
    let Some(pattern) = p.pattern.as_deref().filter(|s| !s.is_empty()) else {
        if p.detail {
            return Err(invalid(
                "`detail` needs a `pattern` that matches one tracepoint".into(),
            ));
        }
        let mut categories: Vec<Category> = Vec::new();
        for full in &all {
            let category = full.split_once(':').map_or(full.as_str(), |(c, _)| c);
            match categories.last_mut() {
                Some(c) if c.category == category => c.tracepoints += 1,
                _ => categories.push(Category {
                    category: category.to_owned(),
                    tracepoints: 1,
                }),
            }
        }
        return Ok(ListTracepointsOutput {
            categories: Some(categories),
            tracepoints: None,
            format: None,
            total: all.len(),
            truncated: false,
            next_cursor: None,
        });
    };
    if pattern.len() > 256 {
        return Err(invalid("`pattern` is at most 256 bytes".into()));
    }
    let glob = Glob::new(pattern).map_err(|e| {
        invalid(format!(
            "`pattern` is not a glob ({e}); use `*`, `?` and `[a-z]`, e.g. `syscalls:sys_enter_open*`"
        ))
    })?;
    let colon = pattern.contains(':');
    let mut matching = Vec::new();
    for (i, t) in all.into_iter().enumerate() {
        if i % 256 == 0 {
            ctx.check_cancelled("list_tracepoints")?;
        }
        if matches(&glob, colon, &t) {
            matching.push(t);
        }
    }
    if p.detail {
        let [one] = matching.as_slice() else {
            return Err(invalid(format!(
                "`detail` needs a pattern that matches exactly one tracepoint; `{pattern}` matches {}{}",
                matching.len(),
                if matching.is_empty() {
                    String::new()
                } else {
                    format!(
                        ": {}",
                        matching
                            .iter()
                            .take(10)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            )));
        };
        let (category, name) = one.split_once(':').unwrap_or(("", one));
        let format = tracefs::format(category, name)
            .map_err(|e| EbpfError::new(Code::TracefsReadFailed, e.to_string()))?;
        return Ok(ListTracepointsOutput {
            categories: None,
            tracepoints: Some(vec![one.clone()]),
            format: Some(format),
            total: 1,
            truncated: false,
            next_cursor: None,
        });
    }
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(invalid(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        )));
    }
    let start = match &p.cursor {
        Some(c) => matching
            .iter()
            .position(|t| t.as_str() > c.as_str())
            .unwrap_or(matching.len()),
        None => 0,
    };
    let total = matching.len();
    let page: Vec<String> = matching
        .into_iter()
        .skip(start)
        .take(limit as usize)
        .collect();
    let more = start + page.len() < total;
    Ok(ListTracepointsOutput {
        categories: None,
        next_cursor: more.then(|| page.last().cloned()).flatten(),
        tracepoints: Some(page),
        format: None,
        total,
        truncated: more,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let m = |p: &str, t: &str| matches(&Glob::new(p).unwrap(), p.contains(':'), t);
        assert!(m("sched:*", "sched:sched_switch"));
        assert!(m("*openat*", "syscalls:sys_enter_openat"));
        assert!(m("syscalls:sys_?nter_openat", "syscalls:sys_enter_openat"));
        assert!(!m("sched:*", "syscalls:sys_enter_openat"));
        assert!(m("sched", "sched:sched_switch"));
        assert!(!m("sched", "syscalls:sys_enter_sched_yield"));
        assert!(m("sys_enter_open[a-z]*", "syscalls:sys_enter_openat"));
    }
}
