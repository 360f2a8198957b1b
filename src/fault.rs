//! Fault injection for the tests that prove failures release what was created: with
//! `EBPF_MCP_FAULTS=point[:panic],...` in the environment, [`hit`] fails (or panics) at the
//! named points. Read once at first use; without the variable every point is a no-op that
//! costs a pointer comparison. Points: `trace.after_attach`, `session.after_attach`,
//! `deploy.after_attach`.

use std::sync::OnceLock;

static FAULTS: OnceLock<Vec<(String, bool)>> = OnceLock::new();

fn faults() -> &'static [(String, bool)] {
    FAULTS.get_or_init(|| {
        std::env::var("EBPF_MCP_FAULTS")
            .map(|v| {
                v.split(',')
                    .filter(|p| !p.trim().is_empty())
                    .map(|p| match p.trim().split_once(':') {
                        Some((name, "panic")) => (name.to_owned(), true),
                        _ => (p.trim().to_owned(), false),
                    })
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// The failure [`hit`] injects.
#[derive(Debug, thiserror::Error)]
#[error("injected fault at {0}")]
pub struct Injected(pub String);

/// `Err` (or a panic) when the environment asks for a fault at `point`.
pub fn hit(point: &str) -> Result<(), Injected> {
    match faults().iter().find(|(name, _)| name == point) {
        None => Ok(()),
        Some((_, true)) => panic!("injected panic at {point}"),
        Some((_, false)) => Err(Injected(point.to_owned())),
    }
}
