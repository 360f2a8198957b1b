//! Loading an object and attaching its programs: the deploy engine's side (what to load,
//! where, what to report); the kernel side is `ebpf::object`.

use std::path::Path;

use super::*;
use crate::deploy::target::{self, Target};
use crate::ebpf::inventory;
use crate::ebpf::object::{AgentObject, Attach, LoadFailure};
use crate::error::{Code, EbpfError};
use crate::security::validate::{self, Inspection};

/// Where the kernel attaches a program resolved to `target`; `None`: nowhere (verify_only).
fn attach_of(target: &Target) -> Option<Attach<'_>> {
    Some(match target {
        Target::Tracepoint { category, name } => Attach::Tracepoint { category, name },
        Target::RawTp(n) => Attach::RawTracepoint(n),
        Target::TpBtf(_) => Attach::BtfTracepoint,
        Target::Uprobe {
            file, symbol, pid, ..
        } => Attach::Uprobe {
            file,
            symbol,
            pid: *pid,
        },
        Target::Xdp { index, .. } => Attach::Xdp { ifindex: *index },
        Target::Tc {
            name,
            index,
            direction,
        } => Attach::Tc {
            name,
            ifindex: *index,
            egress: matches!(direction, target::Direction::Egress),
        },
        Target::CgroupSkb { dir, direction, .. } => Attach::CgroupSkb {
            dir,
            egress: matches!(direction, target::CgroupDirection::Egress),
        },
        Target::PerfEvent(hz) => Attach::CpuClock { hz: *hz },
        Target::None => return None,
    })
}

pub(crate) fn program_error(name: &str, err: &LoadFailure) -> (String, Option<String>) {
    match err {
        LoadFailure::Verifier { error, log } => (
            format!("the kernel verifier rejected `{name}` ({error})"),
            Some(verifier_tail(log)),
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
) -> Result<(AgentObject, DeployOutput), EbpfError> {
    let mut object = AgentObject::create(&inspection.normalized, pin_dir).map_err(|e| {
        EbpfError::new(
            Code::LoadFailed,
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
        let loaded = object.load_program(&facts.name, &facts.kind, &facts.section);
        let id = match loaded {
            Ok(id) => id,
            Err(err) => {
                let (message, log) = program_error(&facts.name, &err);
                if verify_only && log.is_some() {
                    out.verdict = "rejected".into();
                    out.verifier_log = log;
                    out.hint = Some(format!("{message}; the log's last lines say why"));
                    out.programs.push(describe(facts, None, None));
                    continue;
                }
                let mut e = EbpfError::new(
                    if log.is_some() {
                        Code::VerifierRejected
                    } else {
                        Code::LoadFailed
                    },
                    format!("{message}; deploy with `verify_only: true` to see the whole verdict"),
                )
                .with_context("program", &facts.name);
                if let Some(log) = log {
                    e = e.with_context("verifier_log", log);
                }
                return Err(e);
            }
        };
        if !verify_only && let Some(to) = attach_of(target) {
            object
                .attach(&facts.name, to)
                .and_then(|()| Ok(crate::fault::hit("deploy.after_attach")?))
                .map_err(|why| {
                    EbpfError::new(
                        Code::AttachFailed,
                        format!(
                            "attaching `{}` to {} failed: {why}",
                            facts.name,
                            target.point()
                        ),
                    )
                    .with_context("program", &facts.name)
                })?;
        }
        let record = id.and_then(|id| inventory::read_program(id).ok().map(|(p, _)| p));
        let attached = (!verify_only).then(|| target.point());
        out.programs.push(describe(facts, record, attached));
    }
    for m in &inspection.maps {
        let kernel = object.map_record(&m.name);
        let pinned_at = if pinning {
            let path = pin_dir.join(&m.name);
            object.pin_map(&m.name, &path).map_err(|e| {
                EbpfError::new(
                    Code::PinFailed,
                    format!("pinning map `{}` at {}: {e}", m.name, path.display()),
                )
            })?;
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
    Ok((object, out))
}
