//! Validation of an agent's BPF object before the kernel sees any of it: the ELF's
//! structure, each program's type, every instruction the kernel may execute, its helpers and
//! kernel references, its maps, and where it would attach, against the configured policy.
//! Every violation is reported, not only the first. Malformed input is an `INVALID_ELF`
//! violation, never a panic.
//!
//! The instructions checked are the ones the loader will hand to the kernel: the object is
//! parsed, CO-RE-relocated and linked by the same parser and linker the loader uses (aya's),
//! so a subprogram reached through a call *or* a function reference (a callback given to
//! `bpf_loop`, `bpf_for_each_map_elem`, a timer) is checked as part of every program that
//! reaches it, wherever its section is. Before that, every 64-bit immediate load with a
//! pseudo source and every kfunc call is checked to come from a relocation the loader
//! resolves against this object's own maps and functions: anything the object encodes by
//! itself (a map fd number, a BTF id) would name a kernel object of the server's, not the
//! object's, and is refused.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use aya_obj::generated::bpf_insn;
use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SymbolKind};
use schemars::JsonSchema;
use serde::Serialize;

use crate::config::Config;
use crate::ebpf::names::{self, OPCODE_CLASSES, helper_id, helper_key};
use crate::error::Code;
use crate::glob::Glob;

/// Program types that change what the kernel does beyond observing it or judging packets:
/// refused unless `tools.deploy.allowed_types` names them.
pub const INTRUSIVE_TYPES: [&str; 5] = ["fmod_ret", "lsm", "struct_ops", "freplace", "kprobe"];

const EM_BPF: u16 = 247;
/// Bounds on the CO-RE work of linking one object: each distinct type is looked up by name
/// among the kernel's ~100k BTF types. Real programs use a few dozen.
const MAX_CORE_RELOCATIONS: usize = 16_384;
const MAX_CORE_TYPES: usize = 1024;
/// Functions (programs and subprograms) one object may hold: the kernel's BPF_MAX_SUBPROGS.
const MAX_FUNCTIONS: usize = 256;
const INSN: usize = 8;

/// `BPF_LD | BPF_IMM | BPF_DW`: the two-slot 64-bit immediate load.
const LD_IMM64: u8 = 0x18;
/// `BPF_JMP | BPF_CALL`.
const CALL: u8 = 0x85;

// Pseudo sources of LD_IMM64 and CALL (linux/bpf.h).
const PSEUDO_MAP_FD: u8 = 1;
const PSEUDO_MAP_VALUE: u8 = 2;
const PSEUDO_BTF_ID: u8 = 3;
const PSEUDO_FUNC: u8 = 4;
const PSEUDO_MAP_IDX: u8 = 5;
const PSEUDO_MAP_IDX_VALUE: u8 = 6;
const PSEUDO_CALL: u8 = 1;
const PSEUDO_KFUNC_CALL: u8 = 2;

/// A reason to refuse an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Violation {
    /// Stable code (validation category; docs/tools.md lists them).
    #[schemars(with = "String")]
    pub code: Code,
    /// The program it concerns, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// The function it concerns when that is a subprogram (in `.text` or another code
    /// section), not a program itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// Instruction index: inside the program as the loader links it (the numbering of the
    /// verifier's log), or inside `function` when that is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<usize>,
    /// What is wrong, naming the helper, symbol, type or limit.
    pub detail: String,
}

impl Violation {
    fn new(code: Code, program: Option<&str>, offset: Option<usize>, detail: String) -> Self {
        Self {
            code,
            program: program.map(str::to_owned),
            function: None,
            offset,
            detail,
        }
    }

    fn in_function(code: Code, function: &Function<'_>, offset: usize, detail: String) -> Self {
        let (program, function) = match function.program {
            Some(p) => (Some(p.to_owned()), None),
            None => (None, Some(function.name.to_owned())),
        };
        Self {
            code,
            program,
            function,
            offset: Some(offset),
            detail,
        }
    }
}

/// One program of the object, as found in its ELF.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProgramFacts {
    pub name: String,
    /// Its ELF section (`tracepoint/syscalls/sys_enter_openat`, `xdp`, `tc`, ...).
    pub section: String,
    /// The program type in policy terms: tracepoint, raw_tp, tp_btf, uprobe, kprobe, xdp,
    /// tc, cgroup_skb, perf_event, socket_filter, fentry, fexit, fmod_ret, lsm, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Instructions as loaded: its own and those of every subprogram and callback it
    /// reaches.
    pub instructions: usize,
    /// Helpers it calls (in its own code, its subprograms and its callbacks), by name.
    pub helpers: Vec<String>,
    /// Kernel symbols and kfuncs it references.
    pub symbols: Vec<String>,
    /// Subprograms and callbacks it reaches, by name.
    pub functions: Vec<String>,
}

/// One map of the object.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MapFacts {
    pub name: String,
    #[serde(rename = "type")]
    pub map_type: String,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// Estimated memory: (key + value × copies) × max_entries, where per-CPU maps keep a
    /// value per possible CPU (a ring buffer: its size).
    pub bytes: u64,
}

/// What validation found.
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    pub programs: Vec<ProgramFacts>,
    pub maps: Vec<MapFacts>,
    pub violations: Vec<Violation>,
    /// The object as the loader should see it (libbpf section names it does not know,
    /// like `tc`, renamed to ones it does).
    pub normalized: Vec<u8>,
}

/// The rules, resolved from the configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    pub max_instructions: usize,
    /// Allowed instruction classes (`code & 0x07`).
    pub allowed_classes: Vec<u8>,
    /// Blocked helpers: (id, name without `bpf_`).
    pub blocked_helpers: Vec<(i32, String)>,
    pub blocked_symbols: Vec<String>,
    pub allowed_types: Vec<String>,
    pub allowed_attach_points: Vec<Glob>,
    pub max_maps: usize,
    pub max_map_bytes: u64,
    /// Programs one object may hold.
    pub max_programs: usize,
}

impl Policy {
    /// The policy of `config`; names and globs it does not know are configuration errors
    /// (checked at load by `Config::validate`, so here they are skipped).
    pub fn from_config(config: &Config) -> Self {
        let bv = &config.security.bytecode_validation;
        let deploy = &config.tools.deploy;
        Self {
            max_instructions: bv.max_instructions.get() as usize,
            allowed_classes: bv
                .allowed_opcodes
                .iter()
                .filter_map(|n| OPCODE_CLASSES.iter().position(|c| c == n))
                .map(|i| i as u8)
                .collect(),
            blocked_helpers: bv
                .blocked_helpers
                .iter()
                .filter_map(|n| helper_id(n).map(|id| (id, helper_key(n))))
                .collect(),
            blocked_symbols: bv.blocked_symbols.clone(),
            allowed_types: deploy.allowed_types.clone(),
            allowed_attach_points: deploy
                .allowed_attach_points
                .iter()
                .filter_map(|g| Glob::new(g).ok())
                .collect(),
            max_maps: config.resources.max_maps as usize,
            max_map_bytes: u64::from(config.resources.max_memory_mb) * 1024 * 1024,
            max_programs: config.resources.max_programs as usize,
        }
    }
}

/// The program type a libbpf section name stands for, and the name aya knows it by when
/// that differs (`tc` is `classifier` to aya).
pub fn section_kind(section: &str) -> (&'static str, Option<&'static str>) {
    let head = section.split('/').next().unwrap_or_default();
    let kind = match head {
        "tracepoint" | "tp" => "tracepoint",
        "raw_tp" | "raw_tracepoint" | "raw_tp.w" | "raw_tracepoint.w" => "raw_tp",
        "tp_btf" => "tp_btf",
        "uprobe" | "uretprobe" | "uprobe.s" | "uretprobe.s" => "uprobe",
        "kprobe" | "kretprobe" | "ksyscall" | "kretsyscall" | "kprobe.multi" => "kprobe",
        "xdp" | "xdp.frags" => "xdp",
        "tc" | "tcx" | "classifier" => "tc",
        "cgroup_skb" => "cgroup_skb",
        "cgroup" if section.starts_with("cgroup/skb") => "cgroup_skb",
        "cgroup" => "cgroup",
        "perf_event" => "perf_event",
        "socket" => "socket_filter",
        "fentry" | "fentry.s" => "fentry",
        "fexit" | "fexit.s" => "fexit",
        "fmod_ret" | "fmod_ret.s" => "fmod_ret",
        "lsm" | "lsm.s" | "lsm_cgroup" => "lsm",
        "struct_ops" | "struct_ops.s" => "struct_ops",
        "freplace" => "freplace",
        "iter" | "iter.s" => "iter",
        "syscall" => "syscall",
        "sk_msg" | "sk_skb" | "sockops" | "sk_lookup" | "sk_reuseport" => "socket_filter",
        _ => "unknown",
    };
    let rename = match head {
        "tc" | "tcx" => Some("classifier"),
        _ => None,
    };
    (kind, rename)
}

/// Inspects `bytes` against `policy`. Never panics: anything the ELF reader or aya's
/// object parser and linker cannot handle becomes an `INVALID_ELF` violation.
pub fn inspect(bytes: &[u8], policy: &Policy) -> Inspection {
    match std::panic::catch_unwind(|| inspect_inner(bytes, policy)) {
        Ok(i) => i,
        Err(_) => invalid("the object is malformed (its parser gave up on it)"),
    }
}

fn invalid(detail: impl Into<String>) -> Inspection {
    Inspection {
        violations: vec![Violation::new(Code::InvalidElf, None, None, detail.into())],
        ..Inspection::default()
    }
}

/// A relocation entry of a code section, with its symbol.
#[derive(Debug, Clone)]
struct Reloc {
    name: String,
    /// The symbol's section; `None` for an undefined (extern) symbol.
    section: Option<usize>,
    kind: SymbolKind,
    address: u64,
    /// 64 for R_BPF_64_64 (an immediate load), 32 for R_BPF_64_32 (a call).
    size: u8,
}

/// A function of the object (a program's own code or a subprogram), as the loader parses it.
struct Function<'a> {
    /// The loader's key for it: (section, address).
    key: (usize, u64),
    name: &'a str,
    /// The program it is, if it is one.
    program: Option<&'a str>,
    section: usize,
    offset: usize,
    insns: &'a [bpf_insn],
}

fn insn_src(i: &bpf_insn) -> u8 {
    i.src_reg()
}

/// The object's view the checks share.
struct Model<'a> {
    obj: &'a aya_obj::Object,
    relocs: HashMap<(usize, u64), Reloc>,
    /// Sections holding functions (what the loader links calls and references into).
    text_sections: HashSet<usize>,
    /// Sections the loader made a map of (maps sections, .data, .rodata, .bss).
    map_sections: HashSet<usize>,
    /// Section names by index.
    section_names: HashMap<usize, String>,
}

fn inspect_inner(bytes: &[u8], policy: &Policy) -> Inspection {
    let file = match object::read::elf::ElfFile64::<object::Endianness>::parse(bytes) {
        Ok(f) => f,
        Err(e) => {
            return invalid(format!(
                "not a 64-bit ELF object ({e}); compile with `clang -target bpf -c`"
            ));
        }
    };
    if file.elf_header().e_machine.get(file.endian()) != EM_BPF {
        return invalid(
            "the ELF is not for the BPF machine (EM_BPF); compile with `clang -target bpf`",
        );
    }
    if file.is_little_endian() != cfg!(target_endian = "little") {
        return invalid("the object's byte order differs from this host's");
    }
    let mut section_names = HashMap::new();
    let mut renames = Vec::new();
    for section in file.sections() {
        let Ok(name) = section.name() else {
            return invalid(format!(
                "section {} has no readable name",
                section.index().0
            ));
        };
        section_names.insert(section.index().0, name.to_owned());
        if section.kind() == object::SectionKind::Text
            && let (_, Some(rename)) = section_kind(name)
        {
            renames.push((
                section.index().0,
                name.replacen(name.split('/').next().unwrap_or_default(), rename, 1),
            ));
        }
    }
    let normalized = match rename_sections(bytes, &renames) {
        Ok(b) => b,
        Err(e) => return invalid(e),
    };
    if let Err(why) = parser_inputs_sound(&file) {
        return invalid(why);
    }
    // The loader's own parse of the object: what it would load.
    let obj = match aya_obj::Object::parse(&normalized) {
        Ok(obj) => obj,
        Err(e) => {
            let mut out = Inspection {
                violations: section_type_violations(&file, policy),
                ..Inspection::default()
            };
            // A section type the loader does not know is already a type violation; anything
            // else means the loader could not use the object.
            if out.violations.is_empty() {
                out.violations.push(Violation::new(
                    Code::InvalidElf,
                    None,
                    None,
                    format!("the loader cannot read the object: {e}"),
                ));
            }
            return out;
        }
    };
    let mut relocs = HashMap::new();
    for section in file.sections() {
        for (offset, rel) in section.relocations() {
            let RelocationTarget::Symbol(idx) = rel.target() else {
                continue;
            };
            let Ok(sym) = file.symbol_by_index(idx) else {
                continue;
            };
            relocs.insert(
                (section.index().0, offset),
                Reloc {
                    name: sym.name().unwrap_or_default().to_owned(),
                    section: sym.section_index().map(|s| s.0),
                    kind: sym.kind(),
                    address: sym.address(),
                    size: rel.size(),
                },
            );
        }
    }
    let model = Model {
        obj: &obj,
        relocs,
        text_sections: obj.functions.keys().map(|(s, _)| *s).collect(),
        map_sections: obj.maps.values().map(aya_obj::Map::section_index).collect(),
        section_names,
    };
    let mut out = Inspection {
        normalized: normalized.clone(),
        ..Inspection::default()
    };
    // Relocations of code that fall between instruction boundaries are applied nowhere sane.
    let mut misaligned: Vec<_> = model
        .relocs
        .iter()
        .filter(|((s, o), _)| model.text_sections.contains(s) && o % INSN as u64 != 0)
        .collect();
    misaligned.sort_by_key(|(k, _)| **k);
    for ((section, offset), rel) in misaligned {
        out.violations.push(Violation::new(
            Code::InvalidRelocation,
            None,
            None,
            format!(
                "a relocation against `{}` falls inside an instruction (byte {offset} of \
                 section `{}`)",
                rel.name,
                model.section_names.get(section).map_or("?", String::as_str)
            ),
        ));
    }
    // Bound the work the linker does before it starts: it copies every subprogram into
    // every program that reaches it, and looks each CO-RE type up in the kernel's BTF.
    if obj.programs.len() > policy.max_programs {
        out.violations.push(Violation::new(
            Code::TooManyPrograms,
            None,
            None,
            format!(
                "{} programs; an object may hold at most {} (resources.max_programs)",
                obj.programs.len(),
                policy.max_programs
            ),
        ));
        return out;
    }
    let (records, types) = core_relocations(&file);
    if records > MAX_CORE_RELOCATIONS || types > MAX_CORE_TYPES {
        out.violations.push(Violation::new(
            Code::TooManyRelocations,
            None,
            None,
            format!(
                "{records} CO-RE relocations over {types} types; at most \
                 {MAX_CORE_RELOCATIONS} over {MAX_CORE_TYPES} types are accepted"
            ),
        ));
        return out;
    }
    if obj.programs.is_empty() {
        out.violations.push(Violation::new(
            Code::NoPrograms,
            None,
            None,
            "the object has no BPF program (no code section other than .text with a named \
             function); put each program in a section such as SEC(\"tracepoint/...\")"
                .into(),
        ));
    }
    let program_of: HashMap<(usize, u64), &str> = obj
        .programs
        .iter()
        .map(|(name, p)| (p.function_key(), name.as_str()))
        .collect();
    let functions: Vec<Function<'_>> = obj
        .functions
        .iter()
        .map(|(key, f)| Function {
            key: *key,
            name: &f.name,
            program: program_of.get(key).copied(),
            section: key.0,
            offset: f.section_offset,
            insns: &f.instructions,
        })
        .collect();
    // The loader links each program by copying in every function it calls or refers to,
    // recursively, and writes each linked program back over its entry: a call into another
    // program's entry would get that program linked or not depending on the order the
    // loader happens to take programs in (a hash map's), so what the kernel got could
    // differ from what was checked. Only subprograms may be called. And the linker
    // recurses once per function in a call chain: bound the chain before it runs.
    if obj.functions.len() > MAX_FUNCTIONS {
        out.violations.push(Violation::new(
            Code::TooManyFunctions,
            None,
            None,
            format!(
                "{} functions; an object may hold at most {MAX_FUNCTIONS} (the kernel's limit \
                 on subprograms)",
                obj.functions.len()
            ),
        ));
        return out;
    }
    for f in &functions {
        for (at, target) in model.callees(f.key) {
            if let Some(callee) = program_of.get(&target) {
                out.violations.push(Violation::in_function(
                    Code::InvalidCall,
                    f,
                    at,
                    format!(
                        "calls or refers to program `{callee}`'s entry; only subprograms (in \
                         .text) may be called"
                    ),
                ));
            }
        }
    }
    // 1. Provenance, in every function the loader may link: before linking, offsets still
    //    match the ELF's relocations.
    let mut externs: HashMap<(usize, usize), BTreeSet<String>> = HashMap::new();
    for f in &functions {
        let found = model.check_references(f, policy, &mut out.violations);
        externs.insert((f.section, f.offset), found);
    }
    // 2. What the kernel will be given: the object CO-RE-relocated against this kernel's
    //    BTF (when it has one, as the loader does) and linked, then every instruction of
    //    every program checked.
    let linked = match crate::ebpf::btf::link_as_loader(&obj) {
        Ok(l) => Some(l),
        Err(e) => {
            // What the checks above refused usually makes linking fail too; say so only
            // when nothing else explains it.
            if out.violations.is_empty() {
                out.violations.push(Violation::new(
                    Code::InvalidElf,
                    None,
                    None,
                    format!("the loader cannot link the object: {e}"),
                ));
            }
            None
        }
    };
    let mut names: Vec<&String> = obj.programs.keys().collect();
    names.sort();
    for name in names {
        let program = &obj.programs[name];
        let section = model
            .section_names
            .get(&program.section_index)
            .cloned()
            .unwrap_or_default();
        let (kind, _) = section_kind(&section);
        let prog = Some(name.as_str());
        if !policy.allowed_types.iter().any(|t| t == kind) {
            out.violations
                .push(type_violation(prog, &section, kind, policy));
        }
        let reached = model.reachable(program.function_key());
        // Linked, the program as the kernel would get it; unlinkable (and so refused
        // already), its functions as the calls and references between them say.
        let insns: Vec<bpf_insn> = match &linked {
            Some(l) => l
                .functions
                .get(&program.function_key())
                .map(|f| f.instructions.clone())
                .unwrap_or_default(),
            None => reached
                .iter()
                .filter_map(|k| obj.functions.get(k))
                .flat_map(|f| f.instructions.iter().copied())
                .collect(),
        };
        if insns.len() > policy.max_instructions {
            out.violations.push(Violation::new(
                Code::TooManyInstructions,
                prog,
                None,
                format!(
                    "{} instructions (with the subprograms and callbacks it reaches); the \
                     limit is {} (security.bytecode_validation.max_instructions)",
                    insns.len(),
                    policy.max_instructions
                ),
            ));
        }
        let helpers = check_linked(name, &insns, policy, &mut out.violations);
        let mut symbols = BTreeSet::new();
        let mut functions_reached = BTreeSet::new();
        for key in &reached {
            if *key != program.function_key()
                && let Some(f) = obj.functions.get(key)
            {
                functions_reached.insert(f.name.clone());
            }
            if let Some(f) = obj.functions.get(key)
                && let Some(found) = externs.get(&(key.0, f.section_offset))
            {
                symbols.extend(found.iter().cloned());
            }
        }
        out.programs.push(ProgramFacts {
            name: name.clone(),
            section,
            kind: kind.to_owned(),
            instructions: insns.len(),
            helpers: helpers.into_iter().collect(),
            symbols: symbols.into_iter().collect(),
            functions: functions_reached.into_iter().collect(),
        });
    }
    check_maps(&obj, policy, &mut out);
    out
}

/// Refuses what the loader's parser cannot be given: it reads a BTF variable's linkage and a
/// legacy map definition's pinning straight into Rust enums, so any other value there is
/// undefined behaviour in the server (seen: a crash), not an error it reports.
fn parser_inputs_sound(
    file: &object::read::elf::ElfFile64<'_, object::Endianness>,
) -> Result<(), String> {
    if let Some(section) = file.section_by_name(".BTF") {
        let data = section
            .data()
            .map_err(|e| format!("its .BTF section cannot be read: {e}"))?;
        let btf = crate::ebpf::btf_reader::Btf::parse(data.to_vec())
            .map_err(|e| format!("its BTF is malformed: {e}"))?;
        for id in 1..=btf.len() as u32 {
            if let Some(linkage) = btf.var_linkage(id)
                && linkage > 2
            {
                return Err(format!(
                    "BTF variable `{}` (type {id}) has linkage {linkage}; only 0 (static), 1 \
                     (global) and 2 (extern) exist",
                    btf.name(id)
                ));
            }
        }
    }
    // Legacy map definitions: `struct bpf_map_def` has `pinning` at byte 24.
    for section in file.sections() {
        if !section.name().is_ok_and(|n| n.starts_with("maps")) {
            continue;
        }
        let Ok(data) = section.data() else { continue };
        for sym in file
            .symbols()
            .filter(|s| s.section_index() == Some(section.index()))
        {
            let start = usize::try_from(sym.address()).unwrap_or(usize::MAX);
            let size = usize::try_from(sym.size()).unwrap_or(usize::MAX);
            if size <= 24 {
                continue;
            }
            let mut word = [0u8; 4];
            for (i, b) in word.iter_mut().enumerate() {
                if 24 + i < size {
                    *b = data.get(start.saturating_add(24 + i)).copied().unwrap_or(0);
                }
            }
            let pinning = u32::from_le_bytes(word);
            if pinning > 1 {
                return Err(format!(
                    "legacy map `{}` has pinning {pinning}; only 0 (none) and 1 (by name) exist",
                    sym.name().unwrap_or("?").escape_debug()
                ));
            }
        }
    }
    Ok(())
}

/// CO-RE relocation records in the object's .BTF.ext, and how many distinct local types they
/// name (0, 0 without one; a malformed table counts as over the bound).
fn core_relocations(file: &object::read::elf::ElfFile64<'_, object::Endianness>) -> (usize, usize) {
    let Some(data) = file.section_by_name(".BTF.ext").and_then(|s| s.data().ok()) else {
        return (0, 0);
    };
    let u32_at = |off: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            data.get(off..off.checked_add(4)?)?.try_into().ok()?,
        ))
    };
    let over = (usize::MAX, usize::MAX);
    let Some(hdr_len) = u32_at(4).map(|v| v as usize) else {
        return over;
    };
    // Headers shorter than 32 bytes predate CO-RE relocations.
    if hdr_len < 32 {
        return (0, 0);
    }
    let (Some(off), Some(len)) = (u32_at(24), u32_at(28)) else {
        return over;
    };
    if len == 0 {
        return (0, 0);
    }
    let start = hdr_len + off as usize;
    let end = start.saturating_add(len as usize);
    let Some(rec_size) = u32_at(start).map(|v| v as usize) else {
        return over;
    };
    if rec_size < 16 || end > data.len() {
        return over;
    }
    let mut records = 0usize;
    let mut types = HashSet::new();
    let mut pos = start + 4;
    while pos + 8 <= end {
        let Some(n) = u32_at(pos + 4).map(|v| v as usize) else {
            return over;
        };
        pos += 8;
        for _ in 0..n {
            if pos + rec_size > end {
                return over;
            }
            records += 1;
            if let Some(t) = u32_at(pos + 4) {
                types.insert(t);
            }
            if records > MAX_CORE_RELOCATIONS {
                return (records, types.len());
            }
            pos += rec_size;
        }
    }
    (records, types.len())
}

/// Type violations by section, for an object the loader cannot parse (so has no programs).
fn section_type_violations(
    file: &object::read::elf::ElfFile64<'_, object::Endianness>,
    policy: &Policy,
) -> Vec<Violation> {
    file.sections()
        .filter(|s| s.kind() == object::SectionKind::Text)
        .filter_map(|s| {
            let name = s.name().ok()?;
            if name.starts_with(".text") {
                return None;
            }
            let (kind, _) = section_kind(name);
            if policy.allowed_types.iter().any(|t| t == kind) {
                return None;
            }
            let programs: Vec<String> = file
                .symbols()
                .filter(|sym| {
                    sym.kind() == SymbolKind::Text && sym.section_index() == Some(s.index())
                })
                .filter_map(|sym| sym.name().ok().filter(|n| !n.is_empty()).map(str::to_owned))
                .collect();
            Some(if programs.is_empty() {
                vec![type_violation(None, name, kind, policy)]
            } else {
                programs
                    .iter()
                    .map(|p| type_violation(Some(p), name, kind, policy))
                    .collect()
            })
        })
        .flatten()
        .collect()
}

fn type_violation(program: Option<&str>, section: &str, kind: &str, policy: &Policy) -> Violation {
    let why = if INTRUSIVE_TYPES.contains(&kind) {
        " (it can change what the kernel does, not only observe it)"
    } else {
        ""
    };
    Violation::new(
        Code::ProgramTypeNotAllowed,
        program,
        None,
        format!(
            "section `{section}` is a {kind} program{why}; allowed types \
             (tools.deploy.allowed_types): {}",
            policy.allowed_types.join(", ")
        ),
    )
}

/// What a pseudo source is, for messages.
fn pseudo_name(src: u8, imm: i32) -> String {
    match src {
        PSEUDO_MAP_FD => format!("the map of file descriptor {imm}"),
        PSEUDO_MAP_VALUE => format!("a value of the map of file descriptor {imm}"),
        PSEUDO_BTF_ID => match u32::try_from(imm)
            .ok()
            .and_then(crate::ebpf::btf::vmlinux_type_name)
        {
            Some((name, kind)) => format!("kernel {kind} `{name}` (BTF id {imm})"),
            None => format!("kernel object of BTF id {imm}"),
        },
        PSEUDO_FUNC => format!("the function {imm} instructions away"),
        PSEUDO_MAP_IDX => format!("map number {imm} of the loader's map table"),
        PSEUDO_MAP_IDX_VALUE => format!("a value of map number {imm} of the loader's map table"),
        other => format!("pseudo source {other}"),
    }
}

impl Model<'_> {
    /// Checks where each pseudo-source load and kfunc call of `f` comes from; returns the
    /// extern symbols it references.
    fn check_references(
        &self,
        f: &Function<'_>,
        policy: &Policy,
        violations: &mut Vec<Violation>,
    ) -> BTreeSet<String> {
        let mut externs = BTreeSet::new();
        let relocation = |at: usize| self.relocs.get(&(f.section, (f.offset + at * INSN) as u64));
        let mut i = 0;
        while i < f.insns.len() {
            let insn = &f.insns[i];
            let rel = relocation(i);
            let src = insn_src(insn);
            if let Some(r) = rel
                && r.section.is_none()
                && !r.name.is_empty()
            {
                externs.insert(r.name.clone());
                if policy.blocked_symbols.contains(&r.name) {
                    violations.push(Violation::in_function(
                        Code::BlockedSymbol,
                        f,
                        i,
                        format!(
                            "references kernel symbol `{}`, blocked by \
                             security.bytecode_validation.blocked_symbols",
                            r.name
                        ),
                    ));
                }
            }
            match insn.code {
                LD_IMM64 => {
                    if let Some(r) = relocation(i + 1) {
                        violations.push(Violation::in_function(
                            Code::InvalidRelocation,
                            f,
                            i + 1,
                            format!(
                                "a relocation against `{}` targets the second half of a \
                                 64-bit load",
                                r.name
                            ),
                        ));
                    }
                    let resolved = rel.is_some_and(|r| self.resolves(r));
                    if let Some(r) = rel.filter(|r| r.section.is_none()) {
                        violations.push(Violation::in_function(
                            Code::UnresolvedReference,
                            f,
                            i,
                            format!(
                                "a 64-bit load refers to kernel symbol `{}` (an extern, \
                                 `__ksym`): this server's loader resolves no externs, so the \
                                 kernel would be given a number of the object's choosing; read \
                                 kernel data through BPF helpers",
                                r.name
                            ),
                        ));
                    } else if src != 0 && !resolved {
                        let what = pseudo_name(src, insn.imm);
                        violations.push(Violation::in_function(
                            Code::UnresolvedReference,
                            f,
                            i,
                            format!(
                                "a 64-bit load refers to {what} by a number the object encodes \
                                 itself (pseudo source {src}, no relocation the loader \
                                 resolves): it would name a kernel object outside this object; \
                                 refer to the object's own maps and functions by symbol"
                            ),
                        ));
                    }
                    i += 2;
                    continue;
                }
                CALL => match src {
                    0 => {
                        if let Some(r) = rel {
                            violations.push(Violation::in_function(
                                Code::InvalidRelocation,
                                f,
                                i,
                                format!(
                                    "a relocation against `{}` targets a helper call, which the \
                                     loader would rewrite into another kind of call",
                                    r.name
                                ),
                            ));
                        }
                    }
                    // A call of an extern function is a kfunc call, whatever its source
                    // says (clang writes it as a subprogram call for the loader to fix).
                    PSEUDO_CALL if rel.is_none_or(|r| r.section.is_some()) => {}
                    PSEUDO_CALL | PSEUDO_KFUNC_CALL => {
                        let name = match rel {
                            Some(r) if !r.name.is_empty() => r.name.clone(),
                            _ => match u32::try_from(insn.imm)
                                .ok()
                                .and_then(crate::ebpf::btf::vmlinux_type_name)
                            {
                                Some((name, _)) => name,
                                None => format!("kfunc of BTF id {}", insn.imm),
                            },
                        };
                        if rel.is_none() && policy.blocked_symbols.contains(&name) {
                            violations.push(Violation::in_function(
                                Code::BlockedSymbol,
                                f,
                                i,
                                format!(
                                    "calls kernel function `{name}`, blocked by \
                                     security.bytecode_validation.blocked_symbols"
                                ),
                            ));
                        }
                        externs.insert(name.clone());
                        violations.push(Violation::in_function(
                            Code::KfuncNotAllowed,
                            f,
                            i,
                            format!(
                                "calls kfunc `{name}`{}: this server's loader resolves no kfunc \
                                 calls, so the kernel would call whatever function the id names; \
                                 use BPF helpers",
                                if rel.is_none() {
                                    " by a BTF id the object encodes itself"
                                } else {
                                    ""
                                }
                            ),
                        ));
                    }
                    other => violations.push(Violation::in_function(
                        Code::InvalidInstruction,
                        f,
                        i,
                        format!("a call with source {other}, which the kernel does not define"),
                    )),
                },
                _ => {
                    if let Some(r) = rel {
                        violations.push(Violation::in_function(
                            Code::InvalidRelocation,
                            f,
                            i,
                            format!(
                                "a relocation against `{}` targets an instruction (opcode \
                                 {:#04x}) that is neither a 64-bit load nor a call; the loader \
                                 would rewrite it",
                                r.name, insn.code
                            ),
                        ));
                    }
                }
            }
            i += 1;
        }
        externs
    }

    /// Whether the loader resolves this relocation of a 64-bit load against the object
    /// itself: to one of its functions, or to one of its maps.
    fn resolves(&self, r: &Reloc) -> bool {
        let Some(section) = r.section else {
            return false;
        };
        r.kind == SymbolKind::Text
            || self.text_sections.contains(&section)
            || self.map_sections.contains(&section)
    }

    /// The calls and function references of function `key`, as the loader resolves them:
    /// (instruction index, the function key it names).
    fn callees(&self, key: (usize, u64)) -> Vec<(usize, (usize, u64))> {
        let Some(f) = self.obj.functions.get(&key) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, insn) in f.instructions.iter().enumerate() {
            let offset = f.section_offset + i * INSN;
            let any = self.relocs.get(&(key.0, offset as u64));
            // A call of an extern is a kfunc call (reported as such), not a link.
            if any.is_some_and(|r| r.section.is_none()) {
                continue;
            }
            let rel = any.filter(|r| {
                r.kind == SymbolKind::Text
                    || r.section.is_some_and(|s| self.text_sections.contains(&s))
            });
            let is_call = insn.code == CALL && insn_src(insn) == PSEUDO_CALL;
            let target = match rel {
                Some(r) => {
                    let Some(section) = r.section else { continue };
                    let address = match (r.kind, r.size) {
                        (SymbolKind::Text, _) => r.address,
                        (_, 32) => r
                            .address
                            .wrapping_add((i64::from(insn.imm) + 1) as u64 * INSN as u64),
                        _ => r.address.wrapping_add(i64::from(insn.imm) as u64),
                    };
                    (section, address)
                }
                None if is_call => (
                    key.0,
                    (offset as i64 + (i64::from(insn.imm) + 1) * INSN as i64) as u64,
                ),
                None => continue,
            };
            out.push((i, target));
        }
        out
    }

    /// Functions reachable from `start` by calls and function references, as the loader
    /// follows them (its own key included).
    fn reachable(&self, start: (usize, u64)) -> BTreeSet<(usize, u64)> {
        let mut seen = BTreeSet::new();
        let mut queue = VecDeque::from([start]);
        while let Some(key) = queue.pop_front() {
            if seen.insert(key) {
                queue.extend(self.callees(key).into_iter().map(|(_, t)| t));
            }
        }
        seen
    }
}

/// Checks every instruction of a linked program: instruction classes, helpers (blocked or
/// not), and that no pseudo source or kfunc call survived linking. Returns the helpers.
fn check_linked(
    program: &str,
    insns: &[bpf_insn],
    policy: &Policy,
    violations: &mut Vec<Violation>,
) -> BTreeSet<String> {
    let prog = Some(program);
    let mut bad_classes = BTreeSet::new();
    let mut blocked_seen = BTreeSet::new();
    let mut helpers = BTreeSet::new();
    let mut i = 0;
    while i < insns.len() {
        let insn = &insns[i];
        let class = insn.code & 0x07;
        if !policy.allowed_classes.contains(&class) && bad_classes.insert(class) {
            violations.push(Violation::new(
                Code::OpcodeNotAllowed,
                prog,
                Some(i),
                format!(
                    "instruction class {} is not in security.bytecode_validation.allowed_opcodes",
                    OPCODE_CLASSES[class as usize]
                ),
            ));
        }
        let src = insn_src(insn);
        if insn.code == LD_IMM64 {
            // The loader sets map and function references; any other source is the
            // object's own, and was reported before linking.
            i += 2;
            continue;
        }
        // Every call-shaped encoding: BPF_CALL in either jump class, by register or not.
        let is_call_op = matches!(class, 0x05 | 0x06) && insn.code & 0xf0 == 0x80;
        if is_call_op && insn.code != CALL {
            violations.push(Violation::new(
                Code::InvalidInstruction,
                prog,
                Some(i),
                format!(
                    "opcode {:#04x} is a call encoding the kernel does not define",
                    insn.code
                ),
            ));
        }
        if insn.code == CALL && src == 0 {
            let id = insn.imm;
            let name = names::helper(id).unwrap_or_else(|| format!("helper #{id}"));
            if let Some((_, blocked)) = policy.blocked_helpers.iter().find(|(b, _)| *b == id)
                && blocked_seen.insert(id)
            {
                violations.push(Violation::new(
                    Code::BlockedHelper,
                    prog,
                    Some(i),
                    format!(
                        "calls bpf_{blocked}, blocked by security.bytecode_validation.blocked_helpers"
                    ),
                ));
            }
            helpers.insert(name);
        }
        i += 1;
    }
    helpers
}

/// Map checks: names that stay inside a pin directory, no pinning of the object's own
/// choosing, counts and memory.
fn check_maps(obj: &aya_obj::Object, policy: &Policy, out: &mut Inspection) {
    let mut maps: Vec<MapFacts> = Vec::new();
    let mut sorted: Vec<_> = obj.maps.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (name, m) in sorted {
        if !map_name_ok(name) {
            out.violations.push(Violation::new(
                Code::InvalidMapName,
                None,
                None,
                format!(
                    "map `{}` has a name that is not made of letters, digits, `_` and `.` \
                     (maps are pinned by name, so a name may not leave a directory)",
                    name.escape_debug()
                ),
            ));
        }
        if !matches!(m.pinning(), aya_obj::maps::PinningType::None) {
            out.violations.push(Violation::new(
                Code::MapPinningNotAllowed,
                None,
                None,
                format!(
                    "map `{}` asks to be pinned by name (LIBBPF_PIN_BY_NAME), which would open \
                     whatever map is pinned there; remove the `pinning` attribute and deploy \
                     with `pin: true`, which pins every map under the deployment's own \
                     directory",
                    name.escape_debug()
                ),
            ));
        }
        let map_type = names::map_type(m.map_type());
        let bytes = if map_type == "ringbuf" || map_type == "user_ringbuf" {
            u64::from(m.max_entries())
        } else {
            // Per-CPU maps hold a value for every possible CPU.
            let copies = if map_type.contains("percpu") {
                crate::ebpf::maps::possible_cpus() as u64
            } else {
                1
            };
            (u64::from(m.key_size()) + u64::from(m.value_size()) * copies)
                * u64::from(m.max_entries().max(1))
        };
        maps.push(MapFacts {
            name: name.clone(),
            map_type,
            key_size: m.key_size(),
            value_size: m.value_size(),
            max_entries: m.max_entries(),
            bytes,
        });
    }
    maps.sort_by(|a, b| a.name.cmp(&b.name));
    if maps.len() > policy.max_maps {
        out.violations.push(Violation::new(
            Code::TooManyMaps,
            None,
            None,
            format!(
                "{} maps; the limit is {} (resources.max_maps)",
                maps.len(),
                policy.max_maps
            ),
        ));
    }
    let total: u64 = maps.iter().map(|m| m.bytes).sum();
    if total > policy.max_map_bytes {
        let largest = maps.iter().max_by_key(|m| m.bytes).map_or("", |m| &m.name);
        out.violations.push(Violation::new(
            Code::MapsTooLarge,
            None,
            None,
            format!(
                "its maps need about {} MiB (largest: `{largest}`); the limit is {} MiB \
                 (resources.max_memory_mb)",
                total.div_ceil(1024 * 1024),
                policy.max_map_bytes / (1024 * 1024)
            ),
        ));
    }
    out.maps = maps;
}

/// A map name that is safe as a file name under a pin directory.
fn map_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        && !name.bytes().all(|b| b == b'.')
}

/// A copy of an ELF64 object with some sections renamed: the new names go into a new
/// section-name table appended at the end of the file, and the table's header points there.
fn rename_sections(bytes: &[u8], renames: &[(usize, String)]) -> Result<Vec<u8>, String> {
    if renames.is_empty() {
        return Ok(bytes.to_vec());
    }
    let u16_at = |off: usize| -> Option<u16> {
        Some(u16::from_le_bytes(
            bytes.get(off..off + 2)?.try_into().ok()?,
        ))
    };
    let u64_at = |off: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            bytes.get(off..off + 8)?.try_into().ok()?,
        ))
    };
    let bad = || "the section header table is malformed".to_owned();
    let shoff = usize::try_from(u64_at(0x28).ok_or_else(bad)?).map_err(|_| bad())?;
    let shentsize = usize::from(u16_at(0x3a).ok_or_else(bad)?);
    let shnum = usize::from(u16_at(0x3c).ok_or_else(bad)?);
    let shstrndx = usize::from(u16_at(0x3e).ok_or_else(bad)?);
    if shentsize < 64 || shstrndx >= shnum {
        return Err(bad());
    }
    let header = |i: usize| shoff.checked_add(i.checked_mul(shentsize)?);
    let str_hdr = header(shstrndx).ok_or_else(bad)?;
    let str_off = usize::try_from(u64_at(str_hdr + 24).ok_or_else(bad)?).map_err(|_| bad())?;
    let str_size = usize::try_from(u64_at(str_hdr + 32).ok_or_else(bad)?).map_err(|_| bad())?;
    let old = bytes
        .get(str_off..str_off.checked_add(str_size).ok_or_else(bad)?)
        .ok_or_else(bad)?;
    let mut out = bytes.to_vec();
    while !out.len().is_multiple_of(8) {
        out.push(0);
    }
    let new_off = out.len();
    let mut table = old.to_vec();
    for (index, name) in renames {
        let at = u32::try_from(table.len()).map_err(|_| bad())?;
        table.extend_from_slice(name.as_bytes());
        table.push(0);
        let h = header(*index).filter(|_| *index < shnum).ok_or_else(bad)?;
        out.get_mut(h..h + 4)
            .ok_or_else(bad)?
            .copy_from_slice(&at.to_le_bytes());
    }
    out.extend_from_slice(&table);
    out.get_mut(str_hdr + 24..str_hdr + 32)
        .ok_or_else(bad)?
        .copy_from_slice(&(new_off as u64).to_le_bytes());
    out.get_mut(str_hdr + 32..str_hdr + 40)
        .ok_or_else(bad)?
        .copy_from_slice(&(table.len() as u64).to_le_bytes());
    Ok(out)
}

/// Whether `point` (`tracepoint:syscalls:sys_enter_openat`, canonical: see the deploy
/// target grammar) matches one of `globs`.
pub fn attach_point_allowed(point: &str, globs: &[Glob]) -> bool {
    crate::glob::any_matches(globs, point)
}

/// The violation for `point` outside the allowed globs.
pub fn attach_refusal(program: &str, point: &str, policy: &Policy) -> Violation {
    Violation::new(
        Code::AttachPointNotAllowed,
        Some(program),
        None,
        format!(
            "`{point}` matches none of tools.deploy.allowed_attach_points ({})",
            policy
                .allowed_attach_points
                .iter()
                .map(Glob::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str) -> Vec<u8> {
        let path = format!("{}/bpf/obj/tests/{name}.bpf.o", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn policy() -> Policy {
        let mut config = Config::default();
        config.tools.deploy.allowed_types = vec![
            "tracepoint".into(),
            "xdp".into(),
            "tc".into(),
            "uprobe".into(),
        ];
        Policy::from_config(&config)
    }

    fn codes(i: &Inspection) -> Vec<&str> {
        i.violations.iter().map(|v| v.code.as_str()).collect()
    }

    #[test]
    fn benign_objects_pass_and_are_described() {
        for name in ["ok_tracepoint", "ok_xdp", "ok_tc", "ok_uprobe"] {
            let i = inspect(&object(name), &policy());
            assert!(i.violations.is_empty(), "{name}: {:?}", i.violations);
            assert_eq!(i.programs.len(), 1, "{name}");
            assert!(
                i.programs[0]
                    .helpers
                    .contains(&"map_lookup_elem".to_owned())
            );
            assert_eq!(i.maps.len(), 1, "{name}: {:?}", i.maps);
        }
        let tc = inspect(&object("ok_tc"), &policy());
        assert_eq!(tc.programs[0].kind, "tc");
        // The loader knows `tc` as `classifier`: the normalized object parses as one.
        let obj = aya_obj::Object::parse(&tc.normalized).unwrap();
        assert!(matches!(
            obj.programs["count_tc"].section,
            aya_obj::ProgramSection::SchedClassifier
        ));
        assert!(aya_obj::Object::parse(&object("ok_tc")).is_err());
    }

    #[test]
    fn gadget_objects_carry_co_re_relocations_that_are_counted() {
        // The gadgets read kernel structs through CO-RE (task_struct in every event header).
        for name in ["exec", "tcp", "oom"] {
            let path = format!("{}/bpf/obj/{name}.bpf.o", env!("CARGO_MANIFEST_DIR"));
            let data = std::fs::read(&path).unwrap();
            let file = object::read::elf::ElfFile64::<object::Endianness>::parse(&*data).unwrap();
            let (records, types) = core_relocations(&file);
            assert!(records > 0 && types > 0, "{name}: {records} {types}");
            assert!(records <= MAX_CORE_RELOCATIONS && types <= MAX_CORE_TYPES);
        }
        // Objects without .BTF.ext, or with an older header, have none.
        let plain = object("ok_xdp");
        let file = object::read::elf::ElfFile64::<object::Endianness>::parse(&*plain).unwrap();
        assert!(core_relocations(&file).0 < MAX_CORE_RELOCATIONS);
    }

    #[test]
    fn each_refusal_has_its_code() {
        let p = policy();
        for (name, expected) in [
            ("bad_write_user", vec!["BLOCKED_HELPER"]),
            ("bad_signal", vec!["BLOCKED_HELPER"]),
            (
                "bad_override",
                vec!["PROGRAM_TYPE_NOT_ALLOWED", "BLOCKED_HELPER"],
            ),
            ("bad_fmod_ret", vec!["PROGRAM_TYPE_NOT_ALLOWED"]),
            ("bad_lsm", vec!["PROGRAM_TYPE_NOT_ALLOWED"]),
            ("bad_socket", vec!["PROGRAM_TYPE_NOT_ALLOWED"]),
            ("bad_big", vec!["TOO_MANY_INSTRUCTIONS"]),
            ("bad_big_map", vec!["MAPS_TOO_LARGE"]),
            ("bad_no_programs", vec!["NO_PROGRAMS"]),
        ] {
            let i = inspect(&object(name), &p);
            assert_eq!(codes(&i), expected, "{name}: {:?}", i.violations);
        }
        let write = inspect(&object("bad_write_user"), &p);
        let v = &write.violations[0];
        assert_eq!(v.program.as_deref(), Some("scribble"));
        assert!(v.detail.contains("bpf_probe_write_user") && v.offset.is_some());
        let lsm = inspect(&object("bad_lsm"), &p);
        assert!(
            lsm.violations[0]
                .detail
                .contains("change what the kernel does")
        );
    }

    #[test]
    fn garbage_is_invalid_not_a_panic() {
        let ok = object("ok_tracepoint");
        for bytes in [
            Vec::new(),
            b"\x7fELF".to_vec(),
            ok[..ok.len() / 2].to_vec(),
            (0..4096u32)
                .map(|i| i.wrapping_mul(2654435761) as u8)
                .collect(),
        ] {
            assert_eq!(codes(&inspect(&bytes, &policy())), ["INVALID_ELF"]);
        }
    }

    #[test]
    fn opcode_classes_and_symbols_are_checked() {
        let mut p = policy();
        p.allowed_classes.retain(|c| *c != 7); // no ALU64
        let i = inspect(&object("ok_tracepoint"), &p);
        assert!(
            codes(&i).contains(&"OPCODE_NOT_ALLOWED"),
            "{:?}",
            i.violations
        );
    }

    #[test]
    fn attach_point_globs() {
        let globs = vec![
            Glob::new("tracepoint:syscalls:*").unwrap(),
            Glob::new("xdp:veth?").unwrap(),
        ];
        assert!(attach_point_allowed(
            "tracepoint:syscalls:sys_enter_getpid",
            &globs
        ));
        assert!(attach_point_allowed("xdp:veth0", &globs));
        assert!(!attach_point_allowed("xdp:eth0", &globs));
        assert!(!attach_point_allowed(
            "tracepoint:sched:sched_switch",
            &globs
        ));
        assert_eq!(helper_id("bpf_probe_write_user"), Some(36));
        assert_eq!(helper_id("probe_write_user"), Some(36));
        assert_eq!(helper_id("bpf_nope"), None);
    }

    fn violations_of<'a>(i: &'a Inspection, program: &str) -> Vec<&'a str> {
        i.violations
            .iter()
            .filter(|v| v.program.as_deref() == Some(program))
            .map(|v| v.code.as_str())
            .collect()
    }

    fn program<'a>(i: &'a Inspection, name: &str) -> &'a ProgramFacts {
        i.programs.iter().find(|p| p.name == name).unwrap()
    }

    #[test]
    fn callbacks_are_checked_as_part_of_their_programs() {
        let i = inspect(&object("bad_callback"), &policy());
        for (prog, helper) in [
            ("via_loop", "send_signal"),
            ("via_for_each", "probe_write_user"),
            ("via_timer", "send_signal_thread"),
            ("nested", "send_signal"),
        ] {
            assert_eq!(
                violations_of(&i, prog),
                ["BLOCKED_HELPER"],
                "{prog}: {:?}",
                i.violations
            );
            let facts = program(&i, prog);
            assert!(
                facts.helpers.contains(&helper.to_owned()),
                "{prog}: {facts:?}"
            );
        }
        // Two levels of callbacks down, and in a code section of its own.
        let nested = program(&i, "nested");
        assert_eq!(nested.functions, ["deep", "inner_cb", "outer_cb"]);
        assert!(nested.helpers.contains(&"loop".to_owned()));
        // The instructions counted are the linked ones.
        let own = aya_obj::Object::parse(&object("bad_callback")).unwrap();
        let alone = own.functions[&own.programs["nested"].function_key()]
            .instructions
            .len();
        assert!(
            nested.instructions > alone + 6,
            "{} vs {alone}",
            nested.instructions
        );
        let mut tight = policy();
        tight.max_instructions = alone + 1;
        assert!(
            violations_of(&inspect(&object("bad_callback"), &tight), "nested")
                .contains(&"TOO_MANY_INSTRUCTIONS")
        );
    }

    #[test]
    fn self_encoded_references_are_refused() {
        let i = inspect(&object("bad_raw_refs"), &policy());
        for prog in ["raw_map_fd", "raw_map_value", "raw_btf_id", "raw_func"] {
            assert_eq!(
                violations_of(&i, prog),
                ["UNRESOLVED_REFERENCE"],
                "{prog}: {:?}",
                i.violations
            );
        }
        assert_eq!(
            violations_of(&i, "raw_map_idx"),
            ["UNRESOLVED_REFERENCE", "UNRESOLVED_REFERENCE"]
        );
        assert_eq!(violations_of(&i, "raw_kfunc"), ["KFUNC_NOT_ALLOWED"]);
        let fd = i
            .violations
            .iter()
            .find(|v| v.program.as_deref() == Some("raw_map_fd"))
            .unwrap();
        assert!(fd.detail.contains("file descriptor 3"), "{}", fd.detail);
        assert_eq!(fd.offset, Some(0));
        // Nothing else is wrong with these programs: they are refused for that alone.
        assert_eq!(i.violations.len(), 7, "{:?}", i.violations);
    }

    #[test]
    fn kfuncs_and_ksyms_are_named_and_refused() {
        let mut p = policy();
        p.blocked_symbols.push("bpf_rcu_read_lock".into());
        let i = inspect(&object("bad_kfunc"), &p);
        assert_eq!(
            violations_of(&i, "call_kfunc"),
            ["BLOCKED_SYMBOL", "KFUNC_NOT_ALLOWED", "KFUNC_NOT_ALLOWED"],
            "{:?}",
            i.violations
        );
        assert_eq!(violations_of(&i, "read_ksym"), ["UNRESOLVED_REFERENCE"]);
        assert_eq!(
            program(&i, "call_kfunc").symbols,
            ["bpf_rcu_read_lock", "bpf_rcu_read_unlock"]
        );
        assert_eq!(program(&i, "read_ksym").symbols, ["bpf_prog_active"]);
    }

    #[test]
    fn maps_cannot_pin_themselves_or_leave_their_directory() {
        let i = inspect(&object("bad_maps"), &policy());
        let mut c = codes(&i);
        c.sort_unstable();
        assert_eq!(
            c,
            ["INVALID_MAP_NAME", "MAP_PINNING_NOT_ALLOWED"],
            "{:?}",
            i.violations
        );
    }

    /// Moves the relocation of the object's first map reference onto the next instruction.
    fn misplace_relocation(bytes: &[u8], by: u64) -> Vec<u8> {
        let file = object::read::elf::ElfFile64::<object::Endianness>::parse(bytes).unwrap();
        let rel = file
            .sections()
            .find(|s| s.name().is_ok_and(|n| n.starts_with(".reltracepoint")))
            .unwrap();
        let (start, _) = rel.file_range().unwrap();
        let mut out = bytes.to_vec();
        let at = start as usize;
        let offset = u64::from_le_bytes(out[at..at + 8].try_into().unwrap()) + by;
        out[at..at + 8].copy_from_slice(&offset.to_le_bytes());
        out
    }

    #[test]
    fn relocations_only_where_they_belong() {
        let ok = object("ok_tracepoint");
        // Onto the instruction after the 64-bit load: a call, rewritten by the loader.
        let moved = misplace_relocation(&ok, 16);
        let i = inspect(&moved, &policy());
        assert!(
            codes(&i).contains(&"INVALID_RELOCATION"),
            "{:?}",
            i.violations
        );
        // Onto the second half of the load.
        let i = inspect(&misplace_relocation(&ok, 8), &policy());
        assert!(
            codes(&i).contains(&"INVALID_RELOCATION"),
            "{:?}",
            i.violations
        );
        // Into the middle of an instruction.
        let i = inspect(&misplace_relocation(&ok, 4), &policy());
        assert!(
            codes(&i).contains(&"INVALID_RELOCATION"),
            "{:?}",
            i.violations
        );
    }

    /// The object with the linkage word of its first BTF variable set to `linkage`.
    fn with_var_linkage(bytes: &[u8], linkage: u32) -> Vec<u8> {
        let file = object::read::elf::ElfFile64::<object::Endianness>::parse(bytes).unwrap();
        let (start, _) = file.section_by_name(".BTF").unwrap().file_range().unwrap();
        let start = start as usize;
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let hdr_len = word(start + 4);
        let mut pos = start + hdr_len + word(start + 8);
        loop {
            let info = word(pos + 4);
            let (kind, vlen) = ((info >> 24) & 0x1f, info & 0xffff);
            let extra = match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                4 | 5 | 15 | 19 => 12 * vlen,
                6 | 13 => 8 * vlen,
                _ => 0,
            };
            if kind == 14 {
                let mut out = bytes.to_vec();
                out[pos + 12..pos + 16].copy_from_slice(&linkage.to_le_bytes());
                return out;
            }
            pos += 12 + extra;
        }
    }

    #[test]
    fn enums_the_parser_reads_raw_are_checked_first() {
        // Both once crashed the server inside the loader's parser (undefined behaviour).
        let i = inspect(&with_var_linkage(&object("ok_tracepoint"), 7), &policy());
        assert_eq!(codes(&i), ["INVALID_ELF"]);
        assert!(
            i.violations[0].detail.contains("linkage 7"),
            "{:?}",
            i.violations
        );
        let i = inspect(&with_var_linkage(&object("ok_tracepoint"), 2), &policy());
        assert!(!codes(&i).contains(&"INVALID_ELF"), "{:?}", i.violations);
        let i = inspect(&object("bad_parser"), &policy());
        assert_eq!(codes(&i), ["INVALID_ELF"]);
        assert!(
            i.violations[0].detail.contains("pinning 5"),
            "{:?}",
            i.violations
        );
    }

    #[test]
    fn map_names_stay_in_their_directory() {
        for ok in ["counts", ".rodata", ".rodata.str1.1", "a_b.c9"] {
            assert!(map_name_ok(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "...",
            "../x",
            "a/b",
            "x y",
            "a\0b",
            &"a".repeat(256),
        ] {
            assert!(!map_name_ok(bad), "{bad:?}");
        }
    }
}
