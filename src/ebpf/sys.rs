//! Raw system calls the rest of the crate needs and neither std, nix nor aya offers in the
//! form needed: mount, memlock limits, uname, a private network namespace, malloc tuning.
//! With bpf.rs (raw bpf(2)) and two spots where aya's types force it (btf.rs, names.rs),
//! this is where the kernel layer's `unsafe` is; outside ebpf/ only the sandbox has any
//! (tests/layers.rs checks both).

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
pub fn interface(name: &str) -> Result<(String, u32), nix::Error> {
    let index = nix::net::if_::if_nametoindex(name)?;
    // nix reports a failed lookup as an empty name, not an error: the device went away.
    let primary = nix::net::if_::if_indextoname(index)?
        .to_string_lossy()
        .into_owned();
    if primary.is_empty() {
        return Err(nix::Error::ENODEV);
    }
    Ok((primary, index))
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

/// A file opened only to name it (O_PATH): opening never blocks (a FIFO) and never acts (a
/// device), and whatever the path names later, this is the inode that was checked. Reads
/// and attaches go through [`PinnedFile::proc_path`], the descriptor's own path.
#[derive(Debug, Clone)]
pub struct PinnedFile {
    fd: std::sync::Arc<std::os::fd::OwnedFd>,
    /// Its path with every link and `..` resolved, as the kernel names the descriptor.
    pub real: std::path::PathBuf,
    mode: u32,
}

impl PartialEq for PinnedFile {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.fd, &other.fd)
    }
}

impl Eq for PinnedFile {}

impl PinnedFile {
    /// Opens `path` (following links) without reading it.
    pub fn open(path: &Path) -> io::Result<Self> {
        use nix::fcntl::{OFlag, open};
        use std::os::fd::AsRawFd;
        let fd = open(
            path,
            OFlag::O_PATH | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        let stat = nix::sys::stat::fstat(&fd)?;
        let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        Ok(Self {
            fd: std::sync::Arc::new(fd),
            real,
            mode: stat.st_mode,
        })
    }

    pub fn is_regular(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }

    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    /// `/proc/self/fd/N`: opening it opens this very file.
    pub fn proc_path(&self) -> std::path::PathBuf {
        use std::os::fd::AsRawFd;
        std::path::PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// This file opened for reading (regular files and directories only, so the open can
    /// neither block nor act).
    pub fn reopen(&self) -> io::Result<std::fs::File> {
        if !self.is_regular() && !self.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file or directory",
            ));
        }
        std::fs::File::open(self.proc_path())
    }

    /// Whether it is a directory of a cgroup v2 hierarchy.
    pub fn is_cgroup2_dir(&self) -> bool {
        const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
        self.is_dir()
            && nix::sys::statfs::fstatfs(&*self.fd)
                .is_ok_and(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
    }

    /// Whether it lives on a bpffs (where pinned programs, maps and links are).
    pub fn is_on_bpffs(&self) -> bool {
        const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
        nix::sys::statfs::fstatfs(&*self.fd).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
    }

    /// Its inode number (a cgroup directory's is the cgroup's id).
    pub fn inode(&self) -> io::Result<u64> {
        Ok(nix::sys::stat::fstat(&*self.fd)?.st_ino)
    }
}

/// Gives the heap's free memory back to the kernel (glibc keeps freed small blocks for
/// reuse): called after a large transient structure, such as a vmlinux BTF parse, is gone.
pub fn trim_heap() {
    // SAFETY: malloc_trim has no preconditions; it only releases free pages of the heap.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Tunes glibc's allocator so that transient peaks (a BTF parse, a storm of events) are
/// given back once over: at most two arenas (by default every thread that allocates gets
/// one, up to 8 per core, and memory freed in one stays with it), and fixed mmap and trim
/// thresholds (by default freeing one large block raises both, up to 32 MiB, after which
/// the freed tops of the arenas are kept). Call before any thread is started.
pub fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; called before other threads exist,
    // so no allocation races with it.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 * 1024);
    }
}
