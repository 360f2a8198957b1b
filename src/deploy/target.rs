//! Where a deployed program attaches, made canonical before policy sees it: tracepoint and
//! raw tracepoint names are plain names that exist, files are opened and named by the path
//! the kernel resolves them to (links and `..` followed), interfaces by their primary name
//! and index, cgroups by their real directory on the cgroup2 mount. The policy globs of
//! `tools.deploy.allowed_attach_points` are matched against these canonical points, and
//! the attach then uses what was resolved (the open file, the interface index), so nothing
//! can be swapped in between.
//!
//! Canonical points: `tracepoint:CATEGORY:NAME`, `raw_tp:NAME`, `tp_btf:NAME`,
//! `uprobe:/REAL/PATH:SYMBOL`, `xdp:IFNAME`, `tc:IFNAME:ingress|egress`,
//! `cgroup_skb:/REAL/CGROUP/DIR`, `perf_event:cpu-clock@HZHz`.

use std::path::{Path, PathBuf};

use crate::ebpf::sys::PinnedFile;
use crate::glob::Glob;

/// Highest sampling rate a perf_event deployment may ask for.
pub const MAX_FREQUENCY_HZ: u64 = 100_000;

/// Traffic direction of a TC program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

/// Which cgroup hook a cgroup_skb program uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDirection {
    Ingress,
    Egress,
}

/// A resolved attach target.
#[derive(Debug)]
pub enum Target {
    Tracepoint {
        category: String,
        name: String,
    },
    RawTp(String),
    TpBtf(String),
    Uprobe {
        /// The binary, pinned: the attach names it as `/proc/self/fd/N`.
        file: PinnedFile,
        /// Its real path (no links, no `..`).
        path: PathBuf,
        symbol: String,
        pid: Option<u32>,
    },
    Xdp {
        name: String,
        index: u32,
    },
    Tc {
        name: String,
        index: u32,
        direction: Direction,
    },
    CgroupSkb {
        /// The cgroup directory, pinned: the attach opens it through this descriptor.
        dir: PinnedFile,
        path: PathBuf,
        direction: CgroupDirection,
    },
    PerfEvent(u64),
    /// verify_only: nothing.
    None,
}

impl Target {
    /// The canonical attach point, as policy globs are matched against it.
    pub fn point(&self) -> String {
        match self {
            Target::Tracepoint { category, name } => format!("tracepoint:{category}:{name}"),
            Target::RawTp(n) => format!("raw_tp:{n}"),
            Target::TpBtf(n) => format!("tp_btf:{n}"),
            Target::Uprobe { path, symbol, .. } => format!("uprobe:{}:{symbol}", path.display()),
            Target::Xdp { name, .. } => format!("xdp:{name}"),
            Target::Tc {
                name, direction, ..
            } => format!(
                "tc:{name}:{}",
                match direction {
                    Direction::Ingress => "ingress",
                    Direction::Egress => "egress",
                }
            ),
            Target::CgroupSkb { path, .. } => format!("cgroup_skb:{}", path.display()),
            Target::PerfEvent(hz) => format!("perf_event:cpu-clock@{hz}Hz"),
            Target::None => String::new(),
        }
    }
}

/// Why a target was not resolved.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Outside the policy as the kernel resolves it, or naming nothing that exists: one
    /// answer for both, so a refusal never tells whether a path exists or where it leads.
    #[error(
        "`{point}` matches none of tools.deploy.allowed_attach_points ({allowed}) as the kernel \
         resolves it (links and `..` followed; a path that names no regular file matches none)"
    )]
    NotAllowed { point: String, allowed: String },
    /// The target is malformed or does not exist (inside the policy).
    #[error("{0}")]
    Invalid(String),
}

/// What a program's attach entry gives, beside the program's own section.
#[derive(Debug, Default, Clone)]
pub struct Requested {
    pub tracepoint: Option<String>,
    pub raw_tp: Option<String>,
    pub target: Option<String>,
    pub pid: Option<u32>,
    pub interface: Option<String>,
    pub direction: Option<Direction>,
    pub cgroup: Option<String>,
    pub frequency_hz: Option<u64>,
}

/// Resolves where program `name` (of `kind`, in `section`) attaches and checks the
/// canonical point against `allowed`.
pub fn resolve(
    name: &str,
    kind: &str,
    section: &str,
    asked: Option<&Requested>,
    allowed: &[Glob],
) -> Result<Target, TargetError> {
    let asked = asked.cloned().unwrap_or_default();
    let invalid = |m: String| TargetError::Invalid(m);
    let rest = section.split_once('/').map(|(_, r)| r);
    let target = match kind {
        "tracepoint" => {
            let (category, tp) = match (&asked.tracepoint, rest) {
                (Some(tp), _) => tp.split_once(':').ok_or_else(|| {
                    invalid(format!("`tracepoint` is `category:name`, not `{tp}`"))
                })?,
                (None, Some(r)) => r.split_once('/').ok_or_else(|| {
                    invalid(format!(
                        "section `{section}` names no tracepoint; give `attach: [{{\"program\": \
                         \"{name}\", \"tracepoint\": \"category:name\"}}]`"
                    ))
                })?,
                (None, None) => {
                    return Err(invalid(format!(
                        "program `{name}` needs `attach` with `tracepoint: \"category:name\"` \
                         (its section names none)"
                    )));
                }
            };
            plain_name("tracepoint category", category)?;
            plain_name("tracepoint name", tp)?;
            let target = Target::Tracepoint {
                category: category.to_owned(),
                name: tp.to_owned(),
            };
            allow(&target.point(), allowed)?;
            if !crate::ebpf::tracefs::exists(category, tp) {
                return Err(invalid(format!(
                    "this kernel has no tracepoint `{category}:{tp}`; list_tracepoints finds them"
                )));
            }
            target
        }
        "raw_tp" => {
            let tp = asked
                .raw_tp
                .as_deref()
                .or(rest)
                .ok_or_else(|| invalid(format!("raw_tp program `{name}` needs `raw_tp`")))?;
            plain_name("raw tracepoint", tp)?;
            Target::RawTp(tp.to_owned())
        }
        "tp_btf" => {
            let tp =
                rest.ok_or_else(|| invalid(format!("section `{section}` names no tracepoint")))?;
            plain_name("tp_btf tracepoint", tp)?;
            Target::TpBtf(tp.to_owned())
        }
        "uprobe" => {
            let spec = asked.target.as_deref().ok_or_else(|| {
                invalid(format!(
                    "uprobe program `{name}` needs `attach: [{{\"program\": \"{name}\", \
                     \"target\": \"binary:symbol\"}}]`"
                ))
            })?;
            uprobe(spec, asked.pid, allowed)?
        }
        "xdp" => {
            let (name, index) = interface(asked.interface.as_deref(), name, kind, allowed)?;
            Target::Xdp { name, index }
        }
        "tc" => {
            let direction = asked.direction.unwrap_or(Direction::Ingress);
            let suffix = match direction {
                Direction::Ingress => ":ingress",
                Direction::Egress => ":egress",
            };
            let (ifname, index) = interface(asked.interface.as_deref(), name, kind, allowed)
                .map_err(|e| match e {
                    TargetError::NotAllowed { point, allowed } => TargetError::NotAllowed {
                        point: format!("{point}{suffix}"),
                        allowed,
                    },
                    other => other,
                })?;
            Target::Tc {
                name: ifname,
                index,
                direction,
            }
        }
        "cgroup_skb" => {
            let path = asked.cgroup.as_deref().ok_or_else(|| {
                invalid(format!(
                    "cgroup_skb program `{name}` needs `cgroup` (a cgroup v2 directory)"
                ))
            })?;
            let direction = if section.contains("egress") {
                CgroupDirection::Egress
            } else {
                CgroupDirection::Ingress
            };
            cgroup(path, direction, allowed)?
        }
        "perf_event" => {
            let hz = asked.frequency_hz.ok_or_else(|| {
                invalid(format!("perf_event program `{name}` needs `frequency_hz`"))
            })?;
            if hz == 0 || hz > MAX_FREQUENCY_HZ {
                return Err(invalid(format!(
                    "`frequency_hz` is between 1 and {MAX_FREQUENCY_HZ}"
                )));
            }
            Target::PerfEvent(hz)
        }
        other => {
            return Err(invalid(format!(
                "this server cannot attach {other} programs (`{name}`); verify_only still \
                 checks them"
            )));
        }
    };
    allow(&target.point(), allowed)?;
    Ok(target)
}

fn allow(point: &str, allowed: &[Glob]) -> Result<(), TargetError> {
    if crate::glob::any_matches(allowed, point) {
        Ok(())
    } else {
        Err(not_allowed(point, allowed))
    }
}

fn not_allowed(point: &str, allowed: &[Glob]) -> TargetError {
    TargetError::NotAllowed {
        point: point.to_owned(),
        allowed: allowed
            .iter()
            .map(Glob::as_str)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// A tracepoint-style name: letters, digits, `_` and `-` (what tracefs and the kernel's
/// tracepoint tables hold), so it can never reach another directory.
fn plain_name(what: &str, s: &str) -> Result<(), TargetError> {
    let ok = !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(TargetError::Invalid(format!(
            "`{}` is not a {what}: names are letters, digits, `_` and `-`",
            s.escape_debug()
        )))
    }
}

fn uprobe(spec: &str, pid: Option<u32>, allowed: &[Glob]) -> Result<Target, TargetError> {
    let (binary, symbol) = spec
        .split_once(':')
        .filter(|(b, s)| !b.is_empty() && !s.is_empty())
        .ok_or_else(|| {
            TargetError::Invalid(format!(
                "`target` is `binary:symbol`, e.g. \"/usr/bin/bash:readline\" or \
                 \"libc.so.6:malloc\"; got `{spec}`"
            ))
        })?;
    if symbol.contains('\0') {
        return Err(TargetError::Invalid("the symbol holds a NUL byte".into()));
    }
    // A bare name is looked up as a program on PATH or a library in the loader's
    // directories: system places, so saying it was not found reveals nothing.
    let named = if binary.contains('/') {
        PathBuf::from(binary)
    } else {
        crate::gadgets::uprobe::find_binary(binary).map_err(TargetError::Invalid)?
    };
    if !named.is_absolute() {
        return Err(TargetError::Invalid(format!(
            "`{binary}` is a relative path; give the binary's absolute path"
        )));
    }
    // Every failure reads the same as a path outside the policy: the caller learns nothing
    // about what exists on the host or where it leads, only whether it may probe it.
    let spelled = format!("uprobe:{}:{symbol}", named.display());
    let refused = || not_allowed(&spelled, allowed);
    let file = PinnedFile::open(&named).map_err(|_| refused())?;
    if !file.is_regular() || file.real.as_os_str().as_encoded_bytes().contains(&b':') {
        return Err(refused());
    }
    let target = Target::Uprobe {
        path: file.real.clone(),
        file,
        symbol: symbol.to_owned(),
        pid,
    };
    allow(&target.point(), allowed).map_err(|_| refused())?;
    Ok(target)
}

fn interface(
    name: Option<&str>,
    program: &str,
    kind: &str,
    allowed: &[Glob],
) -> Result<(String, u32), TargetError> {
    let name = name.ok_or_else(|| {
        TargetError::Invalid(format!(
            "{kind} program `{program}` needs `attach: [{{\"program\": \"{program}\", \
             \"interface\": \"IFNAME\"}}]`"
        ))
    })?;
    // The kernel's own rule for device names (dev_valid_name).
    let valid = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if !valid {
        return Err(TargetError::Invalid(format!(
            "`{}` is not an interface name (1 to 15 bytes, no `/`, `:` or spaces)",
            name.escape_debug()
        )));
    }
    // An alternative name resolves to its device: policy sees the primary name.
    let (primary, index) = crate::ebpf::sys::interface(name).map_err(|e| {
        match allow(&format!("{kind}:{name}"), allowed) {
            Err(refused) => refused,
            Ok(()) => TargetError::Invalid(format!("no interface `{name}` here: {e}")),
        }
    })?;
    allow(&format!("{kind}:{primary}"), allowed)?;
    Ok((primary, index))
}

fn cgroup(path: &str, direction: CgroupDirection, allowed: &[Glob]) -> Result<Target, TargetError> {
    let asked = Path::new(path);
    if !asked.is_absolute() {
        return Err(TargetError::Invalid(format!(
            "`cgroup` is an absolute path of a cgroup v2 directory, not `{path}`"
        )));
    }
    let spelled = format!("cgroup_skb:{path}");
    let refused = || not_allowed(&spelled, allowed);
    let dir = PinnedFile::open(asked).map_err(|_| refused())?;
    if !dir.is_cgroup2_dir() {
        return Err(refused());
    }
    let target = Target::CgroupSkb {
        path: dir.real.clone(),
        dir,
        direction,
    };
    allow(&target.point(), allowed).map_err(|_| refused())?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(g: &[&str]) -> Vec<Glob> {
        g.iter().map(|g| Glob::new(g).unwrap()).collect()
    }

    fn tp(asked: &str, allowed: &[&str]) -> Result<Target, TargetError> {
        let req = Requested {
            tracepoint: Some(asked.into()),
            ..Requested::default()
        };
        resolve("p", "tracepoint", "tracepoint", Some(&req), &globs(allowed))
    }

    #[test]
    fn tracepoint_names_cannot_leave_their_category() {
        let allowed = ["tracepoint:syscalls:*"];
        for hostile in [
            "syscalls:../sched/sched_switch",
            "syscalls:..",
            "syscalls:a/b",
            "syscalls:",
            "syscalls:sys_enter_getpid\0",
            "../sched:sched_switch",
        ] {
            assert!(
                matches!(tp(hostile, &allowed), Err(TargetError::Invalid(_))),
                "{hostile:?}"
            );
        }
        assert!(matches!(
            tp("sched:sched_switch", &allowed),
            Err(TargetError::NotAllowed { .. })
        ));
        // Inside the policy but not a tracepoint of this kernel.
        let Err(TargetError::Invalid(why)) = tp("syscalls:sys_enter_nothing", &allowed) else {
            panic!()
        };
        assert!(why.contains("list_tracepoints"), "{why}");
        assert_eq!(
            tp("syscalls:sys_enter_getpid", &allowed).unwrap().point(),
            "tracepoint:syscalls:sys_enter_getpid"
        );
    }

    fn kind(
        kind: &str,
        section: &str,
        req: Requested,
        allowed: &[&str],
    ) -> Result<Target, TargetError> {
        resolve("p", kind, section, Some(&req), &globs(allowed))
    }

    fn invalid(r: Result<Target, TargetError>) -> String {
        match r {
            Err(TargetError::Invalid(why)) => why,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn the_grammar_of_each_program_kind() {
        let all = ["*"];
        // Sections name the tracepoint when `attach` does not.
        let t = kind(
            "tracepoint",
            "tracepoint/syscalls/sys_enter_getpid",
            Requested::default(),
            &all,
        );
        assert_eq!(t.unwrap().point(), "tracepoint:syscalls:sys_enter_getpid");
        let why = invalid(kind("tracepoint", "tracepoint", Requested::default(), &all));
        assert!(why.contains("needs `attach`"), "{why}");
        let bad = Requested {
            tracepoint: Some("no-colon".into()),
            ..Requested::default()
        };
        assert!(invalid(kind("tracepoint", "tracepoint", bad, &all)).contains("category:name"));
        // raw_tp: from `raw_tp` or the section, a plain name either way.
        let raw = |r: &str| Requested {
            raw_tp: Some(r.into()),
            ..Requested::default()
        };
        assert_eq!(
            kind("raw_tp", "raw_tp", raw("sched_switch"), &all)
                .unwrap()
                .point(),
            "raw_tp:sched_switch"
        );
        assert_eq!(
            kind("raw_tp", "raw_tp/sys_enter", Requested::default(), &all)
                .unwrap()
                .point(),
            "raw_tp:sys_enter"
        );
        invalid(kind("raw_tp", "raw_tp", raw("../x"), &all));
        invalid(kind("raw_tp", "raw_tp", Requested::default(), &all));
        assert!(matches!(
            kind("raw_tp", "raw_tp", raw("sched_switch"), &["raw_tp:sys_*"]),
            Err(TargetError::NotAllowed { .. })
        ));
        // tp_btf: the section only.
        assert_eq!(
            kind("tp_btf", "tp_btf/sched_switch", Requested::default(), &all)
                .unwrap()
                .point(),
            "tp_btf:sched_switch"
        );
        invalid(kind("tp_btf", "tp_btf", Requested::default(), &all));
        // perf_event: a frequency in range.
        let hz = |h: u64| Requested {
            frequency_hz: Some(h),
            ..Requested::default()
        };
        assert_eq!(
            kind("perf_event", "perf_event", hz(99), &all)
                .unwrap()
                .point(),
            "perf_event:cpu-clock@99Hz"
        );
        for h in [0, MAX_FREQUENCY_HZ + 1] {
            assert!(invalid(kind("perf_event", "perf_event", hz(h), &all)).contains("between 1"));
        }
        invalid(kind("perf_event", "perf_event", Requested::default(), &all));
        // uprobe: binary:symbol, both non-empty.
        for spec in ["", ":", "bin:", ":sym", "no-colon"] {
            let req = Requested {
                target: Some(spec.into()),
                ..Requested::default()
            };
            assert!(
                invalid(kind("uprobe", "uprobe", req, &all)).contains("binary:symbol"),
                "{spec:?}"
            );
        }
        // Kinds the server cannot attach.
        assert!(
            invalid(kind(
                "kprobe",
                "kprobe/do_sys_open",
                Requested::default(),
                &all
            ))
            .contains("verify_only")
        );
        // A refused cgroup or interface names no more than a missing one would.
        let cg = Requested {
            cgroup: Some("/nonexistent/cgroup".into()),
            ..Requested::default()
        };
        assert!(matches!(
            kind(
                "cgroup_skb",
                "cgroup_skb/ingress",
                cg,
                &["cgroup_skb:/sys/fs/cgroup/*"]
            ),
            Err(TargetError::NotAllowed { .. })
        ));
    }

    fn up(spec: &str, allowed: &[&str]) -> Result<Target, TargetError> {
        let req = Requested {
            target: Some(spec.into()),
            ..Requested::default()
        };
        resolve("p", "uprobe", "uprobe", Some(&req), &globs(allowed))
    }

    #[test]
    fn uprobe_paths_are_resolved_before_policy() {
        let dir = std::env::temp_dir().join(format!("ebpf-mcp-target-{}", std::process::id()));
        let inside = dir.join("allowed");
        let outside = dir.join("other");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::copy("/bin/true", outside.join("bin")).unwrap();
        std::fs::copy("/bin/true", inside.join("bin")).unwrap();
        let _ = std::fs::remove_file(inside.join("link"));
        std::os::unix::fs::symlink(outside.join("bin"), inside.join("link")).unwrap();
        let allowed = [format!("uprobe:{}/*:*", inside.display())];
        let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
        let p = |s: &str| format!("{}:main", s);
        // `..` out of the allowed directory.
        let dotdot = p(&format!("{}/../other/bin", inside.display()));
        assert!(matches!(
            up(&dotdot, &allowed),
            Err(TargetError::NotAllowed { .. })
        ));
        // A link inside that points outside: refused without saying where it leads.
        let link = p(&inside.join("link").display().to_string());
        let Err(TargetError::NotAllowed { point, .. }) = up(&link, &allowed) else {
            panic!()
        };
        assert!(!point.contains("/other/"), "{point}");
        // Links that make the text look inside while the kernel goes elsewhere.
        let _ = std::fs::remove_file(inside.join("up"));
        std::os::unix::fs::symlink(&dir, inside.join("up")).unwrap();
        let trick = p(&format!("{}/up/other/bin", inside.display()));
        assert!(matches!(
            up(&trick, &allowed),
            Err(TargetError::NotAllowed { .. })
        ));
        // A FIFO inside the policy neither blocks nor passes.
        let fifo = inside.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(
            up(&p(&fifo.display().to_string()), &allowed),
            Err(TargetError::NotAllowed { .. })
        ));
        // A missing file outside the policy is refused exactly like an existing one.
        let missing = up(&p("/root/no-such-file"), &allowed)
            .unwrap_err()
            .to_string();
        let existing = up(&p("/bin/true"), &allowed).unwrap_err().to_string();
        assert_eq!(
            missing.replace("/root/no-such-file", "X"),
            existing.replace("/bin/true", "X")
        );
        // ... and so is a link outside the policy, whatever it points to.
        let _ = std::fs::remove_file(outside.join("to-inside"));
        std::os::unix::fs::symlink(outside.join("bin"), outside.join("to-outside")).unwrap();
        let hidden = up(
            &p(&outside.join("to-outside").display().to_string()),
            &allowed,
        )
        .unwrap_err()
        .to_string();
        assert!(
            hidden.contains("to-outside") && !hidden.contains("other/bin:"),
            "{hidden}"
        );
        let ok = up(&p(&inside.join("bin").display().to_string()), &allowed).unwrap();
        assert_eq!(ok.point(), format!("uprobe:{}/bin:main", inside.display()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn interfaces_are_named_by_their_device() {
        let req = |name: &str| Requested {
            interface: Some(name.into()),
            ..Requested::default()
        };
        let allowed = globs(&["xdp:lo"]);
        let ok = resolve("p", "xdp", "xdp", Some(&req("lo")), &allowed).unwrap();
        assert_eq!(ok.point(), "xdp:lo");
        for bad in ["..", "a/b", "a:b", "", "sixteen-bytes-xx", "a b"] {
            assert!(
                matches!(
                    resolve("p", "xdp", "xdp", Some(&req(bad)), &allowed),
                    Err(TargetError::Invalid(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            resolve(
                "p",
                "xdp",
                "xdp",
                Some(&req("nosuchif0")),
                &globs(&["xdp:veth*"])
            ),
            Err(TargetError::NotAllowed { .. })
        ));
    }

    #[test]
    fn tc_directions_cgroups_and_the_rest_of_the_grammar() {
        let all = ["*"];
        let tc = |dir: Option<Direction>| Requested {
            interface: Some("lo".into()),
            direction: dir,
            ..Requested::default()
        };
        let egress = kind("tc", "tc", tc(Some(Direction::Egress)), &all).unwrap();
        assert_eq!(egress.point(), "tc:lo:egress");
        assert_eq!(
            kind("tc", "tc", tc(None), &all).unwrap().point(),
            "tc:lo:ingress"
        );
        // The refusal names the direction asked for.
        let Err(TargetError::NotAllowed { point, .. }) =
            kind("tc", "tc", tc(Some(Direction::Egress)), &["tc:lo:ingress"])
        else {
            panic!()
        };
        assert_eq!(point, "tc:lo:egress");
        // A missing interface inside the policy says so.
        let gone = Requested {
            interface: Some("nosuchif0".into()),
            ..Requested::default()
        };
        assert!(invalid(kind("xdp", "xdp", gone, &all)).contains("no interface `nosuchif0`"));
        // cgroup_skb: an absolute cgroup v2 directory, the direction from the section.
        assert!(
            invalid(kind(
                "cgroup_skb",
                "cgroup_skb/ingress",
                Requested::default(),
                &all
            ))
            .contains("needs `cgroup`")
        );
        let cg = |p: &str| Requested {
            cgroup: Some(p.into()),
            ..Requested::default()
        };
        assert!(
            invalid(kind(
                "cgroup_skb",
                "cgroup_skb/egress",
                cg("relative"),
                &all
            ))
            .contains("absolute path")
        );
        let root = crate::ebpf::host::cgroup2_root()
            .expect("a cgroup v2 hierarchy (cgroup_skb attaches to one)")
            .display()
            .to_string();
        let t = kind("cgroup_skb", "cgroup_skb/egress", cg(&root), &all).unwrap();
        assert_eq!(t.point(), format!("cgroup_skb:{root}"));
        assert!(matches!(
            t,
            Target::CgroupSkb {
                direction: CgroupDirection::Egress,
                ..
            }
        ));
        // A directory that is not a cgroup reads as refused, like a missing one.
        assert!(matches!(
            kind("cgroup_skb", "cgroup_skb/ingress", cg("/tmp"), &all),
            Err(TargetError::NotAllowed { .. })
        ));
        // A tracepoint section without a name, a uprobe without a target.
        assert!(
            invalid(kind(
                "tracepoint",
                "tracepoint/syscalls",
                Requested::default(),
                &all
            ))
            .contains("names no tracepoint")
        );
        assert!(
            invalid(kind("uprobe", "uprobe", Requested::default(), &all))
                .contains("needs `attach: ")
        );
        // uprobe: a NUL in the symbol, a relative path, a bare program name on PATH.
        assert!(invalid(up("/bin/true:ma\0in", &all)).contains("NUL"));
        assert!(invalid(up("./bin/true:main", &all)).contains("relative path"));
        let t = up("true:main", &all).unwrap();
        assert!(t.point().starts_with("uprobe:/") && t.point().ends_with("true:main"));
        assert_eq!(Target::None.point(), "");
    }
}
