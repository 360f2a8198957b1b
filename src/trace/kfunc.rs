//! The kfunc gadget's plan: `target` (a kernel function or a glob) resolved against the
//! functions ftrace can hook, the attach mechanism chosen (fentry/fexit where the kernel
//! allows and BTF describes every function, else kprobe/kretprobe), and the decoders that
//! name each function and decode its arguments through its BTF prototype.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::filter::Kind;
use super::plan::{CountValue, Counting, Plan, invalid};
use super::{Mode, TraceParams};
use crate::ebpf::functions::{ArgKind, Catalog, Prototype};
use crate::ebpf::gadget::Hook;
use crate::ebpf::probe::{self, Status};
use crate::error::{Code, EbpfError};
use crate::gadgets::{self, Output, kfunc};
use crate::glob::Glob;

/// The traced functions by address, to name the address an event or a key carries.
struct Functions {
    /// (address, name, prototype), sorted by address.
    by_addr: Vec<(u64, String, Option<Prototype>)>,
    /// The one function traced, when only one is (its address may be hidden).
    only: Option<(String, Option<Prototype>)>,
}

impl Functions {
    /// The function at `ip` (the address the kernel gives may sit a few bytes past the
    /// symbol, after an endbr instruction).
    fn at(&self, ip: u64) -> Option<(&str, Option<&Prototype>)> {
        if let Some((name, proto)) = &self.only {
            return Some((name, proto.as_ref()));
        }
        let i = self.by_addr.partition_point(|(a, _, _)| *a <= ip);
        let (addr, name, proto) = self.by_addr.get(i.checked_sub(1)?)?;
        (ip - addr < 16).then_some((name.as_str(), proto.as_ref()))
    }

    /// As [`Self::at`], from the low 32 bits a histogram key keeps (kernel text and
    /// modules share their high 32 bits).
    fn at_low(&self, low: u32) -> Option<&str> {
        if let Some((name, _)) = &self.only {
            return Some(name);
        }
        self.by_addr
            .iter()
            .find(|(a, _, _)| (low as u64).wrapping_sub(*a & 0xffff_ffff) < 16)
            .map(|(_, n, _)| n.as_str())
    }

    fn name(&self, ip: u64) -> String {
        self.at(ip)
            .map_or_else(|| format!("{ip:#x}"), |(n, _)| n.to_owned())
    }
}

/// Checks `target`: a function name or a glob of `*`, `?` over name characters.
fn parse_target(target: &str) -> Result<Glob, EbpfError> {
    let ok = !target.is_empty()
        && target.len() <= 128
        && target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '*' | '?'));
    if !ok {
        return Err(invalid(format!(
            "the kfunc gadget's `target` is a kernel function's name or a glob of `*` and `?` \
             over letters, digits and `_` (e.g. \"vfs_read\", \"tcp_v4_*\"); got `{target}`"
        ))
        .with_context("gadget", "kfunc"));
    }
    Glob::new(target).map_err(|e| invalid(format!("`target`: {e}")))
}

/// Which way functions are hooked here: fentry when every one has BTF, they fit the
/// object's fentry programs and trampolines work; else kprobes; else why neither.
fn mechanism(catalog: &Catalog, names: &[String]) -> Result<bool, EbpfError> {
    // A way works where its attach kind does and the gadget's own programs for it load
    // (fentry's call helpers a bare probe does not: bpf_get_func_arg is 5.17's).
    let [fentry_check, kprobe_check] = kfunc::checks();
    let fentry = probe::way_works("fentry", &fentry_check);
    let all_btf = names.iter().all(|n| {
        catalog
            .prototype(n)
            .is_some_and(|p| p.trampoline_can_hook())
    });
    if fentry.status == Status::Available && all_btf && names.len() <= kfunc::FENTRY.len() {
        return Ok(true);
    }
    let kprobe = probe::way_works("kprobe", &kprobe_check);
    if kprobe.status == Status::Available {
        return Ok(false);
    }
    let why = |s: &probe::Support| s.reason.clone().unwrap_or_else(|| "available".into());
    let fentry_why = if fentry.status == Status::Available && !all_btf {
        "BTF does not describe every function named, or one takes arguments a trampoline \
         cannot pass"
            .to_owned()
    } else if fentry.status == Status::Available {
        format!(
            "at most {} functions at once, and kprobes are needed for more",
            kfunc::FENTRY.len()
        )
    } else {
        why(&fentry)
    };
    Err(EbpfError::new(
        Code::GadgetFailed,
        format!(
            "kernel functions cannot be traced on this kernel: fentry: {fentry_why}; kprobe: {}. \
             Tracepoints (list_tracepoints, the tracepoint gadget) still work",
            why(&kprobe)
        ),
    )
    .with_context("gadget", "kfunc"))
}

pub(crate) fn kfunc_plan(p: &TraceParams, max_functions: usize) -> Result<Plan, EbpfError> {
    let target = p.target.as_deref().ok_or_else(|| {
        invalid(
            "the kfunc gadget needs `target`: a kernel function or a glob, e.g. \"vfs_read\" \
             or \"tcp_v4_*\" (list_functions finds them)",
        )
        .with_context("gadget", "kfunc")
    })?;
    let glob = parse_target(target)?;
    let on_return = p.on_return == Some(true);
    if on_return && p.mode != Some(Mode::Events) {
        return Err(invalid(
            "`return: true` applies to mode events (mode histogram gives call durations)",
        ));
    }
    let catalog = Catalog::load();
    let names: Vec<String> = catalog.matching(&glob).map(|(n, _)| n.clone()).collect();
    if names.is_empty() {
        return Err(EbpfError::new(
            Code::TargetNotFound,
            format!(
                "no traceable kernel function matches `{target}`{} (list_functions finds them \
                 by glob)",
                crate::suggest::did_you_mean(target, catalog.names())
            ),
        )
        .with_context("gadget", "kfunc"));
    }
    if names.len() > max_functions {
        return Err(invalid(format!(
            "`{target}` names {} kernel functions; one trace attaches to at most \
             {max_functions} (tools.trace.max_functions): narrow the glob (the first: {})",
            names.len(),
            names.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        ))
        .with_context("gadget", "kfunc"));
    }
    let fentry = mechanism(&catalog, &names)?;
    // Functions whose arguments are not all in registers are shown raw (arg0..arg5).
    let protos: Vec<Option<Prototype>> = names
        .iter()
        .map(|n| catalog.prototype(n).filter(Prototype::registers_match))
        .collect();
    drop(catalog);
    let addresses = crate::ebpf::functions::addresses(&names);
    Ok(assemble(p, &names, protos, addresses, fentry))
}

/// The plan for tracing `names` (with their prototypes and kallsyms addresses) by fentry
/// or by kprobes.
fn assemble(
    p: &TraceParams,
    names: &[String],
    protos: Vec<Option<Prototype>>,
    addresses: Vec<(u64, String)>,
    fentry: bool,
) -> Plan {
    let on_return = p.on_return == Some(true);
    let histogram = p.mode == Some(Mode::Histogram);
    let wants_stack = |list: &Option<Vec<String>>| {
        list.as_ref()
            .is_some_and(|l| l.iter().any(|f| f == "stack"))
    };
    let stack = !histogram && (wants_stack(&p.fields) || wants_stack(&p.group_by));

    let entry = |i: usize, f: &str| {
        if fentry {
            (kfunc::FENTRY[i], hook(true, f, false))
        } else {
            (kfunc::KPROBE, hook(false, f, false))
        }
    };
    let exit = |i: usize, f: &str| {
        if fentry {
            (kfunc::FEXIT[i], hook(true, f, true))
        } else {
            (kfunc::KRETPROBE, hook(false, f, true))
        }
    };
    let entries: Vec<_> = names.iter().enumerate().map(|(i, f)| entry(i, f)).collect();
    let mut programs = entries.clone();
    if on_return || histogram {
        programs.extend(names.iter().enumerate().map(|(i, f)| exit(i, f)));
    }

    let strings = string_slots(&protos);
    let functions = Arc::new(Functions {
        by_addr: addresses
            .into_iter()
            .map(|(a, n)| {
                let i = names.iter().position(|m| *m == n);
                (a, n, i.and_then(|i| protos[i].clone()))
            })
            .collect(),
        only: (names.len() == 1).then(|| (names[0].clone(), protos[0].clone())),
    });

    let mut plan = Plan::of(&kfunc::GADGET);
    plan.programs = programs;
    plan.args.1 = strings
        .iter()
        .enumerate()
        .map(|(i, slot)| (*slot as u32 + 1) << (8 * i))
        .sum();
    if histogram {
        plan.output = Output::KernelHistograms;
        plan.args.0 = kfunc::HIST;
        let per_process = p
            .group_by
            .as_ref()
            .is_some_and(|g| g.iter().any(|f| f == "pid" || f == "comm"));
        plan.args.2 = u32::from(per_process);
        plan.fields = vec!["function".into(), "pid".into(), "comm".into()];
        plan.kinds = vec![Kind::String, Kind::Number, Kind::String];
        plan.default_group_by = vec!["function".into()];
        plan.detail_fields = &[];
        let functions = Arc::clone(&functions);
        plan.decode = Box::new(move |bytes, _| {
            if bytes.len() < gadgets::hist::KEY_SIZE {
                return None;
            }
            let key = gadgets::hist::Key::parse(bytes);
            let mut out = Map::new();
            let name = functions
                .at_low(key.kind)
                .map_or_else(|| format!("{:#x}", key.kind), str::to_owned);
            out.insert("function".into(), name.into());
            gadgets::hist::decode_process_key(bytes, &mut out);
            Some(out)
        });
        return plan;
    }
    // Events (and counts the server makes of them): one per call, at entry or return.
    plan.output = Output::Events;
    plan.default_mode = Some(Mode::Count);
    plan.args.0 = if on_return {
        kfunc::AT_RETURN
    } else {
        kfunc::AT_ENTRY
    } | if stack { kfunc::STACK } else { 0 };
    let all = || gadgets::COMMON_FIELDS.iter().chain(&kfunc::FIELDS);
    plan.fields = all().map(|f| f.name.to_owned()).collect();
    plan.kinds = all()
        .map(|f| match f.name {
            "stack" => Kind::Strings,
            "ret" => Kind::Any,
            _ => Kind::of_type(f.ty),
        })
        .collect();
    plan.default_group_by = vec!["function".into()];
    // Counting calls where the kernel knows every key: only the entry programs attach.
    let names_of = Arc::clone(&functions);
    plan.counting = (!stack).then(|| Counting {
        programs: entries,
        values: vec![CountValue {
            fields: vec!["function".into()],
            cfg: 0,
            decode: Arc::new(move |ip, out: &mut Map<String, Value>| {
                out.insert("function".into(), names_of.name(ip as u64).into());
            }),
        }],
    });
    plan.decode = Box::new(move |bytes, clock| {
        if bytes.len() < kfunc::EVENT_SIZE {
            return None;
        }
        let mut out = Map::new();
        let rest = gadgets::header(bytes, clock, &mut out)?;
        decode_call(&functions, &strings, rest, &mut out);
        Some(out)
    });
    plan
}

fn hook(fentry: bool, function: &str, ret: bool) -> Hook {
    let function = function.to_owned();
    if fentry {
        Hook::Fentry { function, ret }
    } else {
        Hook::Kprobe { function, ret }
    }
}

/// The argument slots whose strings the kernel copies (two at most): those holding a
/// `char *` in the most functions traced.
fn string_slots(protos: &[Option<Prototype>]) -> Vec<usize> {
    let mut votes = [0usize; 6];
    for proto in protos.iter().flatten() {
        for p in &proto.params {
            if p.kind == ArgKind::Str && p.slot < 6 {
                votes[p.slot] += 1;
            }
        }
    }
    let mut slots: Vec<usize> = (0..6).filter(|s| votes[*s] > 0).collect();
    slots.sort_by_key(|s| std::cmp::Reverse(votes[*s]));
    slots.truncate(kfunc::STRINGS);
    slots
}

/// The event's function, arguments, and at a return its value and duration.
fn decode_call(
    functions: &Functions,
    strings: &[usize],
    rest: &[u8],
    out: &mut Map<String, Value>,
) {
    let ip = kfunc::ip(rest);
    let found = functions.at(ip);
    out.insert(
        "function".into(),
        found
            .map_or_else(|| format!("{ip:#x}"), |(n, _)| n.to_owned())
            .into(),
    );
    let proto = found.and_then(|(_, p)| p);
    let raw = |slot: usize| kfunc::arg(slot).u64(rest);
    let string = |slot: usize| {
        strings
            .iter()
            .position(|s| *s == slot)
            .map(|i| kfunc::string(i).str(rest))
    };
    let mut args = Map::new();
    match proto {
        Some(proto) => {
            for param in proto.params.iter().filter(|p| p.slot < 6) {
                let value = match (&param.kind, string(param.slot)) {
                    (ArgKind::Str, Some(s)) if raw(param.slot) != 0 => s.into(),
                    (kind, _) => show(kind, raw(param.slot)),
                };
                let name = if param.name.is_empty() {
                    format!("arg{}", param.slot)
                } else {
                    param.name.clone()
                };
                args.insert(name, value);
            }
        }
        None => {
            for slot in 0..6 {
                args.insert(format!("arg{slot}"), format!("{:#x}", raw(slot)).into());
            }
        }
    }
    out.insert("args".into(), Value::Object(args));
    if kfunc::RETURNED.u32(rest) != 0 {
        let ret = kfunc::RET.u64(rest);
        let shown = match proto.map(|p| &p.ret) {
            Some(ArgKind::Void) => None,
            Some(kind) => Some(show(kind, ret)),
            None => Some(json!(ret as i64)),
        };
        if let Some(v) = shown {
            out.insert("ret".into(), v);
        }
        out.insert("duration_ns".into(), kfunc::DURATION.u64(rest).into());
    }
    let stack_id = kfunc::STACK_ID.i32(rest);
    if stack_id >= 0 {
        out.insert("stack_id".into(), stack_id.into());
    }
}

/// One register's value as its type says.
fn show(kind: &ArgKind, v: u64) -> Value {
    let sign_extend = |bytes: u8| {
        let shift = 64 - 8 * u32::from(bytes);
        ((v << shift) as i64) >> shift
    };
    let truncate = |bytes: u8| {
        if bytes >= 8 {
            v
        } else {
            v & ((1u64 << (8 * bytes)) - 1)
        }
    };
    match kind {
        ArgKind::Signed(n) => json!(sign_extend(*n)),
        ArgKind::Unsigned(n) => json!(truncate(*n)),
        ArgKind::Bool => json!(v & 0xff != 0),
        ArgKind::Enum {
            names,
            size,
            signed,
        } => {
            let value = if *signed {
                sign_extend(*size)
            } else {
                truncate(*size) as i64
            };
            names.get(&value).map_or_else(|| json!(value), |n| json!(n))
        }
        ArgKind::Str | ArgKind::Pointer | ArgKind::Raw | ArgKind::Void => json!(format!("{v:#x}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gadgets::{Clock, HEADER};

    #[test]
    fn registers_show_as_their_types() {
        assert_eq!(show(&ArgKind::Signed(4), 0xffff_fffe), json!(-2));
        assert_eq!(show(&ArgKind::Signed(8), u64::MAX), json!(-1));
        assert_eq!(show(&ArgKind::Unsigned(2), 0x1_0005), json!(5));
        assert_eq!(show(&ArgKind::Bool, 0x100), json!(false));
        let e = ArgKind::Enum {
            names: [(1, "ONE".to_owned()), (-1, "MINUS".to_owned())]
                .into_iter()
                .collect(),
            size: 4,
            signed: true,
        };
        assert_eq!(show(&e, 1), json!("ONE"));
        assert_eq!(
            show(&e, 0xdead_0000_0000_0001),
            json!("ONE"),
            "upper bits ignored"
        );
        assert_eq!(show(&e, 0xffff_ffff), json!("MINUS"));
        assert_eq!(show(&e, 7), json!(7));
        let u = ArgKind::Enum {
            names: [(0x8000_0000, "HIGH".to_owned())].into_iter().collect(),
            size: 4,
            signed: false,
        };
        assert_eq!(show(&u, 0x8000_0000), json!("HIGH"));
        assert_eq!(
            show(&ArgKind::Pointer, 0xffff_8880_0000_1000),
            json!("0xffff888000001000")
        );
    }

    #[test]
    fn addresses_name_their_function_even_past_an_endbr() {
        let f = Functions {
            by_addr: vec![
                (0xffff_ffff_8100_0000, "a".into(), None),
                (0xffff_ffff_8100_0100, "b".into(), None),
            ],
            only: None,
        };
        assert_eq!(f.name(0xffff_ffff_8100_0004), "a");
        assert_eq!(f.name(0xffff_ffff_8100_0100), "b");
        assert_eq!(f.name(0xffff_ffff_8100_0200), "0xffffffff81000200");
        assert_eq!(f.at_low(0x8100_0104), Some("b"));
        assert_eq!(f.at_low(0x9100_0000), None);
    }

    #[test]
    fn targets_are_names_or_globs_of_name_characters() {
        assert!(parse_target("vfs_read").is_ok());
        assert!(parse_target("tcp_v4_*").is_ok());
        for bad in ["", "vfs read", "../x", "a:b", "x[1]"] {
            assert!(parse_target(bad).is_err(), "{bad}");
        }
    }

    fn openat2() -> Prototype {
        let param = |name: &str, ty: &str, kind, slot| crate::ebpf::functions::Param {
            name: name.into(),
            ty: ty.into(),
            kind,
            slot,
            size: 8,
        };
        Prototype {
            ret_ty: "long int".into(),
            ret: ArgKind::Signed(8),
            params: vec![
                param("dfd", "int", ArgKind::Signed(4), 0),
                param("filename", "const char *", ArgKind::Str, 1),
                param("how", "struct open_how *", ArgKind::Pointer, 2),
            ],
        }
    }

    fn params(v: Value) -> TraceParams {
        serde_json::from_value(v).unwrap()
    }

    const ADDR: u64 = 0xffff_ffff_8120_0000;

    /// A kfunc event as the kernel sends it: header, then struct kfunc_event's body.
    fn event(
        ip: u64,
        args: [u64; 6],
        ret: i64,
        returned: bool,
        stack_id: i32,
        s0: &str,
    ) -> Vec<u8> {
        let mut b = vec![0u8; kfunc::EVENT_SIZE];
        let h = HEADER;
        b[h..h + 8].copy_from_slice(&ip.to_le_bytes());
        for (i, a) in args.iter().enumerate() {
            b[h + 8 + 8 * i..h + 16 + 8 * i].copy_from_slice(&a.to_le_bytes());
        }
        b[h + 56..h + 64].copy_from_slice(&ret.to_le_bytes());
        b[h + 64..h + 72].copy_from_slice(&1234u64.to_le_bytes());
        b[h + 72..h + 76].copy_from_slice(&stack_id.to_le_bytes());
        b[h + 76..h + 80].copy_from_slice(&u32::from(returned).to_le_bytes());
        b[h + 80..h + 80 + s0.len()].copy_from_slice(s0.as_bytes());
        b
    }

    #[test]
    fn events_decode_arguments_through_the_prototype() {
        let names = vec!["do_sys_openat2".to_owned(), "other".to_owned()];
        let p = params(
            json!({"gadget": "kfunc", "target": "do_sys_*", "mode": "events",
                              "return": true, "fields": ["args", "stack"]}),
        );
        let plan = assemble(
            &p,
            &names,
            vec![Some(openat2()), None],
            vec![(ADDR, names[0].clone()), (ADDR + 0x100, names[1].clone())],
            true,
        );
        let hooks = plan.hooks();
        assert_eq!(
            hooks,
            [
                "fentry:do_sys_openat2",
                "fentry:other",
                "fexit:do_sys_openat2",
                "fexit:other"
            ]
        );
        assert_eq!(plan.args.0, kfunc::AT_RETURN | kfunc::STACK);
        assert_eq!(
            plan.args.1, 2,
            "filename (slot 1) is copied as the first string"
        );
        let clock = Clock::now();
        let args = [
            (-100i64) as u64,
            0x7ffd_0000_1000,
            0xffff_8880_0000_2000,
            0,
            0,
            0,
        ];
        let e = (plan.decode)(&event(ADDR + 4, args, 3, true, 7, "/etc/hosts"), &clock).unwrap();
        assert_eq!(e["function"], "do_sys_openat2");
        assert_eq!(
            e["args"],
            json!({"dfd": -100, "filename": "/etc/hosts", "how": "0xffff888000002000"})
        );
        assert_eq!(e["ret"], 3);
        assert_eq!(e["duration_ns"], 1234);
        assert_eq!(e["stack_id"], 7);
        // A function without BTF: raw registers; one the table cannot name: its address.
        let raw = (plan.decode)(
            &event(ADDR + 0x100, [1, 2, 3, 4, 5, 6], -2, true, -1, ""),
            &clock,
        )
        .unwrap();
        assert_eq!(raw["function"], "other");
        assert_eq!(raw["args"]["arg5"], "0x6");
        assert_eq!(raw["ret"], -2);
        assert!(raw.get("stack_id").is_none());
        let lost = (plan.decode)(&event(0x1234, [0; 6], 0, false, -1, ""), &clock).unwrap();
        assert_eq!(lost["function"], "0x1234");
        assert!(lost.get("ret").is_none(), "no return value at entry");
        assert!(
            (plan.decode)(&[0u8; 10], &clock).is_none(),
            "short records are malformed"
        );
    }

    /// The plan for functions `a` and `b` (no BTF), 64 bytes apart, by fentry or kprobes.
    fn two_functions(args: Value, fentry: bool) -> Plan {
        let names = ["a".to_owned(), "b".to_owned()];
        let addresses = vec![(ADDR, "a".into()), (ADDR + 64, "b".into())];
        assemble(&params(args), &names, vec![None, None], addresses, fentry)
    }

    #[test]
    fn counts_name_each_function_and_kprobes_attach_one_program_to_each() {
        let plan = two_functions(json!({"gadget": "kfunc", "target": "*"}), false);
        assert_eq!(plan.hooks(), ["kprobe:a", "kprobe:b"]);
        assert!(plan.programs.iter().all(|(n, _)| *n == kfunc::KPROBE));
        let counting = plan.counting.as_ref().expect("counts in the kernel");
        let mut out = Map::new();
        (counting.values[0].decode)((ADDR + 64) as i64, &mut out);
        assert_eq!(out["function"], "b");
        assert_eq!(plan.default_group_by, ["function"]);
    }

    #[test]
    fn histograms_are_keyed_by_function_and_by_process_when_asked() {
        let plan = two_functions(
            json!({"gadget": "kfunc", "target": "*", "mode": "histogram",
                   "group_by": ["function", "comm"]}),
            true,
        );
        assert_eq!(plan.output, Output::KernelHistograms);
        assert_eq!(plan.args, (kfunc::HIST, 0, 1));
        assert_eq!(plan.hooks().len(), 4, "entry and exit of each");
        let mut key = vec![0u8; gadgets::hist::KEY_SIZE];
        key[0..4].copy_from_slice(&42u32.to_le_bytes());
        key[4..8].copy_from_slice(&((ADDR + 64) as u32).to_le_bytes());
        key[8..11].copy_from_slice(b"cat");
        let out = (plan.decode)(&key, &Clock::now()).unwrap();
        assert_eq!(out["function"], "b");
        assert_eq!(out["pid"], 42);
        assert_eq!(out["comm"], "cat");
        key[4..8].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(
            (plan.decode)(&key, &Clock::now()).unwrap()["function"],
            "0x7"
        );
    }

    #[test]
    fn string_slots_follow_the_most_common_string_arguments() {
        let mut p = openat2();
        assert_eq!(string_slots(&[Some(p.clone()), None]), vec![1]);
        p.params[2].kind = ArgKind::Str;
        let q = openat2();
        assert_eq!(string_slots(&[Some(p), Some(q)]), vec![1, 2]);
    }
}
