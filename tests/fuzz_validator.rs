//! Fuzzing the deploy validator: mutated ELF objects (bit flips, overwritten words, truncation,
//! inserted and deleted bytes, concentrated on the ELF and section headers where parsers are
//! most fragile) must come back as a verdict — never a panic that escapes, never a hang.
//!
//! A second run mutates instructions only (opcodes, pseudo sources, immediates, of
//! programs, subprograms and callbacks) and checks every object the validator accepts
//! against an oracle that links it twice: nothing the kernel would be given may call a
//! blocked helper or a kfunc, or carry a map reference the loader did not set.
//!
//! Bounded for CI: `PROPTEST_CASES` (default 5000) sets how many mutated objects are tried.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use ebpf_mcp::config::Config;
use ebpf_mcp::error::Code;
use ebpf_mcp::security::validate::{Inspection, Policy, inspect};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

/// Objects built from bpf/tests: benign ones of each kind and some the policy refuses.
const SEEDS: &[&[u8]] = &[
    include_bytes!("../bpf/obj/tests/ok_tracepoint.bpf.o"),
    include_bytes!("../bpf/obj/tests/ok_xdp.bpf.o"),
    include_bytes!("../bpf/obj/tests/ok_tc.bpf.o"),
    include_bytes!("../bpf/obj/tests/ok_uprobe.bpf.o"),
    include_bytes!("../bpf/obj/tests/bad_write_user.bpf.o"),
    include_bytes!("../bpf/obj/tests/bad_big_map.bpf.o"),
    include_bytes!("../bpf/obj/tests/bad_lsm.bpf.o"),
    include_bytes!("../bpf/obj/tests/bad_callback.bpf.o"),
    include_bytes!("../bpf/obj/tests/bad_raw_refs.bpf.o"),
    include_bytes!("../bpf/obj/tests/bad_kfunc.bpf.o"),
    include_bytes!("../bpf/obj/tests/bad_maps.bpf.o"),
];

/// A case that takes longer than this is a hang (a sound object takes milliseconds).
const HANG: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit {
        bit: u8,
    },
    SetByte {
        value: u8,
    },
    /// Writes a boundary value (0, all ones, a huge length, …) as a little-endian word.
    SetWord {
        value: u64,
        width: usize,
    },
    Truncate,
    Insert {
        bytes: Vec<u8>,
    },
    Delete {
        len: usize,
    },
}

/// Offsets are fractions of the object (so they fit any seed); half of them land in the
/// first 64 bytes or the last 1/8 — the ELF header and, for clang's output, the section
/// header table.
fn offset() -> impl Strategy<Value = f64> {
    prop_oneof![
        (0.0f64..1.0),
        (0usize..64).prop_map(|b| -(b as f64) - 1.0),
        (0.875f64..1.0),
    ]
}

fn place(frac: f64, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    if frac < 0.0 {
        return ((-frac - 1.0) as usize).min(len - 1);
    }
    ((frac * len as f64) as usize).min(len - 1)
}

fn mutation() -> impl Strategy<Value = (f64, Mutation)> {
    let boundary = prop_oneof![
        Just(0u64),
        Just(1),
        Just(0x7f),
        Just(0xff),
        Just(0x7fff_ffff),
        Just(0xffff_ffff),
        Just(u64::MAX),
        Just(0x8000_0000_0000_0000),
        any::<u64>(),
    ];
    (
        offset(),
        prop_oneof![
            4 => (0u8..8).prop_map(|bit| Mutation::FlipBit { bit }),
            2 => any::<u8>().prop_map(|value| Mutation::SetByte { value }),
            3 => (boundary, prop_oneof![Just(2usize), Just(4), Just(8)])
                .prop_map(|(value, width)| Mutation::SetWord { value, width }),
            1 => Just(Mutation::Truncate),
            1 => proptest::collection::vec(any::<u8>(), 1..64)
                .prop_map(|bytes| Mutation::Insert { bytes }),
            1 => (1usize..256).prop_map(|len| Mutation::Delete { len }),
        ],
    )
}

fn apply(object: &mut Vec<u8>, frac: f64, m: &Mutation) {
    let at = place(frac, object.len());
    match m {
        Mutation::FlipBit { bit } => {
            if let Some(b) = object.get_mut(at) {
                *b ^= 1 << bit;
            }
        }
        Mutation::SetByte { value } => {
            if let Some(b) = object.get_mut(at) {
                *b = *value;
            }
        }
        Mutation::SetWord { value, width } => {
            for (i, byte) in value.to_le_bytes().iter().take(*width).enumerate() {
                if let Some(b) = object.get_mut(at + i) {
                    *b = *byte;
                }
            }
        }
        Mutation::Truncate => object.truncate(at),
        Mutation::Insert { bytes } => {
            let tail = object.split_off(at.min(object.len()));
            object.extend_from_slice(bytes);
            object.extend_from_slice(&tail);
        }
        Mutation::Delete { len } => {
            let end = (at + len).min(object.len());
            object.drain(at.min(end)..end);
        }
    }
}

/// Runs the validator on its own thread so that a hang fails the case instead of the suite.
/// The kernel's BTF, parsed once for the whole run: the validator links against it, and
/// would parse it for every case if no one held it.
static VMLINUX: std::sync::LazyLock<Option<std::sync::Arc<ebpf_mcp::ebpf::btf::Vmlinux>>> =
    std::sync::LazyLock::new(|| ebpf_mcp::ebpf::btf::vmlinux().ok());

fn inspect_bounded(object: Vec<u8>) -> Result<Inspection, String> {
    std::sync::LazyLock::force(&VMLINUX);
    let (tx, rx) = mpsc::channel();
    let len = object.len();
    std::thread::spawn(move || {
        let _ = tx.send(inspect(&object, &policy()));
    });
    match rx.recv_timeout(HANG) {
        Ok(i) => Ok(i),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "validator still running after {HANG:?} on a {len}-byte object"
        )),
        // The sender was dropped without a verdict: a panic escaped `inspect`.
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err("validator panicked instead of returning a verdict".into())
        }
    }
}

/// The default policy, with every program type of the seeds allowed, so that instruction
/// checks are what decides.
fn policy() -> Policy {
    let mut config = Config::default();
    config.tools.deploy.allowed_types = ["tracepoint", "xdp", "tc", "uprobe"]
        .into_iter()
        .map(String::from)
        .collect();
    Policy::from_config(&config)
}

/// How many mutated objects to try (each takes about a millisecond).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000)
}

#[test]
fn mutated_objects_get_a_verdict() {
    let parser_panics = Arc::new(AtomicUsize::new(0));
    let counted = parser_panics.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counted.fetch_add(1, Ordering::Relaxed);
        default_hook(info);
    }));
    let (invalid, refused, clean) = (Cell::new(0usize), Cell::new(0usize), Cell::new(0usize));
    let mut runner = TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (0..SEEDS.len(), proptest::collection::vec(mutation(), 1..6));
    let result = runner.run(&strategy, |(seed, mutations)| {
        let mut object = SEEDS[seed].to_vec();
        for (frac, m) in &mutations {
            apply(&mut object, *frac, m);
        }
        let inspection = inspect_bounded(object).map_err(TestCaseError::fail)?;
        // A verdict is either a list of violations, each with a code and a reason, or a
        // clean object with programs to load.
        for v in &inspection.violations {
            prop_assert!(!v.detail.is_empty(), "{v:?}");
        }
        if inspection.violations.is_empty() {
            prop_assert!(!inspection.programs.is_empty());
            prop_assert!(!inspection.normalized.is_empty());
            clean.set(clean.get() + 1);
        } else if inspection
            .violations
            .iter()
            .any(|v| v.code == Code::InvalidElf)
        {
            invalid.set(invalid.get() + 1);
        } else {
            refused.set(refused.get() + 1);
        }
        Ok(())
    });
    let _ = std::panic::take_hook();
    if let Err(e) = result {
        panic!("{e}");
    }
    let panics = parser_panics.load(Ordering::Relaxed);
    let (invalid, refused, clean) = (invalid.get(), refused.get(), clean.get());
    eprintln!(
        "{} mutated objects: {invalid} invalid ELF ({panics} caught parser panics), \
         {refused} refused by policy, {clean} clean",
        cases()
    );
    // The mutations must reach past the ELF reader, or only the first check is fuzzed.
    assert!(
        invalid > 0 && refused + clean > 0,
        "{invalid} {refused} {clean}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 500,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_are_invalid_elf(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let inspection = inspect_bounded(bytes).map_err(TestCaseError::fail)?;
        prop_assert_eq!(inspection.violations.len(), 1);
        prop_assert_eq!(inspection.violations[0].code.as_str(), "INVALID_ELF");
    }
}

#[test]
fn every_seed_is_understood_before_mutation() {
    // The mutations start from objects the validator parses; if a seed stopped parsing,
    // the fuzzing above would only ever exercise the first rejection.
    for (i, seed) in SEEDS.iter().enumerate() {
        let inspection = inspect_bounded(seed.to_vec()).unwrap();
        assert!(
            !inspection.programs.is_empty(),
            "seed {i}: {:?}",
            inspection.violations
        );
        assert!(
            inspection
                .violations
                .iter()
                .all(|v| v.code != Code::InvalidElf),
            "seed {i}: {:?}",
            inspection.violations
        );
    }
}

/// Where the code of an object lies: (file offset, length) of each code section.
fn code_ranges(object: &[u8]) -> Vec<(usize, usize)> {
    use object::{Object as _, ObjectSection as _};
    let Ok(file) = object::read::elf::ElfFile64::<object::Endianness>::parse(object) else {
        return Vec::new();
    };
    file.sections()
        .filter(|s| {
            s.kind() == object::SectionKind::Text || s.name().is_ok_and(|n| n.starts_with(".text"))
        })
        .filter_map(|s| s.file_range())
        .map(|(at, len)| (at as usize, len as usize))
        .filter(|(_, len)| *len >= 8)
        .collect()
}

#[derive(Debug, Clone)]
enum InsnMutation {
    /// Sets the source-register nibble (0..15): pseudo sources, kfunc calls.
    Src(u8),
    /// Replaces the opcode: 64-bit loads, calls and their undefined encodings.
    Opcode(u8),
    Imm(i32),
}

fn insn_mutation() -> impl Strategy<Value = (f64, f64, InsnMutation)> {
    (
        0.0f64..1.0,
        0.0f64..1.0,
        prop_oneof![
            3 => (0u8..16).prop_map(InsnMutation::Src),
            2 => prop_oneof![Just(0x18u8), Just(0x85), Just(0x86), Just(0x8d), any::<u8>()]
                .prop_map(InsnMutation::Opcode),
            2 => prop_oneof![
                Just(36i32), Just(58), Just(109), Just(117), Just(-1), Just(0), Just(1),
                Just(i32::MAX), Just(i32::MIN), any::<i32>()
            ]
            .prop_map(InsnMutation::Imm),
        ],
    )
}

fn apply_insn(object: &mut [u8], section: f64, insn: f64, m: &InsnMutation) {
    let ranges = code_ranges(object);
    if ranges.is_empty() {
        return;
    }
    let (at, len) = ranges[((section * ranges.len() as f64) as usize).min(ranges.len() - 1)];
    let count = len / 8;
    let at = at + ((insn * count as f64) as usize).min(count - 1) * 8;
    match m {
        InsnMutation::Src(src) => object[at + 1] = (object[at + 1] & 0x0f) | (src << 4),
        InsnMutation::Opcode(code) => object[at] = *code,
        InsnMutation::Imm(imm) => object[at + 4..at + 8].copy_from_slice(&imm.to_le_bytes()),
    }
}

/// The object linked as a loader would, with every map at descriptor `fd`.
fn linked_programs(
    normalized: &[u8],
    fd: i32,
) -> Option<Vec<(String, Vec<aya_obj::generated::bpf_insn>)>> {
    let mut obj = aya_obj::Object::parse(normalized).ok()?;
    let text: std::collections::HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
    let maps: Vec<(String, aya_obj::Map)> = obj
        .maps
        .iter()
        .map(|(n, m)| (n.clone(), m.clone()))
        .collect();
    obj.relocate_maps(maps.iter().map(|(n, m)| (n.as_str(), fd, m)), &text)
        .ok()?;
    obj.relocate_calls(&text).ok()?;
    let mut out: Vec<_> = obj
        .programs
        .iter()
        .map(|(name, p)| {
            (
                name.clone(),
                obj.functions[&p.function_key()].instructions.clone(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Some(out)
}

/// What an accepted object must never give the kernel, checked on the linked code.
fn oracle(inspection: &Inspection) -> Result<(), String> {
    let (Some(a), Some(b)) = (
        linked_programs(&inspection.normalized, 1000),
        linked_programs(&inspection.normalized, 2000),
    ) else {
        return Err("accepted, but the loader cannot link it".into());
    };
    let blocked = [36, 58, 109, 117];
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        let mut i = 0;
        while i < x.len() {
            let (p, q) = (&x[i], &y[i]);
            let src = p.src_reg();
            if p.code == 0x18 {
                match src {
                    0 | 4 => {}
                    // A map reference the loader set follows the descriptor it was given.
                    1 | 2 if p.imm == 1000 && q.imm == 2000 => {}
                    _ => {
                        return Err(format!(
                            "{name}@{i}: ld_imm64 src {src} imm {} not set by the loader",
                            p.imm
                        ));
                    }
                }
                i += 2;
                continue;
            }
            if p.code == 0x85 && src == 2 {
                return Err(format!("{name}@{i}: kfunc call {}", p.imm));
            }
            if p.code == 0x85 && src == 0 && blocked.contains(&p.imm) {
                return Err(format!("{name}@{i}: blocked helper {}", p.imm));
            }
            i += 1;
        }
    }
    Ok(())
}

#[test]
fn mutated_instructions_never_smuggle_references() {
    let accepted = Cell::new(0usize);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (
        0..SEEDS.len(),
        proptest::collection::vec(insn_mutation(), 1..4),
    );
    let result = runner.run(&strategy, |(seed, mutations)| {
        let mut object = SEEDS[seed].to_vec();
        for (section, insn, m) in &mutations {
            apply_insn(&mut object, *section, *insn, m);
        }
        let inspection = inspect_bounded(object).map_err(TestCaseError::fail)?;
        if inspection.violations.is_empty() {
            accepted.set(accepted.get() + 1);
            oracle(&inspection).map_err(TestCaseError::fail)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "{} instruction mutations: {} accepted, all clean",
        cases(),
        accepted.get()
    );
    // Benign seeds mutated harmlessly must still pass, or the oracle checks nothing.
    assert!(accepted.get() > 0);
}
