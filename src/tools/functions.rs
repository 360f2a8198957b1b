//! `list_functions`: the kernel functions the kfunc gadget can trace, found by glob, with
//! their prototypes from BTF.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CallContext, Hints, ToolMeta, ToolSpec};
use crate::config::Tier;
use crate::core::Core;
use crate::ebpf::functions::{Catalog, FunctionRow, Source};
use crate::error::{Code, EbpfError};
use crate::glob::Glob;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListFunctionsParams {
    /// Glob, e.g. `tcp_v4_*`.
    pub pattern: String,
    /// Per page (default 100, max 1000).
    #[serde(default)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListFunctionsOutput {
    /// Matching functions, in the kernel's order.
    pub functions: Vec<FunctionRow>,
    /// Functions matching.
    pub total: usize,
    /// `ftrace`: what fentry and kprobes can hook; `btf`: that list is unreadable here
    /// (`note` says why), so every function BTF describes.
    pub source: Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

pub fn spec() -> ToolSpec {
    ToolSpec::new(
        ToolMeta {
            name: "list_functions",
            title: "Find kernel functions",
            description: "Kernel functions the kfunc gadget can trace, by glob (`tcp_v4_*`), \
                with their prototypes from BTF.",
            tier: Tier::Read,
            hints: Hints::READ_ONLY,
            list_field: Some("functions"),
        },
        run,
    )
}

fn run(
    _core: &Core,
    p: ListFunctionsParams,
    ctx: &CallContext,
) -> Result<ListFunctionsOutput, EbpfError> {
    let invalid = |m: String| EbpfError::new(Code::InvalidArguments, m);
    if p.pattern.is_empty() || p.pattern.len() > 256 {
        return Err(invalid(
            "`pattern` is a glob of 1 to 256 bytes, e.g. `tcp_v4_*` or `vfs_read`".into(),
        ));
    }
    let glob = Glob::new(&p.pattern)
        .map_err(|e| invalid(format!("`pattern` is not a glob ({e}); e.g. `tcp_v4_*`")))?;
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(invalid(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        )));
    }
    let catalog = Catalog::load();
    ctx.check_cancelled("list_functions")?;
    let matching: Vec<&(String, Option<String>)> = catalog.matching(&glob).collect();
    let start = match &p.cursor {
        Some(c) => match matching.iter().position(|(n, _)| n == c) {
            Some(i) => i + 1,
            None => {
                return Err(EbpfError::new(
                    Code::InvalidCursor,
                    "`cursor` is not a function this pattern lists; start again without it",
                ));
            }
        },
        None => 0,
    };
    let total = matching.len();
    let mut functions: Vec<FunctionRow> = matching
        .iter()
        .skip(start)
        .take(limit as usize)
        .map(|(n, m)| catalog.row(n, m.as_deref()))
        .collect();
    // A page fits the result bound whole, so the cursor continues after its last row.
    super::fit_rows(&mut functions, super::row_budget(&ctx.config));
    let more = start + functions.len() < total;
    Ok(ListFunctionsOutput {
        next_cursor: more
            .then(|| functions.last().map(|f| f.name.clone()))
            .flatten(),
        functions,
        total,
        source: catalog.source,
        note: catalog.ftrace_error.clone(),
        truncated: more,
    })
}
