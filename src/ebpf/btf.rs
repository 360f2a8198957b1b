//! The kernel's vmlinux BTF, parsed once per process and shared: parsing it costs ~50 ms and
//! tens of MB, so every loader that needs it borrows this copy.

use std::sync::{Arc, OnceLock};

use aya::Btf;

static VMLINUX: OnceLock<Result<Arc<Btf>, String>> = OnceLock::new();

/// The parsed /sys/kernel/btf/vmlinux, or why it could not be parsed (the error is cached
/// too: the file does not appear at run time).
pub fn vmlinux() -> Result<Arc<Btf>, String> {
    VMLINUX
        .get_or_init(|| {
            let started = std::time::Instant::now();
            let btf = Btf::from_sys_fs().map_err(|e| format!("reading vmlinux BTF: {e}"))?;
            tracing::debug!(
                elapsed_ms = started.elapsed().as_millis(),
                "parsed vmlinux BTF"
            );
            Ok(Arc::new(btf))
        })
        .clone()
}
