//! The server's own directory on bpffs (`ebpf.bpffs_dir`): the only place it pins anything,
//! `server-<pid>/<deployment_id>/`. What a server that died left there is removed when the
//! next one starts; nothing outside it is ever touched.

use std::path::{Path, PathBuf};

/// Whether `path` is on a bpffs mount.
pub fn on_bpffs(path: &Path) -> bool {
    use nix::sys::statfs::{BPF_FS_MAGIC, statfs};
    statfs(path).is_ok_and(|st| st.filesystem_type() == BPF_FS_MAGIC)
}

/// This server's directory under `base`: several servers may run at once (a desktop client
/// starts one per session), so each pins under its own `server-<pid>`.
pub fn server_dir(base: &Path) -> PathBuf {
    base.join(format!("server-{}", std::process::id()))
}

/// The directory of one deployment's pins (created on demand).
pub fn deployment_dir(base: &Path, id: &str) -> PathBuf {
    server_dir(base).join(id)
}

/// Whether the server that made `server-<pid>` is still running.
fn server_alive(name: &str) -> bool {
    let Some(pid) = name
        .strip_prefix("server-")
        .and_then(|p| p.parse::<u32>().ok())
    else {
        return false;
    };
    if pid == std::process::id() {
        return true;
    }
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "ebpf-mcp")
}

/// Why a pin directory was not made, removed or cleaned.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{} is not on a bpffs mount ({why})", path.display())]
    NotBpffs { path: PathBuf, why: &'static str },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PinError {
    let path = path.to_path_buf();
    move |source| PinError::Io { op, path, source }
}

/// Creates `dir` under `base`, refusing unless `base` is on bpffs (checked on the nearest
/// existing ancestor, before anything is created).
pub fn create(base: &Path, dir: &Path) -> Result<(), PinError> {
    let existing = base.ancestors().find(|p| p.exists()).unwrap_or(base);
    if !on_bpffs(existing) {
        return Err(PinError::NotBpffs {
            path: base.to_path_buf(),
            why: "ebpf.bpffs_dir must be under one, e.g. /sys/fs/bpf",
        });
    }
    std::fs::create_dir_all(dir).map_err(io("creating", dir))
}

/// Removes a deployment's pins and its directory.
pub fn remove(dir: &Path) -> Result<(), PinError> {
    if !dir.exists() {
        return Ok(());
    }
    if !on_bpffs(dir) {
        return Err(PinError::NotBpffs {
            path: dir.to_path_buf(),
            why: "left alone",
        });
    }
    std::fs::remove_dir_all(dir).map_err(io("removing", dir))
}

/// Removes what servers that are no longer running left under `base` (their `server-<pid>`
/// directories). Returns what was removed.
pub fn clean_stale(base: &Path) -> Result<Vec<PathBuf>, PinError> {
    if !base.exists() {
        return Ok(Vec::new());
    }
    if !on_bpffs(base) {
        return Err(PinError::NotBpffs {
            path: base.to_path_buf(),
            why: "not cleaning it; check ebpf.bpffs_dir",
        });
    }
    let entries = std::fs::read_dir(base).map_err(io("reading", base))?;
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("server-") || server_alive(&name) {
            continue;
        }
        let path = entry.path();
        std::fs::remove_dir_all(&path).map_err(io("removing", &path))?;
        removed.push(path);
    }
    Ok(removed)
}
