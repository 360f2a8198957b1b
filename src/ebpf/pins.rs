//! The server's own directory on bpffs (`ebpf.bpffs_dir`): the only place it pins anything,
//! one subdirectory per deployment. What a crashed server left there is removed at the next
//! start; nothing outside it is ever touched.

use std::path::{Path, PathBuf};

/// statfs(2) magic number of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Whether `path` is on a bpffs mount.
pub fn on_bpffs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data; statfs(2) only writes it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a valid, writable statfs.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type == BPF_FS_MAGIC
}

/// The directory of one deployment's pins (created on demand, under `base` only).
pub fn deployment_dir(base: &Path, id: &str) -> PathBuf {
    base.join(id)
}

/// Creates `dir` (and `base`) on bpffs; refuses a `base` that is not on bpffs.
pub fn create(base: &Path, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    if !on_bpffs(base) {
        let _ = std::fs::remove_dir(dir);
        return Err(format!(
            "{} is not on a bpffs mount (ebpf.bpffs_dir must be under one, e.g. /sys/fs/bpf)",
            base.display()
        ));
    }
    Ok(())
}

/// Removes a deployment's pins and its directory.
pub fn remove(dir: &Path) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    if !on_bpffs(dir) {
        return Err(format!("{} is not on bpffs; left alone", dir.display()));
    }
    std::fs::remove_dir_all(dir).map_err(|e| format!("removing {}: {e}", dir.display()))
}

/// Removes everything under `base` that an earlier server left (each entry is one
/// deployment's directory). Returns what was removed.
pub fn clean_stale(base: &Path) -> Result<Vec<PathBuf>, String> {
    if !base.exists() {
        return Ok(Vec::new());
    }
    if !on_bpffs(base) {
        return Err(format!(
            "{} is not on bpffs; not cleaning it (check ebpf.bpffs_dir)",
            base.display()
        ));
    }
    let entries =
        std::fs::read_dir(base).map_err(|e| format!("reading {}: {e}", base.display()))?;
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let result = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match result {
            Ok(()) => removed.push(path),
            Err(e) => return Err(format!("removing {}: {e}", path.display())),
        }
    }
    Ok(removed)
}
