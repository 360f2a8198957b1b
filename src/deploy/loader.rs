//! Loading an object and attaching its programs.

use std::path::Path;

use aya::Ebpf;
use aya::programs::{CgroupAttachMode, CgroupSkbAttachType, Program, TcAttachType, XdpMode};

use super::*;
use crate::deploy::target::{self, Target};
use crate::ebpf::{btf, inventory};
use crate::error::EbpfError;
use crate::security::validate::{self, Inspection};

/// Why a program did not load: the kernel's answer, or a type this server cannot load.
pub(crate) enum LoadFailure {
    Kernel(aya::programs::ProgramError),
    Unsupported(String),
}

pub(crate) fn load_program(
    program: &mut Program,
    kind: &str,
    section: &str,
) -> Result<(), LoadFailure> {
    let r = match program {
        Program::TracePoint(p) => p.load(),
        Program::RawTracePoint(p) => p.load(),
        Program::BtfTracePoint(p) => {
            let tp = section.split_once('/').map_or("", |(_, r)| r);
            let btf = btf::vmlinux().map_err(|e| {
                LoadFailure::Unsupported(format!("tp_btf programs need vmlinux BTF: {e}"))
            })?;
            p.load(tp, &btf)
        }
        Program::UProbe(p) => p.load(),
        Program::Xdp(p) => p.load(),
        Program::SchedClassifier(p) => p.load(),
        Program::CgroupSkb(p) => p.load(),
        Program::PerfEvent(p) => p.load(),
        Program::SocketFilter(p) => p.load(),
        Program::KProbe(p) => p.load(),
        _ => {
            return Err(LoadFailure::Unsupported(format!(
                "this server cannot load {kind} programs (section {section})"
            )));
        }
    };
    r.map_err(LoadFailure::Kernel)
}

pub(crate) fn attach_program(program: &mut Program, target: &Target) -> Result<(), String> {
    let e = |err: aya::programs::ProgramError| err.to_string();
    match (program, target) {
        (Program::TracePoint(p), Target::Tracepoint { category, name }) => {
            p.attach(category, name).map(drop).map_err(e)
        }
        (Program::RawTracePoint(p), Target::RawTp(n)) => p.attach(n).map(drop).map_err(e),
        (Program::BtfTracePoint(p), Target::TpBtf(_)) => p.attach().map(drop).map_err(e),
        (
            Program::UProbe(p),
            Target::Uprobe {
                file, symbol, pid, ..
            },
        ) => {
            let scope = match pid.and_then(std::num::NonZeroU32::new) {
                Some(pid) => aya::programs::uprobe::UProbeScope::OneProcess(pid),
                None => aya::programs::uprobe::UProbeScope::AllProcesses,
            };
            // The file that was checked, by its descriptor: not whatever the path names now.
            p.attach(symbol.as_str(), Target::uprobe_path(file), scope)
                .map(drop)
                .map_err(e)
        }
        (Program::Xdp(p), Target::Xdp { index, .. }) => p
            .attach_to_if_index(*index, XdpMode::Default)
            .map(drop)
            .map_err(e),
        (
            Program::SchedClassifier(p),
            Target::Tc {
                name,
                index,
                direction,
            },
        ) => {
            let t = match direction {
                target::Direction::Egress => TcAttachType::Egress,
                target::Direction::Ingress => TcAttachType::Ingress,
            };
            p.attach(name, t).map(drop).map_err(e)?;
            // TC attaches by name: the name must still be the device that was checked.
            match crate::ebpf::sys::interface(name) {
                Ok((_, now)) if now == *index => Ok(()),
                _ => Err(format!("interface `{name}` changed while attaching")),
            }
        }
        (Program::CgroupSkb(p), Target::CgroupSkb { dir, direction, .. }) => {
            let t = match direction {
                target::CgroupDirection::Egress => CgroupSkbAttachType::Egress,
                target::CgroupDirection::Ingress => CgroupSkbAttachType::Ingress,
            };
            let dir = dir
                .reopen()
                .map_err(|err| format!("opening the cgroup's directory: {err}"))?;
            p.attach(dir, t, CgroupAttachMode::Single)
                .map(drop)
                .map_err(e)
        }
        (Program::PerfEvent(p), Target::PerfEvent(hz)) => {
            crate::ebpf::gadget::attach_cpu_clock(p, *hz).map_err(|err| err.to_string())
        }
        (_, Target::None) => Ok(()),
        _ => Err("the program's type does not match its attach target".into()),
    }
}

pub(crate) fn program_error(name: &str, err: &LoadFailure) -> (String, Option<String>) {
    match err {
        LoadFailure::Kernel(aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        }) => (
            format!("the kernel verifier rejected `{name}` ({io_error})"),
            Some(verifier_tail(&verifier_log.to_string())),
        ),
        LoadFailure::Kernel(other) => (format!("loading `{name}`: {other}"), None),
        LoadFailure::Unsupported(why) => (format!("`{name}`: {why}"), None),
    }
}

/// Loads (and unless verify_only attaches) the selected programs. Returns the object and
/// the result to report; everything is released if anything fails.
pub(crate) fn load(
    inspection: &Inspection,
    selected: &[&validate::ProgramFacts],
    targets: &[(String, Target)],
    pin_dir: &Path,
    pinning: bool,
    verify_only: bool,
) -> Result<(Ebpf, DeployOutput), EbpfError> {
    let mut ebpf = btf::load_deploy_object(&inspection.normalized, pin_dir).map_err(|e| {
        EbpfError::kernel(
            "LOAD_FAILED",
            format!("creating the object's maps failed: {e}"),
        )
    })?;
    let mut out = DeployOutput {
        verdict: if verify_only { "accepted" } else { "deployed" }.into(),
        deployment_id: None,
        programs: Vec::new(),
        maps: Vec::new(),
        expires_at: None,
        object_sha256: String::new(),
        object_bytes: 0,
        verifier_log: None,
        hint: None,
    };
    for (facts, (_, target)) in selected.iter().zip(targets) {
        let program = ebpf.program_mut(&facts.name).ok_or_else(|| {
            EbpfError::internal(format!("program `{}` vanished after loading", facts.name))
        })?;
        if let Err(err) = load_program(program, &facts.kind, &facts.section) {
            let (message, log) = program_error(&facts.name, &err);
            if verify_only && log.is_some() {
                out.verdict = "rejected".into();
                out.verifier_log = log;
                out.hint = Some(format!("{message}; the log's last lines say why"));
                out.programs.push(describe(facts, None, None));
                continue;
            }
            let mut e = EbpfError::kernel(
                if log.is_some() {
                    "VERIFIER_REJECTED"
                } else {
                    "LOAD_FAILED"
                },
                format!("{message}; deploy with `verify_only: true` to see the whole verdict"),
            )
            .with_context("program", &facts.name);
            if let Some(log) = log {
                e = e.with_context("verifier_log", log);
            }
            return Err(e);
        }
        let info = program.info().ok();
        if !verify_only {
            attach_program(program, target)
                .and_then(|()| crate::fault::hit("deploy.after_attach"))
                .map_err(|why| {
                    EbpfError::kernel(
                        "ATTACH_FAILED",
                        format!(
                            "attaching `{}` to {} failed: {why}",
                            facts.name,
                            target.point()
                        ),
                    )
                    .with_context("program", &facts.name)
                })?;
        }
        let record = info.and_then(|i| inventory::read_program(i.id()).ok().map(|(p, _)| p));
        let attached = (!verify_only).then(|| target.point());
        out.programs.push(describe(facts, record, attached));
    }
    for m in &inspection.maps {
        let kernel = ebpf.map(&m.name).and_then(map_record);
        let pinned_at = if pinning {
            let path = pin_dir.join(&m.name);
            if let Some(map) = ebpf.map(&m.name)
                && !path.exists()
            {
                map.pin(&path).map_err(|e| {
                    EbpfError::kernel(
                        "PIN_FAILED",
                        format!("pinning map `{}` at {}: {e}", m.name, path.display()),
                    )
                })?;
            }
            Some(path.display().to_string())
        } else {
            None
        };
        out.maps.push(DeployedMap {
            name: m.name.clone(),
            id: kernel.as_ref().map(|r| r.id),
            map_type: m.map_type.clone(),
            max_entries: m.max_entries,
            bytes: kernel.as_ref().map_or(m.bytes, |r| r.memlock.max(1)),
            pinned_at,
        });
    }
    Ok((ebpf, out))
}

pub(crate) fn map_record(map: &aya::maps::Map) -> Option<inventory::MapRecord> {
    use aya::maps::Map;
    let data = match map {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::RingBuf(d)
        | Map::PerfEventArray(d)
        | Map::LpmTrie(d)
        | Map::Queue(d)
        | Map::Stack(d)
        | Map::StackTraceMap(d)
        | Map::ProgramArray(d)
        | Map::BloomFilter(d) => d,
        _ => return None,
    };
    let id = data.info().ok()?.id();
    inventory::read_map(id).ok().map(|(r, _)| r)
}
