//! From a call's arguments to a plan: the gadget's programs and hooks, kernel-side
//! filters, the mode and grouping, checked against the gadget and the limits.

use std::time::Duration;

use serde_json::{Map, Value};

use super::filter::{Filter, Kind};
use super::{DEFAULT_DURATION_MS, DEFAULT_MAX_EVENTS, DEFAULT_TOP, Mode, TraceParams};
use crate::ebpf::caps::{CapSet, Needed};
use crate::ebpf::gadget::{GadgetCfg, GadgetError, Hook};
use crate::ebpf::tracefs;
use crate::error::{Code, EbpfError};
use crate::gadgets::{self, Clock, Output, profile};

pub(crate) fn invalid(message: impl Into<String>) -> EbpfError {
    EbpfError::new(Code::InvalidArguments, message)
}

/// The kernel-side filter configuration for these arguments, and the cgroup directory of a
/// `container` (its tasks and those of cgroups below it pass).
pub(crate) fn filters(
    p: &TraceParams,
) -> Result<(GadgetCfg, Option<crate::ebpf::sys::PinnedFile>), EbpfError> {
    let mut cfg = GadgetCfg {
        self_tgid: std::process::id(),
        ..GadgetCfg::default()
    };
    if let Some(pid) = p.pid {
        cfg.tgid = pid;
    }
    if let Some(uid) = p.uid {
        cfg.uid_set = 1;
        cfg.uid = uid;
    }
    if let Some(comm) = &p.comm
        && !cfg.set_comm(comm)
    {
        return Err(invalid(format!(
            "`comm` must be 1 to 15 bytes without NUL (the kernel keeps 15 of a process name); \
             `{}` is {}",
            comm.escape_debug(),
            comm.len()
        )));
    }
    let mut scope = None;
    match (&p.cgroup, &p.container) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "give `cgroup` or `container`, not both: a container is one cgroup",
            ));
        }
        (Some(path), None) => cfg.cgroup_id = cgroup_id(path)?,
        (None, Some(id)) => {
            scope = Some(container_cgroup(id)?);
            cfg.flags |= crate::ebpf::gadget::UNDER_SCOPE;
        }
        (None, None) => {}
    }
    Ok((cfg, scope))
}

/// The cgroup v2 directory of the running container whose id is or starts with `prefix`.
pub(crate) fn container_cgroup(prefix: &str) -> Result<crate::ebpf::sys::PinnedFile, EbpfError> {
    let prefix = prefix.to_ascii_lowercase();
    if prefix.len() < 4 || prefix.len() > 64 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(format!(
            "`container` is a container id or its first 4 to 64 hex digits (`docker ps`, \
             `crictl ps`, process_info's container); got `{}`",
            prefix.chars().take(80).collect::<String>()
        )));
    }
    let root = crate::ebpf::host::cgroup2_root()
        .ok_or_else(|| invalid("`container` needs a cgroup v2 hierarchy, and none is mounted"))?;
    let found = crate::ebpf::process::container_cgroups(&root, &prefix);
    match found.as_slice() {
        [] => Err(invalid(format!(
            "no running container with an id starting `{prefix}` has a cgroup under {}; \
             `docker ps --no-trunc` or `crictl ps` list the running ones (a server in a \
             container sees them when the host's /sys/fs/cgroup is mounted, as \
             deploy/kubernetes does)",
            root.display()
        ))
        .with_context("container", prefix.as_str())),
        [(_, dir)] => {
            let not_one = || {
                invalid(format!(
                    "the container's cgroup {} went away",
                    dir.display()
                ))
            };
            crate::ebpf::sys::PinnedFile::open(dir).map_err(|_| not_one())
        }
        many => Err(invalid(format!(
            "`{prefix}` starts the ids of {} containers ({}); give more of the id",
            many.len(),
            many.iter()
                .map(|(id, _)| &id[..12])
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .with_context("container", prefix.as_str())),
    }
}

/// The cgroup v2 id of a directory: its inode number. Any failure reads the same, so the
/// argument cannot be used to learn what exists elsewhere on the host.
pub(crate) fn cgroup_id(path: &str) -> Result<u64, EbpfError> {
    let root = crate::ebpf::host::cgroup2_root()
        .ok_or_else(|| invalid("`cgroup` needs a cgroup v2 hierarchy, and none is mounted"))?;
    let given = std::path::Path::new(path);
    let full = if given.is_absolute() {
        given.to_path_buf()
    } else {
        root.join(given)
    };
    let not_one = || {
        invalid(format!(
            "`cgroup` names no directory of the cgroup v2 hierarchy at {}; give a path under \
             it (absolute, or relative to it)",
            root.display()
        ))
    };
    let dir = crate::ebpf::sys::PinnedFile::open(&full).map_err(|_| not_one())?;
    if !dir.is_cgroup2_dir() {
        return Err(not_one());
    }
    dir.inode().map_err(|_| not_one())
}

/// Turns one record from the kernel into an event (or one key of a kernel table into the
/// fields it stands for).
pub(crate) type Decoder = Box<dyn Fn(&[u8], &Clock) -> Option<Map<String, Value>> + Send + Sync>;

/// What to load and how to read it: a built-in gadget, or one fitted to the call (a
/// tracepoint's format, a uprobe's target, a profile's frequency).
pub(crate) struct Plan {
    pub(crate) name: &'static str,
    pub(crate) object: &'static [u8],
    pub(crate) programs: Vec<(&'static str, Hook)>,
    pub(crate) output: Output,
    pub(crate) fields: Vec<String>,
    /// What each field holds, for `filter` (parallel to `fields`).
    pub(crate) kinds: Vec<Kind>,
    pub(crate) default_group_by: Vec<String>,
    /// Fields the kernel keys by only when grouped by (sets arg0).
    pub(crate) detail_fields: &'static [&'static str],
    /// Gadget-specific settings for the kernel side (arg0..arg2 of gadget_cfg).
    pub(crate) args: (u32, u32, u32),
    pub(crate) decode: Decoder,
    /// Said with the result: why it may see less than asked (a probe that cannot fire).
    pub(crate) warnings: Vec<String>,
    /// How count mode can run in the kernel (`None`: the server counts every event).
    pub(crate) counting: Option<Counting>,
    /// A histogram of this field of the hook's record (its gadget_cfg.value_field).
    pub(crate) value_hist: Option<u32>,
    /// The mode when the call names none, if not the output's (see [`modes`]).
    pub(crate) default_mode: Option<Mode>,
}

/// Fields that come from one value the kernel reads where the event happens, and how.
pub(crate) struct CountValue {
    pub(crate) fields: Vec<String>,
    /// gadget_cfg.value_field: which part of the hook's record it is (0: the gadget knows).
    pub(crate) cfg: u32,
    pub(crate) decode: ValueDecoder,
}

/// The fields one value stands for, added to a group's record.
pub(crate) type ValueDecoder = std::sync::Arc<dyn Fn(i64, &mut Map<String, Value>) + Send + Sync>;

/// Count mode in the kernel (gadgets::count): the programs that count, and the values
/// they can key by besides the common fields (one at a time).
pub(crate) struct Counting {
    pub(crate) programs: Vec<(&'static str, Hook)>,
    pub(crate) values: Vec<CountValue>,
}

impl Counting {
    fn of(k: &'static gadgets::count::KernelCount) -> Self {
        Counting {
            programs: k.programs.to_vec(),
            values: vec![CountValue {
                fields: k.value_fields.iter().map(|f| (*f).to_owned()).collect(),
                cfg: 0,
                decode: std::sync::Arc::new(k.decode_value),
            }],
        }
    }

    /// The count keys for `group_by`, and the value among them, when the kernel knows
    /// every field of it.
    fn keys(&self, group_by: &[String]) -> Option<(u32, Option<&CountValue>)> {
        let none: &[String] = &[];
        if let Some(keys) = gadgets::count::keys(group_by, none) {
            return Some((keys, None));
        }
        self.values
            .iter()
            .find_map(|v| gadgets::count::keys(group_by, &v.fields).map(|keys| (keys, Some(v))))
    }
}

impl Plan {
    pub(crate) fn hooks(&self) -> Vec<String> {
        self.programs.iter().map(|(_, h)| h.to_string()).collect()
    }

    pub(crate) fn of(gadget: &'static gadgets::Gadget) -> Self {
        Plan {
            name: gadget.name,
            object: gadget.object,
            programs: gadget.programs.to_vec(),
            output: gadget.output,
            fields: gadget.all_fields().map(|f| f.name.to_owned()).collect(),
            kinds: gadget.all_fields().map(|f| Kind::of_type(f.ty)).collect(),
            default_group_by: gadget
                .default_group_by
                .iter()
                .map(|f| (*f).to_owned())
                .collect(),
            detail_fields: gadget.detail_fields,
            args: (0, 0, 0),
            decode: Box::new(move |bytes, clock| gadget.record(bytes, clock)),
            warnings: Vec::new(),
            counting: gadget.kernel_count.as_ref().map(Counting::of),
            value_hist: None,
            default_mode: None,
        }
    }
}

/// Says which option belongs to which gadget when one is given to another.
pub(crate) fn check_options(p: &TraceParams) -> Result<(), EbpfError> {
    let probes: &[&str] = &["uprobe", "kfunc"];
    for (given, option, owners) in [
        (p.tracepoint.is_some(), "tracepoint", &["tracepoint"][..]),
        (p.value.is_some(), "value", &["tracepoint"]),
        (p.target.is_some(), "target", probes),
        (p.on_return.is_some(), "return", probes),
        (p.frequency_hz.is_some(), "frequency_hz", &["profile"]),
    ] {
        if given && !owners.contains(&p.gadget.as_str()) {
            return Err(invalid(format!(
                "`{option}` applies to the {} gadget{} only",
                owners.join(" and "),
                if owners.len() > 1 { "s" } else { "" }
            )));
        }
    }
    Ok(())
}

pub(crate) fn plan(p: &TraceParams, limits: &Limits) -> Result<Plan, EbpfError> {
    check_options(p)?;
    match p.gadget.as_str() {
        "tracepoint" => tracepoint_plan(p),
        "uprobe" => uprobe_plan(p),
        "kfunc" => super::kfunc::kfunc_plan(p, limits.max_functions),
        "syscalls" => Ok(syscalls_plan(p)),
        "profile" => {
            let hz = p.frequency_hz.unwrap_or(profile::DEFAULT_HZ);
            if hz == 0 || hz > profile::MAX_HZ {
                return Err(invalid(format!(
                    "`frequency_hz` must be between 1 and {}",
                    profile::MAX_HZ
                )));
            }
            let mut plan = Plan::of(&profile::GADGET);
            plan.programs = vec![(
                profile::PROGRAM,
                Hook::CpuClock {
                    frequency_hz: u64::from(hz),
                },
            )];
            Ok(plan)
        }
        name => {
            let gadget = gadgets::find(name).ok_or_else(|| {
                let known: Vec<&str> = gadgets::catalogue().iter().map(|g| g.name).collect();
                invalid(format!(
                    "unknown gadget `{name}`{}; one of: {}",
                    crate::suggest::did_you_mean(name, known.iter().copied()),
                    known.join(", ")
                ))
                .with_context("gadget", name)
            })?;
            let optional = gadget
                .fixed_record
                .map_or(Ok(None), |r| r.resolve())
                .map_err(|why| {
                    EbpfError::new(
                        Code::GadgetFailed,
                        format!("the `{name}` gadget cannot run on this kernel: {why}"),
                    )
                    .with_context("gadget", name)
                })?;
            let mut plan = Plan::of(gadget);
            if let Some(offset) = optional {
                plan.args.0 = offset as u32;
            }
            Ok(plan)
        }
    }
}

pub(crate) fn tracepoint_plan(p: &TraceParams) -> Result<Plan, EbpfError> {
    let spec = p.tracepoint.as_deref().ok_or_else(|| {
        invalid("the tracepoint gadget needs `tracepoint`: \"category:name\" (list_tracepoints finds them)")
    })?;
    let (category, name) = spec.split_once(':').ok_or_else(|| {
        invalid(format!(
            "`tracepoint` is `category:name`, e.g. \"sched:sched_switch\"; got `{spec}`"
        ))
    })?;
    let format = tracefs::format(category, name).map_err(|e| match e {
        tracefs::TracefsError::NoSuchTracepoint(_) => invalid(format!(
            "no tracepoint `{spec}` on this kernel{}; list_tracepoints with a pattern finds \
             the right name",
            tracefs::list()
                .map(|all| crate::suggest::did_you_mean(spec, all.iter().map(String::as_str)))
                .unwrap_or_default()
        ))
        .with_context("tracepoint", spec),
        other => EbpfError::new(Code::FilesystemNotMounted, other.to_string()),
    })?;
    let (args, strings) = gadgets::tracepoint::config(&format);
    let fields: Vec<String> = gadgets::COMMON_FIELDS
        .iter()
        .map(|f| f.name.to_owned())
        .chain(
            format
                .fields
                .iter()
                .map(|f| gadgets::tracepoint::field_name(&f.name)),
        )
        .collect();
    let hook = Hook::Tracepoint(category.to_owned().into(), name.to_owned().into());
    let mut plan = Plan::of(&gadgets::tracepoint::GADGET);
    plan.programs = vec![(gadgets::tracepoint::PROGRAM, hook)];
    // Tracepoint fields are compared by what the event holds.
    plan.kinds = gadgets::COMMON_FIELDS
        .iter()
        .map(|f| Kind::of_type(f.ty))
        .chain(std::iter::repeat(Kind::Any))
        .take(fields.len())
        .collect();
    plan.fields = fields;
    plan.args = args;
    plan.counting = Some(Counting {
        programs: plan.programs.clone(),
        values: gadgets::tracepoint::numeric_fields(&format)
            .into_iter()
            .map(|field| CountValue {
                fields: vec![field.name.clone()],
                cfg: field.cfg,
                decode: std::sync::Arc::new(move |v, out| {
                    out.insert(field.name.clone(), field.json(v));
                }),
            })
            .collect(),
    });
    if p.mode == Some(Mode::Histogram) || p.value.is_some() {
        value_histogram(&mut plan, p, spec, &format)?;
        return Ok(plan);
    }
    plan.decode = Box::new(move |bytes, clock| {
        if bytes.len() < gadgets::tracepoint::EVENT_SIZE {
            return None;
        }
        let mut out = Map::new();
        let rest = gadgets::header(bytes, clock, &mut out)?;
        gadgets::tracepoint::decode(&format, &strings, rest, &mut out);
        Some(out)
    });
    Ok(plan)
}

/// The tracepoint gadget's histogram mode: log2 buckets of one integer field of the record
/// (`value`), kept in the kernel, per process when grouped by pid or comm.
fn value_histogram(
    plan: &mut Plan,
    p: &TraceParams,
    spec: &str,
    format: &tracefs::Format,
) -> Result<(), EbpfError> {
    let numeric = gadgets::tracepoint::numeric_fields(format);
    let names: Vec<&str> = numeric.iter().map(|f| f.name.as_str()).collect();
    if p.mode != Some(Mode::Histogram) {
        return Err(invalid("`value` applies to mode histogram"));
    }
    if numeric.is_empty() {
        return Err(invalid(format!(
            "`{spec}` has no integer fields to make a histogram of; use mode events or count"
        )));
    }
    let name = p.value.as_deref().ok_or_else(|| {
        invalid(format!(
            "mode histogram of the tracepoint gadget needs `value`: the integer field to \
             bucket, one of {}",
            names.join(", ")
        ))
    })?;
    let field = numeric.iter().find(|f| f.name == name).ok_or_else(|| {
        invalid(format!(
            "`value`: `{name}` is not an integer field of `{spec}`{}; its integer fields: {}",
            crate::suggest::did_you_mean(name, names.iter().copied()),
            names.join(", ")
        ))
        .with_context("value", name)
    })?;
    plan.output = Output::KernelValues;
    plan.fields = vec!["pid".to_owned(), "comm".to_owned()];
    plan.kinds = vec![Kind::of_type("u32"), Kind::of_type("string")];
    plan.default_group_by = Vec::new();
    plan.counting = None;
    plan.value_hist = Some(field.cfg);
    plan.decode = Box::new(|bytes, _| {
        if bytes.len() < gadgets::hist::KEY_SIZE {
            return None;
        }
        // kind 1 marks a per-process key: pid 0 (idle, interrupts) is one as well.
        let key = gadgets::hist::Key::parse(bytes);
        let mut out = Map::new();
        if key.kind == 1 {
            out.insert("pid".into(), key.id.into());
            out.insert("comm".into(), key.comm().into());
        }
        Some(out)
    });
    Ok(())
}

pub(crate) fn uprobe_plan(p: &TraceParams) -> Result<Plan, EbpfError> {
    use gadgets::uprobe;
    let target = p.target.as_deref().ok_or_else(|| {
        invalid(
            "the uprobe gadget needs `target`: \"binary:symbol\", e.g. \"/usr/bin/bash:readline\"",
        )
    })?;
    let (binary, symbol) = uprobe::split_target(target).map_err(invalid)?;
    // The file is pinned before anything reads it: a FIFO cannot block the call, a device
    // cannot act, and the file attached is the file checked. With `pid` it is the file
    // that process maps, as it sees it.
    let resolved = uprobe::resolve(binary, p.pid).map_err(|e| match e {
        uprobe::TargetError::Invalid(text) => invalid(text).with_context("gadget", "uprobe"),
        uprobe::TargetError::NotFound => target_not_found(),
        uprobe::TargetError::NoProcess(pid) => process_not_found(pid),
    })?;
    let (file, symbol) = (resolved.file, symbol.to_owned());
    let mut plan = Plan::of(&uprobe::GADGET);
    plan.warnings.extend(resolved.warning);
    let hook = |ret| Hook::Uprobe {
        binary: resolved.shown.clone(),
        file: Some(file.clone()),
        symbol: symbol.clone(),
        ret,
        pid: p.pid,
    };
    plan.programs = vec![(uprobe::ENTRY, hook(false))];
    let on_return = p.on_return == Some(true);
    if on_return && p.mode != Some(Mode::Events) {
        return Err(invalid(
            "`return: true` applies to mode events (mode histogram gives call durations)",
        ));
    }
    // Counting calls whose arguments pass a filter needs each call's arguments: the calls
    // are sent as events and counted by the server.
    let per_call = p.mode == Some(Mode::Events)
        || (p.filter.is_some() && matches!(p.mode, None | Some(Mode::Count)));
    if per_call {
        // One event per call, with its argument registers: at entry, or at the return with
        // the return value and the duration.
        plan.programs = if on_return {
            vec![
                (uprobe::CALL_ENTER, hook(false)),
                (uprobe::CALL_RETURN, hook(true)),
            ]
        } else {
            vec![(uprobe::CALL, hook(false))]
        };
        plan.output = Output::Events;
        plan.default_mode = Some(Mode::Count);
        let extra: &[gadgets::Field] = if on_return {
            &uprobe::RETURN_FIELDS
        } else {
            &[]
        };
        let all = || {
            gadgets::COMMON_FIELDS
                .iter()
                .chain(&uprobe::CALL_FIELDS)
                .chain(extra)
        };
        plan.fields = all().map(|f| f.name.to_owned()).collect();
        plan.kinds = all().map(|f| Kind::of_type(f.ty)).collect();
        plan.default_group_by = vec!["comm".to_owned()];
        plan.decode = Box::new(move |bytes, clock| {
            if bytes.len() < uprobe::EVENT_SIZE {
                return None;
            }
            let mut out = Map::new();
            let rest = gadgets::header(bytes, clock, &mut out)?;
            uprobe::decode_call(rest, on_return, &mut out);
            Some(out)
        });
    }
    if p.mode == Some(Mode::Histogram) {
        // Latency: entry stamps the time, return adds it to a histogram (arg1).
        plan.programs.push((uprobe::RETURN, hook(true)));
        plan.output = Output::KernelHistograms;
        plan.default_group_by = Vec::new();
        plan.args.1 = 1;
    }
    Ok(plan)
}

/// syscalls: counts (the default), or with mode histogram the duration of each call.
pub(crate) fn syscalls_plan(p: &TraceParams) -> Plan {
    use gadgets::syscalls;
    let mut plan = Plan::of(&syscalls::GADGET);
    if p.mode == Some(Mode::Histogram) {
        plan.programs = vec![
            (
                syscalls::ENTER,
                Hook::tracepoint("raw_syscalls", "sys_enter"),
            ),
            (syscalls::EXIT, Hook::tracepoint("raw_syscalls", "sys_exit")),
        ];
        plan.output = Output::KernelHistograms;
        plan.detail_fields = &["pid"];
        plan.decode = Box::new(|bytes, _| {
            if bytes.len() < gadgets::hist::KEY_SIZE {
                return None;
            }
            let mut out = Map::new();
            syscalls::decode_hist_key(bytes, &mut out);
            Some(out)
        });
    }
    plan
}

/// The mode a gadget produces when the call names none, and the modes it allows.
pub(crate) fn modes(output: Output) -> (Mode, &'static [Mode]) {
    match output {
        Output::Events => (Mode::Events, &[Mode::Events, Mode::Count]),
        Output::KernelCounts(_) => (Mode::Count, &[Mode::Count]),
        Output::KernelHistograms | Output::KernelValues => (Mode::Histogram, &[Mode::Histogram]),
        Output::Stacks => (Mode::Count, &[Mode::Count]),
    }
}

/// The modes a gadget offers, its default first.
pub fn gadget_modes(gadget: &gadgets::Gadget) -> Vec<Mode> {
    match gadget.name {
        "uprobe" | "kfunc" => return vec![Mode::Count, Mode::Histogram, Mode::Events],
        "syscalls" => return vec![Mode::Count, Mode::Histogram],
        "tracepoint" => return vec![Mode::Events, Mode::Count, Mode::Histogram],
        _ => {}
    }
    modes(gadget.output).1.to_vec()
}

pub(crate) fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Events => "events",
        Mode::Count => "count",
        Mode::Histogram => "histogram",
    }
}

/// Lines of a verifier log an error keeps: the end, where the reason is.
pub(crate) const VERIFIER_TAIL: usize = 8;

/// `text` with a verifier log cut to its last lines.
pub(crate) fn shorten_verifier_log(text: &str) -> String {
    match text.split_once("Verifier output:") {
        Some((head, log)) => {
            let lines: Vec<&str> = log.trim().lines().collect();
            let tail = &lines[lines.len().saturating_sub(VERIFIER_TAIL)..];
            format!("{head}verifier log (last lines): {}", tail.join(" | "))
        }
        None => text.to_owned(),
    }
}

/// The `pid`, `uid` and `comm` equalities a filter requires, checked in the kernel as
/// well when the call's own parameters leave those filters free: events that cannot pass
/// are then not sent at all. The filter still runs on every event, so the answer is the
/// same either way.
pub(crate) fn push_down(filter: &Filter, cfg: &mut GadgetCfg) {
    use super::filter::Required;
    for (field, value) in filter.required_equalities() {
        match (field, value) {
            ("pid", Required::Int(pid)) if cfg.tgid == 0 => {
                if let Ok(pid @ 1..) = u32::try_from(pid) {
                    cfg.tgid = pid;
                }
            }
            ("uid", Required::Int(uid)) if cfg.uid_set == 0 => {
                if let Ok(uid) = u32::try_from(uid) {
                    (cfg.uid_set, cfg.uid) = (1, uid);
                }
            }
            ("comm", Required::Str(comm)) if cfg.comm_set == 0 => {
                cfg.set_comm(comm);
            }
            _ => {}
        }
    }
}

/// Whether the kernel's filters alone decide `filter`: it is nothing but equalities on
/// pid, uid and comm, each one set in `cfg`.
pub(crate) fn wholly_in_kernel(filter: &Filter, cfg: &GadgetCfg) -> bool {
    use super::filter::Required;
    filter.is_only_equalities()
        && filter
            .required_equalities()
            .into_iter()
            .all(|(field, value)| match (field, value) {
                ("pid", Required::Int(pid)) => cfg.tgid != 0 && i128::from(cfg.tgid) == pid,
                ("uid", Required::Int(uid)) => cfg.uid_set != 0 && i128::from(cfg.uid) == uid,
                ("comm", Required::Str(comm)) => {
                    let mut want = GadgetCfg::default();
                    cfg.comm_set != 0 && want.set_comm(comm) && want.comm == cfg.comm
                }
                _ => false,
            })
}

/// Count mode in the kernel where the gadget can and the kernel knows every group key:
/// its counting programs attach, and the server reads a table instead of every event.
fn count_in_kernel(plan: &mut Plan, cfg: &mut GadgetCfg, group_by: &[String]) {
    let Some(counting) = plan.counting.take() else {
        return;
    };
    let Some((keys, value)) = counting.keys(group_by) else {
        return;
    };
    cfg.count_keys = keys;
    cfg.value_field = value.map_or(0, |v| v.cfg);
    let decode_value: ValueDecoder = match value {
        Some(v) => v.decode.clone(),
        None => std::sync::Arc::new(gadgets::count::NO_VALUE),
    };
    plan.programs = counting.programs;
    plan.output = Output::KernelCounts(gadgets::count::TABLE);
    plan.decode = Box::new(move |bytes, _| {
        let mut out = Map::new();
        gadgets::count::decode_key(bytes, keys, decode_value.as_ref(), &mut out)?;
        Some(out)
    });
}

pub(crate) fn process_not_found(pid: u32) -> EbpfError {
    EbpfError::new(
        Code::ProcessNotFound,
        format!("no process {pid} is running; give the pid of a live process (thread group id)"),
    )
    .with_context("pid", pid)
}

/// One answer for a uprobe target that is missing, not a regular file, not ELF, or lacks
/// the symbol: the trace tier must not learn which paths exist on the host.
pub(crate) fn target_not_found() -> EbpfError {
    EbpfError::new(
        Code::TargetNotFound,
        "cannot place the uprobe: no such function in an ELF file at that path (the file does \
         not exist, is not a regular ELF binary or library, or has no such symbol); give an \
         existing binary and a symbol in its symbol table (`nm -D BINARY` or `nm BINARY` \
         lists them)",
    )
    .with_context("gadget", "uprobe")
}

pub(crate) fn load_error(gadget: &str, e: &GadgetError) -> EbpfError {
    let text = shorten_verifier_log(&e.to_string());
    let verifier = text.contains("verifier log");
    match (e, e.errno()) {
        // One answer for a missing file, a file that is not ELF and a missing symbol: the
        // trace tier must not learn which paths exist on the host.
        (GadgetError::Attach { .. }, errno)
            if gadget == "uprobe" && !matches!(errno, Some(libc::EPERM)) =>
        {
            target_not_found()
        }
        (_, Some(libc::EPERM) | Some(libc::EACCES)) if !verifier => EbpfError::new(
            Code::MissingCapability,
            format!(
                "the kernel refused to run the `{gadget}` gadget ({text}); the server needs CAP_BPF \
                 and CAP_PERFMON, and `info` shows what this kernel allows"
            ),
        ),
        (_, Some(libc::ENOENT)) => EbpfError::new(
            Code::HookNotFound,
            format!(
                "this kernel lacks a hook the `{gadget}` gadget needs ({text}); {} shows what it \
                 has, info which gadgets this kernel supports",
                if gadget == "kfunc" {
                    "list_functions"
                } else {
                    "list_tracepoints"
                }
            ),
        ),
        _ if verifier => EbpfError::new(
            Code::VerifierRejected,
            format!(
                "this kernel's verifier rejected the `{gadget}` gadget ({text}); info shows which \
                 gadgets this kernel supports"
            ),
        ),
        _ => EbpfError::new(
            Code::GadgetFailed,
            format!("the `{gadget}` gadget could not start: {text}"),
        ),
    }
    .with_context("gadget", gadget)
}

/// A validated request, ready to run (by `trace`, or in the background by `trace_start`).
pub struct Prepared {
    pub(crate) plan: Plan,
    pub(crate) cfg: GadgetCfg,
    pub mode: Mode,
    pub group_by: Vec<String>,
    pub duration: Duration,
    /// events mode: stop after this many (`trace`); sessions keep the newest instead.
    pub max_events: usize,
    pub top: usize,
    /// Events decoded per second at most (0: no limit).
    pub max_rate: u64,
    /// The process a `pid`-scoped trace follows: the trace ends when it exits.
    pub process: Option<crate::ebpf::host::ProcessId>,
    /// events mode: the fields events keep (`None`: all).
    pub fields: Option<Vec<String>>,
    /// Events that do not pass are not counted, grouped or kept.
    pub filter: Option<Filter>,
    /// `container`: its cgroup directory.
    pub(crate) scope: Option<crate::ebpf::sys::PinnedFile>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("gadget", &self.plan.name)
            .finish_non_exhaustive()
    }
}

impl Prepared {
    pub fn gadget(&self) -> &'static str {
        self.plan.name
    }

    pub fn hooks(&self) -> Vec<String> {
        self.plan.hooks()
    }

    /// Keeps only the fields the call asked for.
    pub fn select(&self, record: &mut Map<String, Value>) {
        if let Some(fields) = &self.fields {
            record.retain(|k, _| fields.iter().any(|f| f == k));
        }
    }

    /// The sizes of the kernel tables this run uses, and of those it does not (one entry:
    /// every table is created with its object, and preallocated ones cost their size).
    pub(crate) fn map_sizes(&self) -> Vec<(&'static str, u32)> {
        use crate::ebpf::gadget::NAME_CGROUPS;
        let output = self.plan.output;
        let counting = output == Output::KernelCounts(gadgets::count::TABLE);
        let naming = self.cfg.flags & NAME_CGROUPS != 0;
        let histograms = matches!(output, Output::KernelHistograms | Output::KernelValues);
        vec![
            (gadgets::count::TABLE, if counting { 10_240 } else { 1 }),
            ("cgroup_names", if naming { 2048 } else { 1 }),
            (
                "hists",
                if histograms {
                    gadgets::hist::TABLE_ENTRIES
                } else {
                    1
                },
            ),
            (
                gadgets::kfunc::STACKS,
                if self.plan.name == "kfunc" && self.cfg.arg0 & gadgets::kfunc::STACK != 0 {
                    1024
                } else {
                    1
                },
            ),
        ]
    }

    /// count mode: where the counting happens.
    pub fn counted_in(&self) -> Option<super::CountedIn> {
        match (self.mode, self.plan.output) {
            (Mode::Count, Output::Events) => Some(super::CountedIn::Server),
            (Mode::Count, _) => Some(super::CountedIn::Kernel),
            _ => None,
        }
    }

    /// Why this trace may see less than asked, to say with its result.
    pub fn warnings(&self) -> &[String] {
        &self.plan.warnings
    }
}

/// The bounds a run must stay within, and the configuration keys that set them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_duration: Duration,
    pub duration_key: &'static str,
    pub max_events: u32,
    pub events_key: &'static str,
    /// Used when the call gives none (each capped by its maximum).
    pub default_duration: Duration,
    pub default_events: u32,
    /// `tools.trace.max_functions`: kernel functions one kfunc trace attaches to.
    pub max_functions: usize,
}

impl Limits {
    /// A `trace` call's: `tools.trace.max_duration` and `max_events`.
    pub fn of_trace(config: &crate::config::TraceConfig) -> Self {
        Self {
            max_duration: config.max_duration.0,
            duration_key: "tools.trace.max_duration",
            max_events: config.max_events.get(),
            events_key: "tools.trace.max_events",
            default_duration: Duration::from_millis(DEFAULT_DURATION_MS),
            default_events: DEFAULT_MAX_EVENTS,
            max_functions: config.max_functions.get() as usize,
        }
    }

    /// A background session's: it runs until stopped or `session_max_duration`, keeping
    /// the newest `session_buffer` events.
    pub fn of_session(config: &crate::config::TraceConfig) -> Self {
        Self {
            max_duration: config.session_max_duration.0,
            duration_key: "tools.trace.session_max_duration",
            max_events: config.session_buffer.get(),
            events_key: "tools.trace.session_buffer",
            default_duration: config.session_max_duration.0,
            default_events: config.session_buffer.get(),
            max_functions: config.max_functions.get() as usize,
        }
    }
}

/// Checks the arguments against the gadget and the limits.
pub fn prepare(p: &TraceParams, limits: &Limits, max_rate: u32) -> Result<Prepared, EbpfError> {
    let (max_duration, max_events_cap) = (limits.max_duration, limits.max_events);
    let mut plan = plan(p, limits)?;
    let (default_mode, allowed) = modes(plan.output);
    let mode = p.mode.or(plan.default_mode).unwrap_or(default_mode);
    if !allowed.contains(&mode) {
        let names: Vec<String> = allowed
            .iter()
            .map(|m| format!("`{}`", mode_name(*m)))
            .collect();
        let extra = if plan.name == "syscalls" {
            " (or `histogram` for latency)"
        } else {
            ""
        };
        return Err(invalid(format!(
            "the `{}` gadget gives mode {}{extra}, not `{}`",
            plan.name,
            names.join(" or "),
            mode_name(mode)
        )));
    }
    let group_by: Vec<String> = match &p.group_by {
        Some(fields) => fields.clone(),
        None => plan.default_group_by.clone(),
    };
    if mode == Mode::Events {
        if p.group_by.is_some() || p.top.is_some() {
            return Err(invalid(
                "`group_by` and `top` apply to modes `count` and `histogram`",
            ));
        }
    } else if let Some(bad) = group_by.iter().find(|f| !plan.fields.contains(f)) {
        return Err(invalid(format!(
            "`{bad}` is not a field of `{}` results{}; fields: {}",
            plan.name,
            crate::suggest::did_you_mean(bad, plan.fields.iter().map(String::as_str)),
            plan.fields.join(", ")
        )));
    }
    let filter = match p.filter.as_deref() {
        None => None,
        Some(_) if plan.output != Output::Events => {
            return Err(invalid(format!(
                "`filter` applies to event gadgets; the `{}` gadget counts in the kernel: \
                 narrow it with `pid`, `comm`, `uid` or `cgroup`",
                plan.name
            )));
        }
        Some(text) => {
            let fields: Vec<(String, Kind)> = plan
                .fields
                .iter()
                .cloned()
                .zip(plan.kinds.iter().copied())
                .collect();
            Some(
                Filter::parse(text, &fields)
                    .map_err(|e| invalid(format!("`filter`: {e}")).with_context("filter", text))?,
            )
        }
    };
    if let Some(fields) = &p.fields {
        if mode != Mode::Events {
            return Err(invalid(
                "`fields` applies to mode events; counts and histograms take `group_by`",
            ));
        }
        if fields.is_empty() {
            return Err(invalid(format!(
                "`fields` names at least one field; fields of `{}` events: {}",
                plan.name,
                plan.fields.join(", ")
            )));
        }
        if let Some(bad) = fields.iter().find(|f| !plan.fields.contains(f)) {
            return Err(invalid(format!(
                "`{bad}` is not a field of `{}` events{}; fields: {}",
                plan.name,
                crate::suggest::did_you_mean(bad, plan.fields.iter().map(String::as_str)),
                plan.fields.join(", ")
            )));
        }
    }
    if group_by
        .iter()
        .any(|f| plan.detail_fields.contains(&f.as_str()))
    {
        plan.args.0 = 1;
    }
    let max_ms = u64::try_from(max_duration.as_millis()).unwrap_or(u64::MAX);
    let default_ms = u64::try_from(limits.default_duration.as_millis()).unwrap_or(u64::MAX);
    let duration_ms = p.duration_ms.unwrap_or(default_ms.min(max_ms));
    if duration_ms == 0 || duration_ms > max_ms {
        return Err(invalid(format!(
            "`duration_ms` must be between 1 and {max_ms} ({})",
            limits.duration_key
        )));
    }
    let max_events = p
        .max_events
        .unwrap_or(limits.default_events.min(max_events_cap));
    if max_events == 0 || max_events > max_events_cap {
        return Err(invalid(format!(
            "`max_events` must be between 1 and {max_events_cap} ({})",
            limits.events_key
        )));
    }
    let (mut cfg, scope) = filters(p)?;
    (cfg.arg0, cfg.arg1, cfg.arg2) = plan.args;
    if let Some(f) = &filter {
        push_down(f, &mut cfg);
    }
    if let Some(field) = plan.value_hist {
        let per_process = group_by.iter().any(|f| f == "pid" || f == "comm");
        cfg.count_keys = gadgets::count::histogram(per_process);
        cfg.value_field = field;
    }
    if mode == Mode::Count && filter.as_ref().is_none_or(|f| wholly_in_kernel(f, &cfg)) {
        count_in_kernel(&mut plan, &mut cfg, &group_by);
    }
    if plan.output == Output::Events {
        cfg.flags |= crate::ebpf::gadget::NAME_CGROUPS;
    }
    let process = match p.pid {
        Some(pid) => {
            Some(crate::ebpf::host::ProcessId::alive(pid).ok_or_else(|| process_not_found(pid))?)
        }
        None => None,
    };
    CapSet::current()
        .map_err(|e| EbpfError::internal(format!("cannot read this process's capabilities: {e}")))?
        .require(&[Needed::Bpf, Needed::Perfmon])?;
    Ok(Prepared {
        plan,
        cfg,
        mode,
        group_by,
        duration: Duration::from_millis(duration_ms),
        max_events: max_events as usize,
        top: p.top.unwrap_or(DEFAULT_TOP).max(1) as usize,
        max_rate: u64::from(max_rate),
        process,
        fields: p.fields.clone(),
        filter,
        scope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::sys::SyscallError;

    fn params(v: Value) -> TraceParams {
        serde_json::from_value(v).unwrap()
    }

    fn limits() -> Limits {
        Limits::of_trace(&crate::config::Config::default().tools.trace)
    }

    fn refusal(v: Value) -> String {
        match prepare(&params(v), &limits(), 0) {
            Err(e) => e.message.clone(),
            Ok(p) => panic!("accepted: {p:?}"),
        }
    }

    #[test]
    fn arguments_are_checked_against_the_gadget_and_the_limits() {
        for (args, needle) in [
            (
                serde_json::json!({"gadget": "exce"}),
                "did you mean `exec`?",
            ),
            (
                serde_json::json!({"gadget": "tracepoint"}),
                "needs `tracepoint`",
            ),
            (
                serde_json::json!({"gadget": "tracepoint", "tracepoint": "nocolon"}),
                "`category:name`",
            ),
            (
                serde_json::json!({"gadget": "tracepoint", "tracepoint": "sched:sched_swich"}),
                "did you mean `sched:sched_switch`?",
            ),
            (
                serde_json::json!({"gadget": "exec", "top": 3}),
                "apply to modes `count`",
            ),
            (
                serde_json::json!({"gadget": "exec", "max_events": 0}),
                "`max_events` must be between 1",
            ),
            (
                serde_json::json!({"gadget": "exec", "duration_ms": 0}),
                "`duration_ms` must be between 1",
            ),
            (
                serde_json::json!({"gadget": "exec", "comm": "a-name-of-twenty-b"}),
                "1 to 15 bytes",
            ),
            (
                serde_json::json!({"gadget": "exec", "cgroup": "no/such/group"}),
                "names no directory",
            ),
            (
                serde_json::json!({"gadget": "exec", "cgroup": "/tmp"}),
                "names no directory",
            ),
            (
                serde_json::json!({"gadget": "syscalls", "mode": "events"}),
                "(or `histogram` for latency)",
            ),
            (
                serde_json::json!({"gadget": "exec", "mode": "count", "group_by": ["comm", "comn"]}),
                "did you mean `comm`?",
            ),
        ] {
            let got = refusal(args.clone());
            assert!(got.contains(needle), "{args}: {got}");
        }
    }

    #[test]
    fn filter_equalities_reach_the_kernel_filters_left_free() {
        let fields: Vec<(String, Kind)> = gadgets::find("open")
            .unwrap()
            .all_fields()
            .map(|f| (f.name.to_owned(), Kind::of_type(f.ty)))
            .collect();
        let f = Filter::parse(
            "comm == \"cat\" && uid == 0 && pid == 42 && ret < 0",
            &fields,
        )
        .unwrap();
        let mut cfg = GadgetCfg::default();
        push_down(&f, &mut cfg);
        assert_eq!(
            (cfg.tgid, cfg.uid_set, cfg.uid, cfg.comm_set),
            (42, 1, 0, 1)
        );
        assert_eq!(&cfg.comm[..4], b"cat\0");
        // A filter the call's parameters already set is left to them.
        let mut set = GadgetCfg {
            tgid: 7,
            ..GadgetCfg::default()
        };
        push_down(&f, &mut set);
        assert_eq!(set.tgid, 7);
        // Names the kernel cannot hold, and alternatives, stay in user space.
        let long = Filter::parse("comm == \"a-name-longer-than-15\" || pid == 1", &fields).unwrap();
        let mut free = GadgetCfg::default();
        push_down(&long, &mut free);
        assert_eq!((free.tgid, free.comm_set), (0, 0));
    }

    #[test]
    fn load_failures_map_to_codes_that_say_what_to_do() {
        let sys = |errno| {
            GadgetError::Syscall(SyscallError {
                call: "bpf",
                source: std::io::Error::from_raw_os_error(errno),
            })
        };
        assert_eq!(
            load_error("exec", &sys(libc::EPERM)).code,
            Code::MissingCapability
        );
        assert_eq!(
            load_error("exec", &sys(libc::ENOENT)).code,
            Code::HookNotFound
        );
        assert_eq!(
            load_error("exec", &sys(libc::EINVAL)).code,
            Code::GadgetFailed
        );
        let log: String = (0..20).map(|i| format!("line {i}\n")).collect();
        let verifier = GadgetError::Load(format!("rejected. Verifier output: {log}"));
        let e = load_error("exec", &verifier);
        assert_eq!(e.code, Code::VerifierRejected);
        assert!(
            e.message.contains("line 19") && !e.message.contains("line 11 "),
            "{}",
            e.message
        );
        assert_eq!(shorten_verifier_log("no log here"), "no log here");
    }
}
