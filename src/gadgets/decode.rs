//! Reading the fixed-layout records the gadgets send: the common header and the helpers
//! each gadget's decoder uses (little-endian integers, NUL-terminated strings, names for
//! signal numbers, errnos, open flags and syscalls).

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

/// Size of `struct event_header`.
pub const HEADER: usize = 48;

/// Where a decoder reads one field: its byte offset in the bytes the decoder is given, and
/// its size. Decoders read only through these, and each gadget lists them in its
/// [`Layout`], which a test checks against the struct in the gadget object's BTF: a C change
/// that moves a field fails the build instead of decoding garbage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub offset: usize,
    pub size: usize,
}

impl At {
    pub const fn new(offset: usize, size: usize) -> Self {
        Self { offset, size }
    }

    pub fn u16(self, b: &[u8]) -> u16 {
        debug_assert_eq!(self.size, 2, "{self:?} read as u16");
        u16_at(b, self.offset)
    }

    pub fn u32(self, b: &[u8]) -> u32 {
        debug_assert_eq!(self.size, 4, "{self:?} read as u32");
        u32_at(b, self.offset)
    }

    pub fn i32(self, b: &[u8]) -> i32 {
        debug_assert_eq!(self.size, 4, "{self:?} read as i32");
        i32_at(b, self.offset)
    }

    pub fn u64(self, b: &[u8]) -> u64 {
        debug_assert_eq!(self.size, 8, "{self:?} read as u64");
        u64_at(b, self.offset)
    }

    /// A NUL-terminated string filling the field.
    pub fn str(self, b: &[u8]) -> String {
        str_at(b, self.offset, self.size)
    }

    /// The field's bytes (empty when `b` is too short).
    pub fn bytes(self, b: &[u8]) -> &[u8] {
        b.get(self.offset..self.offset + self.size).unwrap_or(&[])
    }

    /// Element `i` of an array field whose elements are `each` bytes.
    pub const fn index(self, i: usize, each: usize) -> At {
        At::new(self.offset + i * each, each)
    }
}

/// The struct a gadget's decoder reads, as its object's BTF names it, and every field the
/// decoder reads from it. `skip`: bytes of the struct before what the decoder is given (the
/// common header, for events).
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub btf_struct: &'static str,
    pub skip: usize,
    /// BTF member path (dotted: `h.comm`) and where the decoder reads it.
    pub fields: &'static [(&'static str, At)],
}

/// `struct event_header`, which starts every event.
pub mod hdr {
    use super::At;
    pub const TS_NS: At = At::new(0, 8);
    pub const PID: At = At::new(8, 4);
    pub const TID: At = At::new(12, 4);
    pub const PPID: At = At::new(16, 4);
    pub const UID: At = At::new(20, 4);
    pub const CGROUP_ID: At = At::new(24, 8);
    pub const COMM: At = At::new(32, 16);
}

#[cfg(test)]
pub const HEADER_LAYOUT: Layout = Layout {
    btf_struct: "event_header",
    skip: 0,
    fields: &[
        ("ts_ns", hdr::TS_NS),
        ("pid", hdr::PID),
        ("tid", hdr::TID),
        ("ppid", hdr::PPID),
        ("uid", hdr::UID),
        ("cgroup_id", hdr::CGROUP_ID),
        ("comm", hdr::COMM),
    ],
};

/// Converts the kernel's boot-time nanoseconds into wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    boot: SystemTime,
}

impl Clock {
    pub fn now() -> Self {
        Self {
            boot: crate::ebpf::host::boot_time(),
        }
    }

    pub fn wall(&self, boot_ns: u64) -> String {
        crate::time::rfc3339_nanos(crate::time::add(self.boot, Duration::from_nanos(boot_ns)))
    }
}

pub fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

pub fn u16_at(b: &[u8], off: usize) -> u16 {
    b.get(off..off + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

pub fn i32_at(b: &[u8], off: usize) -> i32 {
    u32_at(b, off) as i32
}

pub fn u64_at(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8).map_or(0, |s| {
        u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]])
    })
}

/// A NUL-terminated string in `len` bytes at `off` (lossy UTF-8).
pub fn str_at(b: &[u8], off: usize, len: usize) -> String {
    let s = b.get(off..(off + len).min(b.len())).unwrap_or(&[]);
    let end = s.iter().position(|c| *c == 0).unwrap_or(s.len());
    String::from_utf8_lossy(&s[..end]).into_owned()
}

/// Decodes the common header into `out`; returns the bytes after it.
pub fn header<'a>(b: &'a [u8], clock: &Clock, out: &mut Map<String, Value>) -> Option<&'a [u8]> {
    if b.len() < HEADER {
        return None;
    }
    out.insert("time".into(), json!(clock.wall(hdr::TS_NS.u64(b))));
    out.insert("pid".into(), json!(hdr::PID.u32(b)));
    out.insert("tid".into(), json!(hdr::TID.u32(b)));
    out.insert("ppid".into(), json!(hdr::PPID.u32(b)));
    out.insert("uid".into(), json!(hdr::UID.u32(b)));
    out.insert("comm".into(), json!(hdr::COMM.str(b)));
    out.insert("cgroup_id".into(), json!(hdr::CGROUP_ID.u64(b)));
    Some(&b[HEADER..])
}

const SIGNALS: [&str; 32] = [
    "",
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

/// `SIGTERM` for 15, `SIGRTMIN+2` for 36.
pub fn signal_name(sig: i32) -> String {
    match usize::try_from(sig) {
        Ok(0) => String::new(),
        Ok(n) if n < SIGNALS.len() => SIGNALS[n].to_owned(),
        Ok(n) => format!("SIGRTMIN+{}", n - 32),
        Err(_) => sig.to_string(),
    }
}

const ERRNOS: [&str; 41] = [
    "",
    "EPERM",
    "ENOENT",
    "ESRCH",
    "EINTR",
    "EIO",
    "ENXIO",
    "E2BIG",
    "ENOEXEC",
    "EBADF",
    "ECHILD",
    "EAGAIN",
    "ENOMEM",
    "EACCES",
    "EFAULT",
    "ENOTBLK",
    "EBUSY",
    "EEXIST",
    "EXDEV",
    "ENODEV",
    "ENOTDIR",
    "EISDIR",
    "EINVAL",
    "ENFILE",
    "EMFILE",
    "ENOTTY",
    "ETXTBSY",
    "EFBIG",
    "ENOSPC",
    "ESPIPE",
    "EROFS",
    "EMLINK",
    "EPIPE",
    "EDOM",
    "ERANGE",
    "EDEADLK",
    "ENAMETOOLONG",
    "ENOLCK",
    "ENOSYS",
    "ENOTEMPTY",
    "ELOOP",
];

/// Network errnos (x86_64 and most architectures number them alike).
const NET_ERRNOS: &[(i32, &str)] = &[
    (98, "EADDRINUSE"),
    (99, "EADDRNOTAVAIL"),
    (100, "ENETDOWN"),
    (101, "ENETUNREACH"),
    (103, "ECONNABORTED"),
    (104, "ECONNRESET"),
    (105, "ENOBUFS"),
    (110, "ETIMEDOUT"),
    (111, "ECONNREFUSED"),
    (112, "EHOSTDOWN"),
    (113, "EHOSTUNREACH"),
    (115, "EINPROGRESS"),
];

/// `ENOENT` for 2 (the common errnos; others as their number).
pub fn errno_name(errno: i32) -> String {
    match usize::try_from(errno) {
        Ok(n) if n > 0 && n < ERRNOS.len() => ERRNOS[n].to_owned(),
        _ => NET_ERRNOS
            .iter()
            .find(|(n, _)| *n == errno)
            .map_or_else(|| format!("errno {errno}"), |(_, name)| (*name).to_owned()),
    }
}

/// Splits a syscall's return value into the result and, when it failed, the errno name.
pub fn result(ret: i64, out: &mut Map<String, Value>) {
    out.insert("ret".into(), json!(ret));
    if ret < 0 && ret > -4096 {
        out.insert("error".into(), json!(errno_name(-ret as i32)));
    }
}

/// open(2) flags as `O_WRONLY|O_CREAT|O_CLOEXEC`.
pub fn open_flags(flags: u32) -> String {
    let access = match flags & 0o3 {
        0 => "O_RDONLY",
        1 => "O_WRONLY",
        2 => "O_RDWR",
        _ => "O_ACCMODE",
    };
    let bits: [(u32, &str); 13] = [
        (0o100, "O_CREAT"),
        (0o200, "O_EXCL"),
        (0o400, "O_NOCTTY"),
        (0o1000, "O_TRUNC"),
        (0o2000, "O_APPEND"),
        (0o4000, "O_NONBLOCK"),
        (0o10000, "O_DSYNC"),
        (0o40000, "O_DIRECT"),
        (0o200000, "O_DIRECTORY"),
        (0o400000, "O_NOFOLLOW"),
        (0o1000000, "O_NOATIME"),
        (0o2000000, "O_CLOEXEC"),
        (0o20000000, "O_PATH"),
    ];
    let mut parts = vec![access.to_owned()];
    parts.extend(
        bits.iter()
            .filter(|(b, _)| flags & b != 0)
            .map(|(_, n)| (*n).to_owned()),
    );
    parts.join("|")
}

/// The name of syscall `nr` on this architecture (the `syscalls` crate's table, generated
/// from the kernel's own syscall tables); `syscall_N` for a number it does not know.
pub fn syscall_name(nr: u32) -> String {
    match syscalls::Sysno::new(nr as usize) {
        Some(sysno) => sysno.name().to_owned(),
        None => format!("syscall_{nr}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(34), "SIGRTMIN+2");
        assert_eq!(errno_name(2), "ENOENT");
        assert_eq!(errno_name(111), "ECONNREFUSED");
        assert_eq!(errno_name(4000), "errno 4000");
        assert_eq!(open_flags(0o2000101), "O_WRONLY|O_CREAT|O_CLOEXEC");
        assert_eq!(open_flags(0), "O_RDONLY");
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(syscall_name(257), "openat");
            // Syscalls newer than the distribution's headers: 6.x kernels have them.
            assert_eq!(syscall_name(451), "cachestat");
            assert_eq!(syscall_name(462), "mseal");
        }
        assert_eq!(syscall_name(100_000), "syscall_100000");
        assert_eq!(str_at(b"ab\0cd", 0, 5), "ab");
    }
}
