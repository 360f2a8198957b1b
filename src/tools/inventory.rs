//! `list_programs`, `list_maps`, `list_links`: every BPF object on the host (not only the
//! server's), with who holds it, what it is attached to and, for programs, what it costs.
//! Stable order by id; a cursor pages through long lists.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CallContext, Hints, ToolMeta, ToolSpec};
use crate::config::Tier;
use crate::core::Core;
use crate::ebpf::bpf::{self, Object};
use crate::ebpf::inventory::{self, Holder, Holders, LinkRecord, MapRecord, Program};
use crate::ebpf::{disasm, maps, names};
use crate::error::{Code, EbpfError};

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
const MAX_SAMPLE_MS: u32 = 10_000;
/// Instructions shown by `detail` (a program can have a million).
const MAX_INSNS: usize = 2000;
/// Said when a page ends early to fit the result size limit.
const CUT_HINT: &str = "page ended early to fit server.max_result_bytes; continue with next_cursor, or narrow with filters or a smaller limit";

fn invalid(message: impl Into<String>) -> EbpfError {
    EbpfError::new(Code::InvalidArguments, message)
}

fn kernel(what: &str, e: impl std::fmt::Display) -> EbpfError {
    EbpfError::new(Code::BpfSyscallFailed, format!("{what}: {e}"))
}

/// Ids after the cursor, at most `limit` of them; also whether more remain.
fn page(
    ids: &[u32],
    cursor: Option<&str>,
    limit: Option<u32>,
) -> Result<(Vec<u32>, bool), EbpfError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(invalid(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        )));
    }
    let after: u32 = match cursor {
        Some(c) => c.parse().map_err(|_| {
            EbpfError::new(
                Code::InvalidCursor,
                "`cursor` must be the `next_cursor` of the previous page",
            )
            .with_context("cursor", c)
        })?,
        None => 0,
    };
    let rest: Vec<u32> = ids.iter().copied().filter(|id| *id > after).collect();
    let more = rest.len() > limit as usize;
    Ok((rest.into_iter().take(limit as usize).collect(), more))
}

fn type_filter(given: Option<&str>, valid: &[&str], what: &str) -> Result<(), EbpfError> {
    match given {
        Some(t) if !valid.contains(&t) => Err(invalid(format!(
            "unknown {what} type `{t}`; one of: {}",
            valid.join(", ")
        ))
        .with_context("type", t)),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------- list_programs

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListProgramsParams {
    /// Only this program.
    #[serde(default)]
    pub id: Option<u32>,
    /// Only programs whose name contains this.
    #[serde(default)]
    pub name: Option<String>,
    /// Only this type (tracepoint, kprobe, xdp, sched_cls, ...).
    #[serde(default, rename = "type")]
    pub prog_type: Option<String>,
    /// Only programs held open by this process.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Measure runs, ns per run and CPU share over this window (1-10000 ms).
    #[serde(default)]
    pub sample_ms: Option<u32>,
    /// With `id`: its instructions, verifier numbers and maps.
    #[serde(default)]
    pub detail: bool,
    /// Programs per page (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// Run-time cost of a program.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RunStats {
    /// Runs (in the sample window, or since stats were turned on).
    pub run_cnt: u64,
    pub run_time_ns: u64,
    /// Average time per run.
    pub avg_ns: u64,
    /// Percent of one CPU used in the sample window (sample_ms only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
}

/// A link attaching the program.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Attachment {
    pub link_id: u32,
    pub link_type: String,
    pub target: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ProgramEntry {
    #[serde(flatten)]
    pub program: Program,
    /// Processes holding the program open (pid, comm).
    pub holders: Vec<Holder>,
    /// Links attaching it, with their targets.
    pub attachments: Vec<Attachment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<RunStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<ProgramDetail>,
}

/// What the verifier saw, for one program.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ProgramDetail {
    /// Number of translated instructions.
    pub instruction_count: usize,
    /// The translated instructions (at most 2000), bpftool style.
    pub instructions: Vec<String>,
    pub instructions_truncated: bool,
    /// The maps it uses.
    pub maps: Vec<MapRecord>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListProgramsOutput {
    pub programs: Vec<ProgramEntry>,
    /// Programs matching the filters.
    pub total: usize,
    pub returned: usize,
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// Where `stats` come from: "sampled" (sample_ms), "cumulative" (kernel stats already
    /// on: kernel.bpf_stats_enabled, or this server watching its deployments' CPU), or "off"
    /// (pass sample_ms to measure).
    pub stats_source: String,
    /// With sample_ms: ids of the programs that used the most CPU, busiest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub busiest: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

pub fn programs_spec() -> ToolSpec {
    ToolSpec::new(
        ToolMeta {
            name: "list_programs",
            title: "List BPF programs",
            description: "Every BPF program on the host: id, name, type, tag, load time, \
                owner, sizes, memory, maps, holders, links. `sample_ms` measures runs, ns per run \
                and CPU share; `id` with `detail` adds its instructions.",
            tier: Tier::Read,
            hints: Hints::READ_ONLY,
            list_field: Some("programs"),
        },
        list_programs,
    )
}

/// Whether the kernel counts run time now: by its sysctl, or because this server holds the
/// statistics on to watch deployments (which the sysctl does not show).
fn stats_enabled(core: &Core) -> bool {
    core.deployments.stats_held() || crate::ebpf::host::bpf_stats_sysctl()
}

fn link_index(records: &[LinkRecord]) -> HashMap<u32, Vec<Attachment>> {
    let mut by_prog: HashMap<u32, Vec<Attachment>> = HashMap::new();
    for l in records {
        by_prog.entry(l.prog_id).or_default().push(Attachment {
            link_id: l.id,
            link_type: l.link_type.clone(),
            target: l.target.clone(),
        });
    }
    by_prog
}

fn all_links() -> Vec<LinkRecord> {
    inventory::ids(Object::Link)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|id| inventory::read_link(id).ok())
        .collect()
}

fn list_programs(
    core: &Core,
    p: ListProgramsParams,
    ctx: &CallContext,
) -> Result<ListProgramsOutput, EbpfError> {
    type_filter(p.prog_type.as_deref(), names::prog_type_names(), "program")?;
    if p.detail && p.id.is_none() {
        return Err(invalid(
            "`detail` needs `id`: instructions are shown for one program at a time",
        ));
    }
    if let Some(ms) = p.sample_ms
        && !(1..=MAX_SAMPLE_MS).contains(&ms)
    {
        return Err(invalid(format!(
            "`sample_ms` must be between 1 and {MAX_SAMPLE_MS}"
        )));
    }
    let holders = Holders::scan(Object::Prog, &|| ctx.cancel.is_cancelled());
    ctx.check_cancelled("list_programs")?;
    let ids = match p.id {
        Some(id) => vec![id],
        None => inventory::ids(Object::Prog).map_err(|e| kernel("listing programs", e))?,
    };
    // Read every candidate once (programs can vanish between listing and reading: skipped).
    let mut matching: Vec<Program> = Vec::new();
    for id in ids {
        let Ok((prog, _fd)) = inventory::read_program(id) else {
            continue;
        };
        if p.name.as_deref().is_some_and(|n| !prog.name.contains(n))
            || p.prog_type.as_deref().is_some_and(|t| prog.prog_type != t)
            || p.pid
                .is_some_and(|pid| !holders.of(Object::Prog, id).iter().any(|h| h.pid == pid))
        {
            continue;
        }
        matching.push(prog);
    }
    if let Some(id) = p.id
        && matching.is_empty()
    {
        return Err(EbpfError::new(Code::ProgramNotFound, format!("no program with id {id} (matching the filters); list_programs without `id` shows them all")).with_context("id", id));
    }
    let all_ids: Vec<u32> = matching.iter().map(|m| m.id).collect();
    let (page_ids, more) = page(&all_ids, p.cursor.as_deref(), p.limit)?;
    let mut programs: Vec<Program> = matching
        .into_iter()
        .filter(|m| page_ids.contains(&m.id))
        .collect();

    let mut stats: HashMap<u32, RunStats> = HashMap::new();
    let mut busiest = Vec::new();
    let stats_source = if let Some(ms) = p.sample_ms {
        let window = sample(&mut programs, ms, ctx)?;
        for prog in &programs {
            if let Some(s) = window.get(&prog.id) {
                stats.insert(prog.id, s.clone());
            }
        }
        let mut ranked: Vec<(&u32, &RunStats)> =
            window.iter().filter(|(_, s)| s.run_time_ns > 0).collect();
        ranked.sort_by(|a, b| b.1.run_time_ns.cmp(&a.1.run_time_ns).then(a.0.cmp(b.0)));
        busiest = ranked.into_iter().take(10).map(|(id, _)| *id).collect();
        "sampled"
    } else if stats_enabled(core) {
        for prog in &programs {
            stats.insert(
                prog.id,
                RunStats {
                    run_cnt: prog.run_cnt,
                    run_time_ns: prog.run_time_ns,
                    avg_ns: prog.run_time_ns.checked_div(prog.run_cnt).unwrap_or(0),
                    cpu_percent: None,
                },
            );
        }
        "cumulative"
    } else {
        "off"
    };

    let links = link_index(&all_links());
    let entries: Vec<ProgramEntry> = programs
        .into_iter()
        .map(|program| {
            let id = program.id;
            let detail = if p.detail {
                detail_of(&program).ok()
            } else {
                None
            };
            ProgramEntry {
                holders: holders.of(Object::Prog, id),
                attachments: links.get(&id).cloned().unwrap_or_default(),
                stats: stats.remove(&id),
                detail,
                program,
            }
        })
        .collect();
    let mut entries: Vec<ProgramEntry> = entries;
    let cut = super::fit_rows(&mut entries, super::row_budget(&ctx.config));
    let more = more || cut;
    let returned = entries.len();
    Ok(ListProgramsOutput {
        hint: cut.then(|| CUT_HINT.to_owned()),
        next_cursor: more
            .then(|| entries.last().map(|e| e.program.id.to_string()))
            .flatten(),
        total: all_ids.len(),
        returned,
        truncated: more,
        programs: entries,
        stats_source: stats_source.into(),
        busiest,
    })
}

/// Turns on kernel BPF statistics for `ms`, and returns each program's run count and time
/// in that window. The statistics are turned off again (if nobody else wants them) when the
/// window ends, whatever happens.
fn sample(
    programs: &mut [Program],
    ms: u32,
    ctx: &CallContext,
) -> Result<HashMap<u32, RunStats>, EbpfError> {
    let stats_fd = bpf::enable_stats().map_err(|e| {
        if e.errno() == Some(libc::EPERM) {
            EbpfError::new(
                Code::MissingCapability,
                "turning on BPF run-time statistics needs CAP_SYS_ADMIN",
            )
        } else {
            kernel("BPF_ENABLE_STATS", e)
        }
    })?;
    let read = |id: u32| {
        inventory::read_program(id)
            .ok()
            .map(|(p, _)| (p.run_cnt, p.run_time_ns))
    };
    let before: HashMap<u32, (u64, u64)> = programs
        .iter()
        .filter_map(|p| read(p.id).map(|v| (p.id, v)))
        .collect();
    let started = Instant::now();
    let window = Duration::from_millis(u64::from(ms));
    while started.elapsed() < window {
        if ctx.cancel.is_cancelled() {
            return Err(EbpfError::new(
                Code::Cancelled,
                "list_programs sampling was cancelled",
            ));
        }
        let elapsed = started.elapsed();
        ctx.progress(
            elapsed.as_millis() as f64,
            Some(f64::from(ms)),
            "sampling BPF run time",
        );
        std::thread::sleep((window - elapsed.min(window)).min(Duration::from_millis(250)));
    }
    let elapsed_ns = started.elapsed().as_nanos() as f64;
    let mut out = HashMap::new();
    for prog in programs.iter_mut() {
        let (Some((c0, t0)), Some((c1, t1))) = (before.get(&prog.id), read(prog.id)) else {
            continue;
        };
        prog.run_cnt = c1;
        prog.run_time_ns = t1;
        let (cnt, ns) = (c1.saturating_sub(*c0), t1.saturating_sub(*t0));
        out.insert(
            prog.id,
            RunStats {
                run_cnt: cnt,
                run_time_ns: ns,
                avg_ns: ns.checked_div(cnt).unwrap_or(0),
                cpu_percent: Some((ns as f64 / elapsed_ns * 100.0 * 1000.0).round() / 1000.0),
            },
        );
    }
    drop(stats_fd);
    Ok(out)
}

fn detail_of(program: &Program) -> Result<ProgramDetail, EbpfError> {
    let insns =
        inventory::program_insns(program.id).map_err(|e| kernel("reading instructions", e))?;
    let symbols = crate::ebpf::host::helper_call_symbols(&disasm::call_targets(&insns));
    let (instructions, count) =
        disasm::disassemble(&insns, MAX_INSNS, |imm| symbols.get(&imm).cloned());
    let maps = program
        .map_ids
        .iter()
        .filter_map(|id| inventory::read_map(*id).ok().map(|(m, _)| m))
        .collect();
    Ok(ProgramDetail {
        instruction_count: count,
        instructions_truncated: count > instructions.len(),
        instructions,
        maps,
    })
}

// ---------------------------------------------------------------- list_maps

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListMapsParams {
    /// Only this map.
    #[serde(default)]
    pub id: Option<u32>,
    /// Only maps whose name contains this.
    #[serde(default)]
    pub name: Option<String>,
    /// Only this type (hash, array, percpu_hash, ringbuf, ...).
    #[serde(default, rename = "type")]
    pub map_type: Option<String>,
    /// Count entries exactly (a full scan).
    #[serde(default)]
    pub count: bool,
    /// Maps per page (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct MapEntry {
    #[serde(flatten)]
    pub map: MapRecord,
    /// Key and value type names from BTF.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_type: Option<String>,
    /// Processes holding the map open.
    pub holders: Vec<Holder>,
    /// Exact number of entries (with `count`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListMapsOutput {
    pub maps: Vec<MapEntry>,
    pub total: usize,
    pub returned: usize,
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

pub fn maps_spec() -> ToolSpec {
    ToolSpec::new(
        ToolMeta {
            name: "list_maps",
            title: "List BPF maps",
            description: "Every BPF map on the host: id, name, type, sizes, BTF types, flags, \
                memory, holders; `count` counts entries exactly. Contents: map_dump.",
            tier: Tier::Read,
            hints: Hints::READ_ONLY,
            list_field: Some("maps"),
        },
        list_maps,
    )
}

fn list_maps(
    _core: &Core,
    p: ListMapsParams,
    ctx: &CallContext,
) -> Result<ListMapsOutput, EbpfError> {
    type_filter(p.map_type.as_deref(), names::map_type_names(), "map")?;
    let holders = Holders::scan(Object::Map, &|| ctx.cancel.is_cancelled());
    ctx.check_cancelled("list_maps")?;
    let ids = match p.id {
        Some(id) => vec![id],
        None => inventory::ids(Object::Map).map_err(|e| kernel("listing maps", e))?,
    };
    let mut matching = Vec::new();
    for id in ids {
        let Ok((map, _)) = inventory::read_map(id) else {
            continue;
        };
        if p.name.as_deref().is_some_and(|n| !map.name.contains(n))
            || p.map_type.as_deref().is_some_and(|t| map.map_type != t)
        {
            continue;
        }
        matching.push(map);
    }
    if let Some(id) = p.id
        && matching.is_empty()
    {
        return Err(EbpfError::new(
            Code::MapNotFound,
            format!("no map with id {id} (matching the filters)"),
        )
        .with_context("id", id));
    }
    let all_ids: Vec<u32> = matching.iter().map(|m| m.id).collect();
    let (page_ids, more) = page(&all_ids, p.cursor.as_deref(), p.limit)?;
    let mut out = Vec::new();
    for map in matching.into_iter().filter(|m| page_ids.contains(&m.id)) {
        if ctx.cancel.is_cancelled() {
            return Err(EbpfError::new(Code::Cancelled, "list_maps was cancelled"));
        }
        let open = maps::OpenMap::by_id(map.id).ok();
        let (key_type, value_type) = match open.as_ref().and_then(|o| o.btf.as_ref()) {
            Some(btf) if map.btf_value_type_id != 0 || map.btf_key_type_id != 0 => (
                Some(btf.type_name(map.btf_key_type_id)),
                Some(btf.type_name(map.btf_value_type_id)),
            ),
            _ => (None, None),
        };
        let entries = if p.count && maps::dumpable(&map.map_type) {
            open.as_ref()
                .and_then(|o| o.scan(|_, _, _| true).ok())
                .map(|s| s.entries)
        } else {
            None
        };
        out.push(MapEntry {
            holders: holders.of(Object::Map, map.id),
            key_type,
            value_type,
            entries,
            map,
        });
    }
    let cut = super::fit_rows(&mut out, super::row_budget(&ctx.config));
    let more = more || cut;
    Ok(ListMapsOutput {
        hint: cut.then(|| CUT_HINT.to_owned()),
        next_cursor: more
            .then(|| out.last().map(|e| e.map.id.to_string()))
            .flatten(),
        total: all_ids.len(),
        returned: out.len(),
        truncated: more,
        maps: out,
    })
}

// ---------------------------------------------------------------- list_links

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListLinksParams {
    /// Only this link.
    #[serde(default)]
    pub id: Option<u32>,
    /// Only links of this program.
    #[serde(default)]
    pub prog_id: Option<u32>,
    /// Only this type (raw_tracepoint, tracing, cgroup, xdp, perf_event, tcx, ...).
    #[serde(default, rename = "type")]
    pub link_type: Option<String>,
    /// Links per page (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct LinkEntry {
    #[serde(flatten)]
    pub link: LinkRecord,
    /// Processes holding the link open.
    pub holders: Vec<Holder>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListLinksOutput {
    pub links: Vec<LinkEntry>,
    pub total: usize,
    pub returned: usize,
    pub truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

pub fn links_spec() -> ToolSpec {
    ToolSpec::new(
        ToolMeta {
            name: "list_links",
            title: "List BPF links",
            description: "Every BPF link on the host: which program attaches where, in human \
                terms, and who holds it.",
            tier: Tier::Read,
            hints: Hints::READ_ONLY,
            list_field: Some("links"),
        },
        list_links,
    )
}

fn list_links(
    _core: &Core,
    p: ListLinksParams,
    ctx: &CallContext,
) -> Result<ListLinksOutput, EbpfError> {
    type_filter(p.link_type.as_deref(), names::link_type_names(), "link")?;
    let holders = Holders::scan(Object::Link, &|| ctx.cancel.is_cancelled());
    ctx.check_cancelled("list_links")?;
    let ids = match p.id {
        Some(id) => vec![id],
        None => inventory::ids(Object::Link).map_err(|e| kernel("listing links", e))?,
    };
    let matching: Vec<LinkRecord> = ids
        .into_iter()
        .filter_map(|id| inventory::read_link(id).ok())
        .filter(|l| {
            p.prog_id.is_none_or(|pid| l.prog_id == pid)
                && p.link_type.as_deref().is_none_or(|t| l.link_type == t)
        })
        .collect();
    if let Some(id) = p.id
        && matching.is_empty()
    {
        return Err(EbpfError::new(
            Code::LinkNotFound,
            format!("no link with id {id} (matching the filters)"),
        )
        .with_context("id", id));
    }
    let all_ids: Vec<u32> = matching.iter().map(|l| l.id).collect();
    let (page_ids, more) = page(&all_ids, p.cursor.as_deref(), p.limit)?;
    let mut links: Vec<LinkEntry> = matching
        .into_iter()
        .filter(|l| page_ids.contains(&l.id))
        .map(|mut link| {
            let holders = holders.of(Object::Link, link.id);
            link.resolve_fd_path(&holders);
            LinkEntry { holders, link }
        })
        .collect();
    let cut = super::fit_rows(&mut links, super::row_budget(&ctx.config));
    let more = more || cut;
    Ok(ListLinksOutput {
        hint: cut.then(|| CUT_HINT.to_owned()),
        next_cursor: more
            .then(|| links.last().map(|e| e.link.id.to_string()))
            .flatten(),
        total: all_ids.len(),
        returned: links.len(),
        truncated: more,
        links,
    })
}
