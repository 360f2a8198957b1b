//! Raw system calls the rest of the crate needs and neither std nor aya offers: mount,
//! memlock limits, uname and a private network namespace. Every `unsafe` block lives here.

use std::ffi::{CStr, CString};
use std::io;
use std::path::Path;

/// A syscall that failed, with the call's name and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("{call} failed: {source}")]
pub struct SyscallError {
    pub call: &'static str,
    #[source]
    pub source: io::Error,
}

impl SyscallError {
    fn last(call: &'static str) -> Self {
        Self {
            call,
            source: io::Error::last_os_error(),
        }
    }

    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

fn cstring(path: &Path) -> Result<CString, SyscallError> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| SyscallError {
        call: "mount",
        source: io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
    })
}

/// mount(2) of a pseudo filesystem (`fstype` with source "none") at `target`.
pub fn mount_pseudo(fstype: &str, target: &Path, read_only: bool) -> Result<(), SyscallError> {
    let target = cstring(target)?;
    let fstype = CString::new(fstype).expect("filesystem type names have no NUL");
    let source = c"none";
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    if read_only {
        flags |= libc::MS_RDONLY;
    }
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call; `data`
    // may be NULL for these filesystems.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(SyscallError::last("mount"))
    }
}

/// The current RLIMIT_MEMLOCK soft limit in bytes; `None` means unlimited.
pub fn memlock_limit() -> Result<Option<u64>, SyscallError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    if rc != 0 {
        return Err(SyscallError::last("getrlimit(RLIMIT_MEMLOCK)"));
    }
    Ok((lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur))
}

/// Raises RLIMIT_MEMLOCK to unlimited. Kernels since 5.11 charge BPF memory to the memory
/// cgroup instead, so callers treat a refusal as harmless.
pub fn raise_memlock_limit() -> Result<(), SyscallError> {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: `lim` is a valid rlimit that the call only reads.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
    if rc == 0 {
        Ok(())
    } else {
        Err(SyscallError::last("setrlimit(RLIMIT_MEMLOCK)"))
    }
}

/// uname(2): (release, version, machine).
pub fn uname() -> Result<(String, String, String), SyscallError> {
    // SAFETY: utsname is plain old data; all-zero is a valid value.
    let mut buf: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `buf` is a valid, writable utsname.
    let rc = unsafe { libc::uname(&mut buf) };
    if rc != 0 {
        return Err(SyscallError::last("uname"));
    }
    let field = |f: &[libc::c_char]| {
        // SAFETY: the kernel NUL-terminates each utsname field within its array.
        unsafe { CStr::from_ptr(f.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    Ok((
        field(&buf.release),
        field(&buf.version),
        field(&buf.machine),
    ))
}

/// Moves the calling thread (only) into a new, empty network namespace, so that probes can
/// attach to its loopback device without touching the host's interfaces. The namespace
/// disappears when the thread and every socket or link in it are gone.
pub fn unshare_network_namespace() -> Result<(), SyscallError> {
    // SAFETY: unshare with CLONE_NEWNET affects only the calling thread's namespace set.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(SyscallError::last("unshare(CLONE_NEWNET)"))
    }
}

/// Hands freed heap memory back to the kernel. Probing allocates briefly on many threads
/// (one glibc arena each); without this the server would keep that peak as resident memory.
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; no pointers are passed.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Waits until `fd` is readable or `timeout` passes. EINTR counts as a timeout.
pub fn poll_readable(
    fd: std::os::fd::RawFd,
    timeout: std::time::Duration,
) -> Result<bool, SyscallError> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `pfd` is one valid pollfd for the duration of the call.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(SyscallError {
            call: "poll",
            source: e,
        });
    }
    Ok(rc > 0)
}

/// The device an interface name (or one of its alternative names) stands for: its primary
/// name and index.
pub fn interface(name: &str) -> Result<(String, u32), String> {
    let index = nix::net::if_::if_nametoindex(name).map_err(|e| e.to_string())?;
    let primary = nix::net::if_::if_indextoname(index).map_err(|e| e.to_string())?;
    Ok((primary.to_string_lossy().into_owned(), index))
}

/// Whether `dir` is a directory on a cgroup v2 file system.
pub fn is_cgroup2_dir(dir: &std::fs::File) -> bool {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    dir.metadata().is_ok_and(|m| m.is_dir())
        && nix::sys::statfs::fstatfs(dir)
            .is_ok_and(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
}

/// RLIMIT_NOFILE: (soft, hard).
pub fn nofile_limit() -> Result<(u64, u64), SyscallError> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_err(|e| {
        SyscallError {
            call: "getrlimit(RLIMIT_NOFILE)",
            source: e.into(),
        }
    })
}

/// Sets RLIMIT_NOFILE (a soft limit up to the hard one needs no privilege).
pub fn set_nofile_limit(soft: u64, hard: u64) -> Result<(), SyscallError> {
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard).map_err(
        |e| SyscallError {
            call: "setrlimit(RLIMIT_NOFILE)",
            source: e.into(),
        },
    )
}
