//! Validation of an agent's BPF object before the kernel sees any of it: the ELF's
//! structure, each program's type, instructions, helpers and external symbols, its maps,
//! and where it would attach, against the configured policy. Every violation is reported,
//! not only the first. Malformed input is an `INVALID_ELF` violation, never a panic.

use std::collections::BTreeSet;

use object::{Object as _, ObjectSection as _, ObjectSymbol as _, RelocationTarget, SymbolKind};
use schemars::JsonSchema;
use serde::Serialize;

use crate::config::Config;
use crate::ebpf::names;

/// BPF instruction classes by the names the configuration uses (`code & 0x07`).
pub const OPCODE_CLASSES: [&str; 8] = [
    "BPF_LD",
    "BPF_LDX",
    "BPF_ST",
    "BPF_STX",
    "BPF_ALU",
    "BPF_JMP",
    "BPF_JMP32",
    "BPF_ALU64",
];

/// Program types that change what the kernel does beyond observing it or judging packets:
/// refused unless `tools.deploy.allowed_types` names them.
pub const INTRUSIVE_TYPES: [&str; 5] = ["fmod_ret", "lsm", "struct_ops", "freplace", "kprobe"];

const EM_BPF: u16 = 247;
const INSN: usize = 8;

/// A reason to refuse an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Violation {
    /// Stable code: BLOCKED_HELPER, BLOCKED_SYMBOL, OPCODE_NOT_ALLOWED,
    /// PROGRAM_TYPE_NOT_ALLOWED, TOO_MANY_INSTRUCTIONS, ATTACH_POINT_NOT_ALLOWED,
    /// TOO_MANY_MAPS, MAPS_TOO_LARGE, NO_PROGRAMS, INVALID_ELF.
    pub code: String,
    /// The program it concerns, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// Instruction index inside the program, if one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<usize>,
    /// What is wrong, naming the helper, symbol, type or limit.
    pub detail: String,
}

impl Violation {
    fn new(code: &str, program: Option<&str>, offset: Option<usize>, detail: String) -> Self {
        Self {
            code: code.to_owned(),
            program: program.map(str::to_owned),
            offset,
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
    /// Instructions, counting the subprograms it may call.
    pub instructions: usize,
    /// Helpers it calls, by name.
    pub helpers: Vec<String>,
    /// Kernel symbols and kfuncs it references.
    pub symbols: Vec<String>,
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
    pub allowed_attach_points: Vec<String>,
    pub max_maps: usize,
    pub max_map_bytes: u64,
}

/// `bpf_probe_write_user` and `probe_write_user` name the same helper.
fn helper_key(name: &str) -> String {
    name.trim_start_matches("bpf_").to_owned()
}

/// The helper id of a name, if the kernel headers this build knows define it.
pub fn helper_id(name: &str) -> Option<i32> {
    let key = helper_key(name);
    (1..512).find(|id| names::helper(*id).is_some_and(|n| n == key))
}

impl Policy {
    /// The policy of `config`; names it does not know are configuration errors (checked
    /// at load by `Config::validate`, so here they are skipped).
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
            allowed_attach_points: deploy.allowed_attach_points.clone(),
            max_maps: config.resources.max_maps as usize,
            max_map_bytes: u64::from(config.resources.max_memory_mb) * 1024 * 1024,
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
/// object parser cannot handle becomes an `INVALID_ELF` violation.
pub fn inspect(bytes: &[u8], policy: &Policy) -> Inspection {
    match std::panic::catch_unwind(|| inspect_inner(bytes, policy)) {
        Ok(i) => i,
        Err(_) => Inspection {
            violations: vec![Violation::new(
                "INVALID_ELF",
                None,
                None,
                "the object is malformed (its parser gave up on it)".into(),
            )],
            ..Inspection::default()
        },
    }
}

fn invalid(detail: impl Into<String>) -> Inspection {
    Inspection {
        violations: vec![Violation::new("INVALID_ELF", None, None, detail.into())],
        ..Inspection::default()
    }
}

struct Found {
    name: String,
    section: String,
    section_index: usize,
    start: usize,
    insns: Vec<[u8; INSN]>,
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
    let mut found = Vec::new();
    let mut text: Vec<[u8; INSN]> = Vec::new();
    let mut renames = Vec::new();
    for section in file.sections() {
        if section.kind() != object::SectionKind::Text {
            continue;
        }
        let Ok(name) = section.name() else {
            return invalid("a code section has no readable name");
        };
        let Ok(data) = section.data() else {
            return invalid(format!("section `{name}` cannot be read"));
        };
        if data.len() % INSN != 0 {
            return invalid(format!(
                "section `{name}` is {} bytes, not a whole number of instructions",
                data.len()
            ));
        }
        let insns: Vec<[u8; INSN]> = data
            .chunks_exact(INSN)
            .map(|c| c.try_into().unwrap_or([0; INSN]))
            .collect();
        if name == ".text" {
            text = insns;
            continue;
        }
        if let (_, Some(rename)) = section_kind(name) {
            renames.push((
                section.index().0,
                name.replacen(name.split('/').next().unwrap_or_default(), rename, 1),
            ));
        }
        let mut symbols: Vec<_> = file
            .symbols()
            .filter(|s| {
                s.kind() == SymbolKind::Text
                    && s.section_index() == Some(section.index())
                    && s.name().is_ok_and(|n| !n.is_empty())
            })
            .collect();
        symbols.sort_by_key(|s| s.address());
        for sym in symbols {
            let start = usize::try_from(sym.address()).unwrap_or(usize::MAX);
            let size = usize::try_from(sym.size()).unwrap_or(usize::MAX);
            let Some(end) = start.checked_add(size).filter(|e| *e <= data.len()) else {
                return invalid(format!(
                    "symbol `{}` lies outside section `{name}`",
                    sym.name().unwrap_or("?")
                ));
            };
            if start % INSN != 0 || size % INSN != 0 {
                return invalid(format!(
                    "symbol `{}` is not instruction-aligned",
                    sym.name().unwrap_or("?")
                ));
            }
            found.push(Found {
                name: sym.name().unwrap_or_default().to_owned(),
                section: name.to_owned(),
                section_index: section.index().0,
                start: start / INSN,
                insns: insns[start / INSN..end / INSN].to_vec(),
            });
        }
    }
    let mut out = Inspection::default();
    if found.is_empty() {
        out.violations.push(Violation::new(
            "NO_PROGRAMS",
            None,
            None,
            "the object has no BPF program (no code section other than .text with a named \
             function); put each program in a section such as SEC(\"tracepoint/...\")"
                .into(),
        ));
    }
    // External symbols each code section references, by instruction index.
    let externs = |section_index: usize| -> Vec<(usize, String)> {
        let Ok(section) = file.section_by_index(object::SectionIndex(section_index)) else {
            return Vec::new();
        };
        section
            .relocations()
            .filter_map(|(offset, rel)| match rel.target() {
                RelocationTarget::Symbol(idx) => {
                    let sym = file.symbol_by_index(idx).ok()?;
                    (sym.is_undefined() && !sym.name().ok()?.is_empty()).then(|| {
                        (
                            usize::try_from(offset).unwrap_or(0) / INSN,
                            sym.name().unwrap_or_default().to_owned(),
                        )
                    })
                }
                _ => None,
            })
            .collect()
    };
    let text_externs = file
        .section_by_name(".text")
        .map(|s| externs(s.index().0))
        .unwrap_or_default();
    for f in &found {
        let (kind, _) = section_kind(&f.section);
        let prog = Some(f.name.as_str());
        let calls_text = f.insns.iter().any(|i| is_call(i) && i[1] >> 4 == 1);
        let mut all: Vec<&[u8; INSN]> = f.insns.iter().collect();
        if calls_text {
            all.extend(text.iter());
        }
        if !policy.allowed_types.iter().any(|t| t == kind) {
            let why = if INTRUSIVE_TYPES.contains(&kind) {
                " (it can change what the kernel does, not only observe it)"
            } else {
                ""
            };
            out.violations.push(Violation::new(
                "PROGRAM_TYPE_NOT_ALLOWED",
                prog,
                None,
                format!(
                    "section `{}` is a {kind} program{why}; allowed types \
                     (tools.deploy.allowed_types): {}",
                    f.section,
                    policy.allowed_types.join(", ")
                ),
            ));
        }
        if all.len() > policy.max_instructions {
            out.violations.push(Violation::new(
                "TOO_MANY_INSTRUCTIONS",
                prog,
                None,
                format!(
                    "{} instructions (with the subprograms it may call); the limit is {} \
                     (security.bytecode_validation.max_instructions)",
                    all.len(),
                    policy.max_instructions
                ),
            ));
        }
        let mut bad_classes = BTreeSet::new();
        let mut helpers = BTreeSet::new();
        for (i, insn) in all.iter().enumerate() {
            // The second half of a 64-bit immediate load is not an instruction of its own.
            if i > 0 && all[i - 1][0] == 0x18 {
                continue;
            }
            let class = insn[0] & 0x07;
            if !policy.allowed_classes.contains(&class) && bad_classes.insert(class) {
                out.violations.push(Violation::new(
                    "OPCODE_NOT_ALLOWED",
                    prog,
                    Some(i),
                    format!(
                        "instruction class {} is not in security.bytecode_validation.allowed_opcodes",
                        OPCODE_CLASSES[class as usize]
                    ),
                ));
            }
            if is_call(insn) && insn[1] >> 4 == 0 {
                let id = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
                let name = names::helper(id).unwrap_or_else(|| format!("helper #{id}"));
                if let Some((_, blocked)) = policy.blocked_helpers.iter().find(|(b, _)| *b == id) {
                    out.violations.push(Violation::new(
                        "BLOCKED_HELPER",
                        prog,
                        Some(i),
                        format!(
                            "calls bpf_{blocked}, blocked by security.bytecode_validation.blocked_helpers"
                        ),
                    ));
                }
                helpers.insert(name);
            }
        }
        let mut symbols = BTreeSet::new();
        let own = externs(f.section_index)
            .into_iter()
            .filter(|(at, _)| *at >= f.start && *at < f.start + f.insns.len())
            .map(|(at, s)| (at - f.start, s));
        let shared = if calls_text {
            text_externs.clone()
        } else {
            Vec::new()
        };
        for (at, sym) in own.chain(shared) {
            if policy.blocked_symbols.contains(&sym) {
                out.violations.push(Violation::new(
                    "BLOCKED_SYMBOL",
                    prog,
                    Some(at),
                    format!(
                        "references kernel symbol `{sym}`, blocked by security.bytecode_validation.blocked_symbols"
                    ),
                ));
            }
            symbols.insert(sym);
        }
        out.programs.push(ProgramFacts {
            name: f.name.clone(),
            section: f.section.clone(),
            kind: kind.to_owned(),
            instructions: all.len(),
            helpers: helpers.into_iter().collect(),
            symbols: symbols.into_iter().collect(),
        });
    }
    out.normalized = match rename_sections(bytes, &renames) {
        Ok(b) => b,
        Err(e) => return invalid(e),
    };
    // Maps, through the parser the loader uses (it also proves the loader can read it).
    match aya_obj::Object::parse(&out.normalized) {
        Ok(obj) => {
            let mut maps: Vec<MapFacts> = obj
                .maps
                .iter()
                .map(|(name, m)| {
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
                    MapFacts {
                        name: name.clone(),
                        map_type,
                        key_size: m.key_size(),
                        value_size: m.value_size(),
                        max_entries: m.max_entries(),
                        bytes,
                    }
                })
                .collect();
            maps.sort_by(|a, b| a.name.cmp(&b.name));
            if maps.len() > policy.max_maps {
                out.violations.push(Violation::new(
                    "TOO_MANY_MAPS",
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
                    "MAPS_TOO_LARGE",
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
        Err(e) => {
            // A section the loader does not know is already a type violation; anything
            // else means the loader could not use the object.
            if out.violations.is_empty() {
                out.violations.push(Violation::new(
                    "INVALID_ELF",
                    None,
                    None,
                    format!("the loader cannot read the object: {e}"),
                ));
            }
        }
    }
    out
}

/// A BPF_JMP|BPF_CALL instruction (helper, subprogram or kfunc by its src_reg).
fn is_call(insn: &[u8; INSN]) -> bool {
    insn[0] == 0x85
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

/// Whether `point` (`tracepoint:syscalls:sys_enter_openat`) matches one of `globs`
/// (`*` any run of characters, `?` one).
pub fn attach_point_allowed(point: &str, globs: &[String]) -> bool {
    globs.iter().any(|g| glob(g.as_bytes(), point.as_bytes()))
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

/// Violations for attach points outside the allowed globs.
pub fn check_attach_points(points: &[(String, String)], policy: &Policy) -> Vec<Violation> {
    points
        .iter()
        .filter(|(_, point)| !attach_point_allowed(point, &policy.allowed_attach_points))
        .map(|(program, point)| {
            Violation::new(
                "ATTACH_POINT_NOT_ALLOWED",
                Some(program),
                None,
                format!(
                    "`{point}` matches none of tools.deploy.allowed_attach_points ({})",
                    policy.allowed_attach_points.join(", ")
                ),
            )
        })
        .collect()
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
        let globs = vec!["tracepoint:syscalls:*".to_owned(), "xdp:veth?".to_owned()];
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
}
