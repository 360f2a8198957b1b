//! The deploy flow: validate, resolve targets, check limits, load and attach, register.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::*;
use crate::call::CallContext;
use crate::config::LogLevel;
use crate::deploy::target::{self, Target, TargetError};
use crate::ebpf::{btf, inventory, pins};
use crate::error::{Code, EbpfError};
use crate::resources::Kind;
use crate::security::validate::{self, Policy, Violation};

/// Lines of a verifier log kept in a result (the end, where the reason is).
pub(crate) const VERIFIER_LOG_LINES: usize = 60;

pub(crate) fn verifier_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(VERIFIER_LOG_LINES)..].join("\n")
}

/// What the audit log and a refusal record of each program: the helpers and kernel symbols
/// its code (subprograms and callbacks included) uses.
pub(crate) fn program_summary(programs: &[validate::ProgramFacts]) -> Vec<serde_json::Value> {
    programs
        .iter()
        .map(|p| json!({"name": p.name, "helpers": p.helpers, "symbols": p.symbols}))
        .collect()
}

/// The error for a refused object: the first violation's code, all of them in context.
pub(crate) fn refusal(violations: &[Violation]) -> EbpfError {
    let listed: Vec<String> = violations
        .iter()
        .map(|v| {
            let at = match (&v.program, v.offset) {
                (Some(p), Some(o)) => format!("{p} at instruction {o}: "),
                (Some(p), None) => format!("{p}: "),
                _ => String::new(),
            };
            format!("{} ({at}{})", v.code, v.detail)
        })
        .collect();
    let code = violations
        .first()
        .map_or(Code::ValidationFailed, |v| v.code);
    EbpfError::new(
        code,
        format!(
            "the object was refused before loading: {}",
            listed.join("; ")
        ),
    )
    .with_context("violations", violations)
}

pub(crate) fn deploy(
    env: &Env<'_>,
    p: DeployParams,
    ctx: &CallContext,
) -> Result<DeployOutput, EbpfError> {
    let all = &ctx.config;
    let config = &all.tools.deploy;
    let bytes = object_bytes(all, &p)?;
    // One parse of vmlinux BTF for the validator's link and the loader's.
    let _btf = btf::vmlinux();
    let sha = crate::security::sha256_hex(&bytes);
    let policy = Policy::from_config(all);
    ctx.progress(0.0, Some(3.0), "validating the object");
    let inspection = validate::inspect(&bytes, &policy);
    // Which programs, and where they attach (part of validation: attach points are policy).
    let selected: Vec<&validate::ProgramFacts> = match &p.programs {
        None => inspection.programs.iter().collect(),
        Some(names) => {
            if let Some(bad) = names
                .iter()
                .find(|n| !inspection.programs.iter().any(|f| &f.name == *n))
                && inspection.violations.is_empty()
            {
                let have: Vec<&str> = inspection
                    .programs
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect();
                return Err(invalid(format!(
                    "the object has no program `{bad}`; it has: {}",
                    have.join(", ")
                )));
            }
            inspection
                .programs
                .iter()
                .filter(|f| names.contains(&f.name))
                .collect()
        }
    };
    let specs: HashMap<&str, &AttachSpec> = p
        .attach
        .iter()
        .flatten()
        .map(|s| (s.program.as_str(), s))
        .collect();
    if let Some(orphan) = specs
        .keys()
        .find(|k| !inspection.programs.iter().any(|f| f.name == **k))
        && inspection.violations.is_empty()
    {
        return Err(invalid(format!(
            "`attach` names `{orphan}`, which is not a program of the object"
        )));
    }
    let mut violations = inspection.violations.clone();
    let mut targets: Vec<(String, Target)> = Vec::new();
    for f in &selected {
        let target = if p.verify_only {
            Target::None
        } else {
            let asked = specs.get(f.name.as_str()).map(|s| s.requested());
            match target::resolve(
                &f.name,
                &f.kind,
                &f.section,
                asked.as_ref(),
                &policy.allowed_attach_points,
            ) {
                Ok(t) => t,
                Err(TargetError::NotAllowed { point, .. }) => {
                    violations.push(validate::attach_refusal(&f.name, &point, &policy));
                    Target::None
                }
                // A type that is refused anyway says so through its violation.
                Err(_)
                    if violations
                        .iter()
                        .any(|v| v.program.as_deref() == Some(&f.name)) =>
                {
                    Target::None
                }
                Err(TargetError::Invalid(why)) => return Err(invalid(why)),
            }
        };
        targets.push((f.name.clone(), target));
    }
    if !violations.is_empty() {
        return Err(
            refusal(&violations).with_context("programs", program_summary(&inspection.programs))
        );
    }
    // Limits: this object on top of what is already deployed, globally and for this owner.
    let est_memory: u64 = inspection.maps.iter().map(|m| m.bytes).sum();
    if !p.verify_only {
        check_limits(
            all,
            env.deployments,
            &ctx.owner,
            selected.len(),
            inspection.maps.len(),
            est_memory,
        )?;
    }
    let ttl = ttl(config, p.ttl_seconds)?;
    let n = env.deployments.next.fetch_add(1, Ordering::Relaxed) + 1;
    let id = format!("dep-{n}-{:08x}", crate::resources::id_suffix());
    let base = env.pins_base;
    let pin_dir = pins::deployment_dir(base, &id);
    let pinning = p.pin && !p.verify_only;
    if pinning {
        pins::create(base, &pin_dir)
            .map_err(|e| EbpfError::new(Code::FilesystemNotMounted, e.to_string()))?;
    }
    ctx.progress(1.0, Some(3.0), "loading through the kernel verifier");
    let loaded = load(
        &inspection,
        &selected,
        &targets,
        &pin_dir,
        pinning,
        p.verify_only,
    );
    let (ebpf, mut output) = match loaded {
        Ok(x) => x,
        Err(e) => {
            if pinning {
                let _ = pins::remove(&pin_dir);
            }
            return Err(e);
        }
    };
    output.object_sha256 = sha;
    output.object_bytes = bytes.len();
    if p.verify_only {
        drop(ebpf);
        return Ok(output);
    }
    ctx.progress(2.0, Some(3.0), "attached");
    let created_at = SystemTime::now();
    let expires_at = crate::time::add(created_at, ttl);
    output.deployment_id = Some(id.clone());
    output.expires_at = Some(crate::time::rfc3339_seconds(expires_at));
    let memory = output.maps.iter().map(|m| m.bytes).sum::<u64>();
    let deployment = Arc::new(Deployment {
        id: id.clone(),
        owner: ctx.owner.clone(),
        created_at,
        expires_at,
        output: output.clone(),
        memory,
        pin_dir: pinning.then_some(pin_dir),
        ebpf: Mutex::new(Some(ebpf)),
        tracked: AtomicU64::new(0),
        cpu: Mutex::default(),
    });
    let tracked = env.tracker.track(
        Kind::Deployment,
        &ctx.owner,
        &format!("deployment {id} ({} programs)", output.programs.len()),
        Some(expires_at),
        Box::new(DeploymentHandle(Arc::clone(&deployment))),
    );
    deployment.tracked.store(tracked, Ordering::Relaxed);
    env.deployments
        .lock()
        .insert(id.clone(), Arc::clone(&deployment));
    ctx.log(
        LogLevel::Info,
        format!(
            "deployed {id}: {} (expires {})",
            output
                .programs
                .iter()
                .map(|p| format!(
                    "{} on {}",
                    p.name,
                    p.attached_to.as_deref().unwrap_or("nothing")
                ))
                .collect::<Vec<_>>()
                .join(", "),
            output.expires_at.as_deref().unwrap_or("")
        ),
    );
    Ok(output)
}

pub(crate) fn ttl(
    config: &crate::config::DeployConfig,
    asked: Option<u64>,
) -> Result<Duration, EbpfError> {
    let max = config.max_ttl.0;
    match asked {
        None => Ok(config.default_ttl.0.min(max)),
        Some(0) => Err(invalid("`ttl_seconds` must be at least 1")),
        Some(s) if Duration::from_secs(s) > max => Err(invalid(format!(
            "`ttl_seconds` is at most {} (tools.deploy.max_ttl)",
            max.as_secs()
        ))),
        Some(s) => Ok(Duration::from_secs(s)),
    }
}

pub(crate) fn describe(
    facts: &validate::ProgramFacts,
    record: Option<inventory::Program>,
    attached_to: Option<String>,
) -> DeployedProgram {
    DeployedProgram {
        name: facts.name.clone(),
        kind: facts.kind.clone(),
        section: facts.section.clone(),
        id: record.as_ref().map(|r| r.id),
        tag: record.as_ref().map(|r| r.tag.clone()),
        attached_to,
        instructions: facts.instructions,
        verified_insns: record.as_ref().map(|r| r.verified_insns),
        helpers: facts.helpers.clone(),
        detached: None,
    }
}
