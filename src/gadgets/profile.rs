//! profile: CPU samples at a fixed frequency on every CPU (perf cpu-clock), counted in the
//! kernel per process and stack, then symbolized here: kernel frames from /proc/kallsyms,
//! user frames from the ELF symbol tables of the files /proc/PID/maps names (blazesym).

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::decode::{At, Layout};
use super::{Field, Gadget, Output};

pub const PROGRAM: &str = "profile_sample";
pub const SAMPLES: &str = "samples";
pub const STACKS: &str = "stacks";
/// Bytes of struct sample_key.
pub const KEY_SIZE: usize = 32;
pub const DEFAULT_HZ: u32 = 49;
pub const MAX_HZ: u32 = 1000;

static FIELDS: [Field; 2] = [
    Field::new("pid", "u32", "the process on the CPU"),
    Field::new("comm", "string", "its name"),
];

pub static GADGET: Gadget = Gadget {
    name: "profile",
    summary: "where CPU time goes: samples of every CPU at `frequency_hz` (default 49) with \
        user and kernel stacks, symbolized: top functions, top stacks, folded stacks for \
        flame graphs, and samples per process (mode count)",
    object: aya::include_bytes_aligned!("../../bpf/obj/profile.bpf.o"),
    programs: &[],
    fields: &FIELDS,
    output: Output::Stacks,
    default_group_by: &["pid", "comm"],
    detail_fields: &[],
    kernel_count: None,
    decode,
    event_size: KEY_SIZE,
    layout: Layout {
        btf_struct: "sample_key",
        skip: 0,
        fields: &[
            ("pid", PID),
            ("user_stack", USER_STACK),
            ("kernel_stack", KERNEL_STACK),
            ("comm", COMM),
        ],
    },
    fixed_record: None,
};

const PID: At = At::new(0, 4);
const USER_STACK: At = At::new(4, 4);
const KERNEL_STACK: At = At::new(8, 4);
const COMM: At = At::new(16, 16);

fn decode(b: &[u8], out: &mut Map<String, Value>) {
    out.insert("pid".into(), json!(PID.u32(b)));
    out.insert("comm".into(), json!(COMM.str(b)));
}

/// One (process, user stack, kernel stack) with its sample count, addresses leaf first.
#[derive(Debug, Clone)]
pub struct Sample {
    pub pid: u32,
    pub comm: String,
    /// The user stack's id in the kernel's stack table (negative: none).
    pub user_id: i32,
    pub user: Vec<u64>,
    /// User frames named while the process ran (see [`UserNames`]).
    pub user_names: Option<Vec<String>>,
    /// The files of those of them without a symbol.
    pub modules: Vec<ModuleRow>,
    pub kernel: Vec<u64>,
    /// The kernel could not record a stack (its table was full or two stacks collided).
    pub lost: bool,
    pub count: u64,
}

impl Sample {
    /// The key's parts: pid, comm, user stack id, kernel stack id.
    pub fn key(b: &[u8]) -> (u32, String, i32, i32) {
        (
            PID.u32(b),
            COMM.str(b),
            USER_STACK.i32(b),
            KERNEL_STACK.i32(b),
        )
    }
}

/// Names user stacks while their processes still run: a process that exits takes the
/// address map its addresses need with it, so a profile names what it sees every second
/// rather than only at the end.
pub struct UserNames {
    symbolizer: blazesym::symbolize::Symbolizer,
    known: HashMap<(u32, i32), (Vec<String>, Vec<ModuleRow>)>,
}

impl std::fmt::Debug for UserNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserNames")
            .field("known", &self.known.len())
            .finish_non_exhaustive()
    }
}

impl Default for UserNames {
    fn default() -> Self {
        Self {
            symbolizer: blazesym::symbolize::Symbolizer::new(),
            known: HashMap::new(),
        }
    }
}

impl UserNames {
    /// Names the user stacks not named yet, of processes still running.
    pub fn learn(&mut self, samples: &[Sample]) {
        let mut by_pid: HashMap<u32, Vec<&Sample>> = HashMap::new();
        for s in samples {
            if s.user_id >= 0 && !s.user.is_empty() && !self.known.contains_key(&(s.pid, s.user_id))
            {
                by_pid.entry(s.pid).or_default().push(s);
            }
        }
        for (pid, stacks) in by_pid {
            let (names, modules) = process_names(
                &self.symbolizer,
                pid,
                stacks.iter().flat_map(|s| s.user.iter().copied()),
            );
            // Nothing resolved: the process is gone (or stripped); leave it for the end.
            if names.values().all(|n| n == UNKNOWN) {
                continue;
            }
            for s in stacks {
                let frames: Vec<String> = s
                    .user
                    .iter()
                    .map(|a| names.get(a).cloned().unwrap_or_else(|| UNKNOWN.to_owned()))
                    .collect();
                let used = modules_of(&frames, &modules);
                self.known.insert((s.pid, s.user_id), (frames, used));
            }
        }
    }

    /// Gives each sample the names learnt for its user stack.
    pub fn apply(&self, samples: &mut [Sample]) {
        for s in samples {
            if let Some((names, modules)) = self.known.get(&(s.pid, s.user_id)) {
                s.user_names = Some(names.clone());
                s.modules = modules.clone();
            }
        }
    }
}

/// A file that frames without a symbol are in (shown as `file+0xADDR`, ADDR its ELF address): where the
/// process mapped it, and its GNU build id, which debuginfod or a debug-symbol package turns
/// into names (`addr2line -e FILE OFFSET` with the debug file).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
pub struct ModuleRow {
    /// The file name the frames start with.
    pub module: String,
    /// Its path as the process sees it.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
}

/// Modules a profile lists at most.
pub const MAX_MODULES: usize = 32;

/// The modules of `all` that `frames` name.
fn modules_of(frames: &[String], all: &[ModuleRow]) -> Vec<ModuleRow> {
    all.iter()
        .filter(|m| {
            frames.iter().any(|f| {
                f.strip_prefix(m.module.as_str())
                    .is_some_and(|r| r.starts_with("+0x"))
            })
        })
        .cloned()
        .collect()
}

/// Names for user addresses of one process, and the files of those without a symbol.
/// Only code is a frame: an address in a file's data (what a frame-pointer walk through code
/// built without frame pointers reads off the stack) is `[unknown]`, never the name of the
/// variable there.
fn process_names(
    symbolizer: &blazesym::symbolize::Symbolizer,
    pid: u32,
    addrs: impl Iterator<Item = u64>,
) -> (HashMap<u64, String>, Vec<ModuleRow>) {
    use blazesym::Pid;
    use blazesym::symbolize::source::{Process, Source};
    let mut addrs: Vec<u64> = addrs.collect();
    addrs.sort_unstable();
    addrs.dedup();
    let mut process = Process::new(Pid::from(pid));
    process.debug_syms = false;
    let src = Source::Process(process);
    let maps = crate::ebpf::host::file_mappings(pid);
    let mut modules: Vec<ModuleRow> = Vec::new();
    let mut heads: HashMap<String, Option<crate::ebpf::host::ElfHead>> = HashMap::new();
    let names = addrs
        .iter()
        .copied()
        .zip(names(symbolizer, &src, &addrs))
        .map(|(addr, name)| {
            let mapping = maps.iter().find(|m| (m.start..m.end).contains(&addr));
            match mapping {
                Some(m) if !m.executable => (addr, UNKNOWN.to_owned()),
                _ if name != UNKNOWN => (addr, name),
                // No symbol (a stripped binary): the file and the address in its ELF.
                Some(m) => {
                    let module = m.path.rsplit('/').next().unwrap_or(&m.path).to_owned();
                    let head = heads
                        .entry(m.path.clone())
                        .or_insert_with(|| crate::ebpf::host::elf_head(pid, m));
                    if modules.len() < MAX_MODULES && !modules.iter().any(|x| x.module == module) {
                        modules.push(ModuleRow {
                            module: module.clone(),
                            path: m.path.clone(),
                            build_id: head.as_ref().and_then(|h| h.build_id.clone()),
                        });
                    }
                    let file_offset = addr - m.start + m.offset;
                    let at = head
                        .as_ref()
                        .and_then(|h| h.address(file_offset))
                        .unwrap_or(file_offset);
                    (addr, format!("{module}+{at:#x}"))
                }
                None => (addr, name),
            }
        })
        .collect();
    (names, modules)
}

/// A stack as the result shows it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StackRow {
    pub pid: u32,
    pub comm: String,
    pub samples: u64,
    /// Share of all samples, in percent.
    pub percent: f64,
    /// Leaf first: kernel frames (`[k] name`), then user frames (past the leaf, only as
    /// good as the binary's frame pointers); code without symbols as `file+0xADDR`, the
    /// address in the file's ELF (`modules` has its path and build id), `[unknown]` where
    /// the process is gone or the address is not code.
    pub frames: Vec<String>,
}

/// A function by the samples that were in it (the leaf frame).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FunctionRow {
    pub function: String,
    pub samples: u64,
    pub percent: f64,
}

/// Symbolized profile.
#[derive(Debug, Default)]
pub struct Report {
    pub stacks: Vec<StackRow>,
    pub functions: Vec<FunctionRow>,
    /// `comm;root;...;leaf count`, largest first: the input of flamegraph.pl and speedscope.
    pub folded: Vec<String>,
    /// The files of frames without a symbol.
    pub modules: Vec<ModuleRow>,
    pub total: u64,
}

const UNKNOWN: &str = "[unknown]";

fn percent(n: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (n as f64 * 10_000.0 / total as f64).round() / 100.0
    }
}

/// Names for `addrs` in one source, `[unknown]` where none is known.
fn names(
    symbolizer: &blazesym::symbolize::Symbolizer,
    src: &blazesym::symbolize::source::Source<'_>,
    addrs: &[u64],
) -> Vec<String> {
    use blazesym::symbolize::Input;
    match symbolizer.symbolize(src, Input::AbsAddr(addrs)) {
        Ok(syms) => syms
            .iter()
            .map(|s| {
                s.as_sym()
                    .map_or_else(|| UNKNOWN.to_owned(), |sym| sym.name.to_string())
            })
            .collect(),
        Err(_) => vec![UNKNOWN.to_owned(); addrs.len()],
    }
}

/// Names kernel addresses through /proc/kallsyms (`[unknown]` where it has none).
#[derive(Default)]
pub struct KernelNames {
    symbolizer: Option<blazesym::symbolize::Symbolizer>,
    known: HashMap<u64, String>,
}

impl std::fmt::Debug for KernelNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelNames")
            .field("known", &self.known.len())
            .finish()
    }
}

impl KernelNames {
    /// Addresses remembered at most (then it starts afresh).
    const KNOWN: usize = 65_536;

    pub fn names(&mut self, addrs: &[u64]) -> Vec<String> {
        use blazesym::MaybeDefault;
        use blazesym::symbolize::source::{Kernel, Source};
        let missing: Vec<u64> = addrs
            .iter()
            .copied()
            .filter(|a| !self.known.contains_key(a))
            .collect();
        if !missing.is_empty() {
            if self.known.len() + missing.len() > Self::KNOWN {
                self.known.clear();
            }
            let symbolizer = self
                .symbolizer
                .get_or_insert_with(blazesym::symbolize::Symbolizer::new);
            let src = Source::Kernel(Kernel {
                vmlinux: MaybeDefault::None,
                debug_syms: false,
                ..Kernel::default()
            });
            for (a, n) in missing.iter().zip(names(symbolizer, &src, &missing)) {
                self.known.insert(*a, n);
            }
        }
        addrs
            .iter()
            .map(|a| {
                self.known
                    .get(a)
                    .cloned()
                    .unwrap_or_else(|| UNKNOWN.to_owned())
            })
            .collect()
    }
}

/// Symbolizes and ranks the samples: the `top` largest stacks and functions, and folded
/// stacks (all of them, largest first).
pub fn report(samples: &[Sample], top: usize) -> Report {
    let symbolizer = blazesym::symbolize::Symbolizer::new();
    let total: u64 = samples.iter().map(|s| s.count).sum();

    // One symbolization per process, and one for the kernel.
    let mut kernel_addrs: Vec<u64> = samples.iter().flat_map(|s| s.kernel.clone()).collect();
    kernel_addrs.sort_unstable();
    kernel_addrs.dedup();
    let kernel_names: HashMap<u64, String> = kernel_addrs
        .iter()
        .copied()
        .zip(KernelNames::default().names(&kernel_addrs))
        .collect();
    // User stacks not named while their process ran: try now.
    let mut by_pid: HashMap<u32, Vec<u64>> = HashMap::new();
    for s in samples.iter().filter(|s| s.user_names.is_none()) {
        by_pid.entry(s.pid).or_default().extend(&s.user);
    }
    let mut user_names: HashMap<(u32, u64), String> = HashMap::new();
    let mut modules: Vec<ModuleRow> = samples.iter().flat_map(|s| s.modules.clone()).collect();
    for (pid, addrs) in by_pid {
        let (names, found) = process_names(&symbolizer, pid, addrs.into_iter());
        modules.extend(found);
        for (addr, name) in names {
            user_names.insert((pid, addr), name);
        }
    }
    modules.sort();
    modules.dedup_by(|a, b| a.path == b.path && a.build_id == b.build_id);
    modules.truncate(MAX_MODULES);

    // Stacks that symbolize alike are one stack.
    let mut stacks: HashMap<(u32, String, Vec<String>), u64> = HashMap::new();
    for s in samples {
        let mut frames: Vec<String> = s
            .kernel
            .iter()
            .map(|a| {
                format!(
                    "[k] {}",
                    kernel_names.get(a).map_or(UNKNOWN, String::as_str)
                )
            })
            .collect();
        match &s.user_names {
            Some(named) => frames.extend(named.iter().cloned()),
            None => frames.extend(s.user.iter().map(|a| {
                user_names
                    .get(&(s.pid, *a))
                    .cloned()
                    .unwrap_or_else(|| UNKNOWN.to_owned())
            })),
        }
        if s.lost {
            frames.push("[stack lost]".to_owned());
        }
        *stacks.entry((s.pid, s.comm.clone(), frames)).or_default() += s.count;
    }
    let mut ranked: Vec<_> = stacks.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

    let mut functions: HashMap<String, u64> = HashMap::new();
    let mut folded: HashMap<String, u64> = HashMap::new();
    for ((_, comm, frames), n) in &ranked {
        let leaf = frames
            .first()
            .cloned()
            .unwrap_or_else(|| UNKNOWN.to_owned());
        *functions.entry(leaf).or_default() += n;
        let mut line = comm.replace(';', "_");
        for f in frames.iter().rev() {
            line.push(';');
            line.push_str(&f.replace(';', "_"));
        }
        *folded.entry(line).or_default() += n;
    }
    let mut functions: Vec<(String, u64)> = functions.into_iter().collect();
    functions.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut folded: Vec<(String, u64)> = folded.into_iter().collect();
    folded.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

    Report {
        stacks: ranked
            .into_iter()
            .take(top)
            .map(|((pid, comm, frames), n)| StackRow {
                pid,
                comm,
                samples: n,
                percent: percent(n, total),
                frames,
            })
            .collect(),
        functions: functions
            .into_iter()
            .take(top)
            .map(|(function, n)| FunctionRow {
                function,
                samples: n,
                percent: percent(n, total),
            })
            .collect(),
        folded: folded
            .into_iter()
            .map(|(line, n)| format!("{line} {n}"))
            .collect(),
        modules,
        total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn here() -> u64 {
        here as *const () as u64
    }

    /// A named variable in this binary's data.
    static EBPF_MCP_TEST_DATA: [u64; 64] = [7; 64];

    #[test]
    fn only_code_addresses_become_frames() {
        let symbolizer = blazesym::symbolize::Symbolizer::new();
        let data = std::hint::black_box(&EBPF_MCP_TEST_DATA) as *const _ as u64 + 8;
        let (named, modules) =
            process_names(&symbolizer, std::process::id(), [here(), data].into_iter());
        assert!(named[&here()].ends_with("here"), "{named:?}");
        assert_eq!(
            named[&data], UNKNOWN,
            "a variable is not a frame: {named:?}"
        );
        assert!(modules.is_empty(), "every frame had a symbol: {modules:?}");
        // The symbol table does name a variable there (ours, or in an instrumented build a
        // coverage record laid out beside it): only the check of the mapping keeps it out.
        let mut process = blazesym::symbolize::source::Process::new(std::process::id().into());
        process.debug_syms = false;
        let src = blazesym::symbolize::source::Source::Process(process);
        let raw = names(&symbolizer, &src, &[data]);
        assert_ne!(raw[0], UNKNOWN, "{raw:?}");
    }

    #[test]
    fn symbolizes_this_process_and_folds_root_first() {
        let addr = here();
        let samples = vec![
            Sample {
                pid: std::process::id(),
                comm: "t".into(),
                user_id: 1,
                user: vec![addr],
                user_names: None,
                modules: Vec::new(),
                kernel: vec![],
                lost: false,
                count: 3,
            },
            Sample {
                pid: std::process::id(),
                comm: "t".into(),
                user_id: -14,
                user: vec![1],
                user_names: None,
                modules: Vec::new(),
                kernel: vec![],
                lost: true,
                count: 1,
            },
        ];
        let mut learnt = samples.clone();
        let mut names = UserNames::default();
        names.learn(&learnt);
        names.apply(&mut learnt);
        let name = &learnt[0].user_names.as_ref().unwrap()[0];
        assert!(name.contains("here"), "{name}");
        assert!(learnt[1].user_names.is_none());
        let r = report(&samples, 10);
        assert_eq!(r.total, 4);
        assert!(r.stacks[0].frames[0].contains("here"), "{:?}", r.stacks);
        assert_eq!(r.stacks[0].percent, 75.0);
        assert!(r.functions[0].function.contains("here"));
        assert!(r.folded[0].starts_with("t;") && r.folded[0].ends_with(" 3"));
        assert_eq!(r.folded[1], "t;[stack lost];[unknown] 1");
    }
}
