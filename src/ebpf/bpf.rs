//! The bpf(2) commands aya 0.14 does not expose in the form the inventory needs, made raw.
//! aya's `loaded_programs`, `loaded_maps` and `loaded_links` walk the same ids, but their
//! info types leave out what the tools report: a program's translated instructions and
//! BTF function info, a map's BTF key and value type ids and its memory, a link's target
//! (interface, cgroup, tracepoint, probed function), and run-time statistics by program id.
//! aya has no call for a BTF object's bytes, batch map reads, get-next-key on any map type
//! by descriptor, or getting the descriptor of an arbitrary pin. What aya does offer in
//! full is used through aya (turning statistics on). Every raw `unsafe` bpf(2) call is here.

use std::ffi::CString;
use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use aya_obj::generated::{
    bpf_attr, bpf_btf_info, bpf_cmd, bpf_link_info, bpf_map_info, bpf_prog_info,
};

use super::sys::SyscallError;

/// Kinds of kernel BPF objects that have ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    Prog,
    Map,
    Link,
    Btf,
}

impl Object {
    fn next_id_cmd(self) -> bpf_cmd {
        match self {
            Self::Prog => bpf_cmd::BPF_PROG_GET_NEXT_ID,
            Self::Map => bpf_cmd::BPF_MAP_GET_NEXT_ID,
            Self::Link => bpf_cmd::BPF_LINK_GET_NEXT_ID,
            Self::Btf => bpf_cmd::BPF_BTF_GET_NEXT_ID,
        }
    }

    fn fd_by_id_cmd(self) -> bpf_cmd {
        match self {
            Self::Prog => bpf_cmd::BPF_PROG_GET_FD_BY_ID,
            Self::Map => bpf_cmd::BPF_MAP_GET_FD_BY_ID,
            Self::Link => bpf_cmd::BPF_LINK_GET_FD_BY_ID,
            Self::Btf => bpf_cmd::BPF_BTF_GET_FD_BY_ID,
        }
    }
}

fn err(call: &'static str) -> SyscallError {
    SyscallError {
        call,
        source: io::Error::last_os_error(),
    }
}

fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a plain C union of integers; all-zero is its documented "unset".
    unsafe { mem::zeroed() }
}

/// bpf(2). Returns the non-negative result or the errno as an error.
fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr, call: &'static str) -> Result<i64, SyscallError> {
    // SAFETY: `attr` is a valid bpf_attr for `cmd` that outlives the call, and its size is
    // passed with it; pointers inside it (set by the callers) point to live buffers of the
    // sizes given alongside.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            mem::size_of::<bpf_attr>(),
        )
    };
    if rc < 0 { Err(err(call)) } else { Ok(rc) }
}

fn owned_fd(fd: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// The id after `start` (0: the first), or `None` when there is no more.
pub fn next_id(kind: Object, start: u32) -> Result<Option<u32>, SyscallError> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_6.__bindgen_anon_1.start_id = start;
    match sys_bpf(kind.next_id_cmd(), &mut attr, "BPF_*_GET_NEXT_ID") {
        // SAFETY: the kernel filled `next_id` of the same member.
        Ok(_) => Ok(Some(unsafe { attr.__bindgen_anon_6.next_id })),
        Err(e) if e.errno() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every id of `kind`, ascending.
pub fn all_ids(kind: Object) -> Result<Vec<u32>, SyscallError> {
    let mut ids = Vec::new();
    let mut cur = 0;
    while let Some(id) = next_id(kind, cur)? {
        ids.push(id);
        cur = id;
    }
    Ok(ids)
}

/// A descriptor for object `id`. ENOENT means it went away since it was listed.
pub fn fd_by_id(kind: Object, id: u32) -> Result<OwnedFd, SyscallError> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_6.__bindgen_anon_1.start_id = id;
    sys_bpf(kind.fd_by_id_cmd(), &mut attr, "BPF_*_GET_FD_BY_ID").map(owned_fd)
}

/// BPF_OBJ_GET_INFO_BY_FD into `info` (any of the bpf_*_info structs).
fn obj_info<T>(fd: BorrowedFd<'_>, info: &mut T) -> Result<(), SyscallError> {
    let mut attr = zeroed_attr();
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = mem::size_of::<T>() as u32;
    attr.info.info = info as *mut T as u64;
    sys_bpf(
        bpf_cmd::BPF_OBJ_GET_INFO_BY_FD,
        &mut attr,
        "BPF_OBJ_GET_INFO_BY_FD",
    )
    .map(|_| ())
}

fn zeroed<T>() -> T {
    // SAFETY: only used for the kernel's bpf_*_info structs: plain integers and arrays.
    unsafe { mem::zeroed() }
}

/// A program's info, with its map ids and (when `with_insns`) its translated instructions.
pub fn prog_info(
    fd: BorrowedFd<'_>,
    with_insns: bool,
) -> Result<(bpf_prog_info, Vec<u32>, Vec<u8>), SyscallError> {
    let mut info: bpf_prog_info = zeroed();
    obj_info(fd, &mut info)?;
    let mut map_ids = vec![0u32; info.nr_map_ids as usize];
    let mut insns = vec![
        0u8;
        if with_insns {
            info.xlated_prog_len as usize
        } else {
            0
        }
    ];
    if map_ids.is_empty() && insns.is_empty() {
        return Ok((info, map_ids, insns));
    }
    let mut again: bpf_prog_info = zeroed();
    again.nr_map_ids = map_ids.len() as u32;
    again.map_ids = map_ids.as_mut_ptr() as u64;
    if !insns.is_empty() {
        again.xlated_prog_len = insns.len() as u32;
        again.xlated_prog_insns = insns.as_mut_ptr() as u64;
    }
    obj_info(fd, &mut again)?;
    // Maps may have been released in between; never read past what was allocated.
    map_ids.truncate((again.nr_map_ids as usize).min(map_ids.len()));
    insns.truncate((again.xlated_prog_len as usize).min(insns.len()));
    // The second call's counters are the authoritative ones.
    info.nr_map_ids = again.nr_map_ids;
    info.run_time_ns = again.run_time_ns;
    info.run_cnt = again.run_cnt;
    Ok((info, map_ids, insns))
}

/// How often program `id` ran and for how long, as counted while the kernel's run-time
/// statistics were on (see [`enable_stats`]).
pub fn prog_run_stats(id: u32) -> Result<(u64, u64), SyscallError> {
    let fd = fd_by_id(Object::Prog, id)?;
    let mut info: bpf_prog_info = zeroed();
    obj_info(fd.as_fd(), &mut info)?;
    Ok((info.run_cnt, info.run_time_ns))
}

/// The BTF type id of a program's main function (its first func_info record), if any.
pub fn prog_main_func_type(fd: BorrowedFd<'_>) -> Result<Option<u32>, SyscallError> {
    let mut info: bpf_prog_info = zeroed();
    obj_info(fd, &mut info)?;
    if info.nr_func_info == 0 || info.func_info_rec_size < 8 {
        return Ok(None);
    }
    let rec = info.func_info_rec_size as usize;
    let mut buf = vec![0u8; rec];
    let mut again: bpf_prog_info = zeroed();
    again.nr_func_info = 1;
    again.func_info_rec_size = rec as u32;
    again.func_info = buf.as_mut_ptr() as u64;
    obj_info(fd, &mut again)?;
    // struct bpf_func_info { __u32 insn_off; __u32 type_id; }
    Ok(Some(u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]])))
}

pub fn map_info(fd: BorrowedFd<'_>) -> Result<bpf_map_info, SyscallError> {
    let mut info: bpf_map_info = zeroed();
    obj_info(fd, &mut info)?;
    Ok(info)
}

/// What the kernel says a link attaches to, decoded from `bpf_link_info`'s union.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkTarget {
    /// XDP, TCX and netkit: a device (`attach_type` for TCX/netkit).
    Device {
        ifindex: u32,
        attach_type: Option<u32>,
    },
    Cgroup {
        cgroup_id: u64,
        attach_type: u32,
    },
    /// fentry, fexit, tp_btf, lsm: a function or tracepoint in a BTF object.
    Tracing {
        attach_type: u32,
        target_obj_id: u32,
        target_btf_id: u32,
    },
    Netns {
        netns_ino: u32,
        attach_type: u32,
    },
    /// 1 uprobe, 2 uretprobe, 3 kprobe, 4 kretprobe, 5 tracepoint, 6 perf event.
    PerfEvent {
        kind: u32,
        offset: u32,
        event_type: u32,
        event_config: u64,
    },
    Other,
}

/// A link's kernel info with its target decoded.
#[derive(Debug, Clone)]
pub struct LinkInfo {
    pub id: u32,
    pub link_type: u32,
    pub prog_id: u32,
    /// Tracepoint name, iterator target, probed file or function, when the link has one.
    pub name: Option<String>,
    pub target: LinkTarget,
}

/// A link's info. For kinds with a name or path (tracepoint, uprobe file, kprobe function,
/// iterator) a second call fetches it into a buffer.
pub fn link_info(fd: BorrowedFd<'_>) -> Result<LinkInfo, SyscallError> {
    use aya_obj::generated::bpf_link_type as T;
    let mut info: bpf_link_info = zeroed();
    obj_info(fd, &mut info)?;
    let mut buf = vec![0u8; 4096];
    let mut again: bpf_link_info = zeroed();
    let ptr = buf.as_mut_ptr() as u64;
    let len = buf.len() as u32;
    let t = info.type_;
    // Each arm writes the union member the kernel reads for this link type; `buf` outlives
    // the call below.
    let wants_name = if t == T::BPF_LINK_TYPE_RAW_TRACEPOINT as u32 {
        again.__bindgen_anon_1.raw_tracepoint.tp_name = ptr;
        again.__bindgen_anon_1.raw_tracepoint.tp_name_len = len;
        true
    } else if t == T::BPF_LINK_TYPE_ITER as u32 {
        again.__bindgen_anon_1.iter.target_name = ptr;
        again.__bindgen_anon_1.iter.target_name_len = len;
        true
    } else if t == T::BPF_LINK_TYPE_PERF_EVENT as u32 {
        // uprobe.file_name, kprobe.func_name and tracepoint.tp_name share their offsets.
        again
            .__bindgen_anon_1
            .perf_event
            .__bindgen_anon_1
            .uprobe
            .file_name = ptr;
        again
            .__bindgen_anon_1
            .perf_event
            .__bindgen_anon_1
            .uprobe
            .name_len = len;
        true
    } else if t == T::BPF_LINK_TYPE_UPROBE_MULTI as u32 {
        again.__bindgen_anon_1.uprobe_multi.path = ptr;
        again.__bindgen_anon_1.uprobe_multi.path_size = len;
        true
    } else {
        false
    };
    // Some link types reject buffers on older kernels: the basic info is still good.
    let mut name = None;
    if wants_name && obj_info(fd, &mut again).is_ok() {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(0);
        name = (end > 0).then(|| String::from_utf8_lossy(&buf[..end]).into_owned());
        info = again;
    }
    let u = &info.__bindgen_anon_1;
    // SAFETY: the kernel fills the union member that matches `info.type_`, and each branch
    // below reads only the member its condition names.
    let target = unsafe {
        if t == T::BPF_LINK_TYPE_XDP as u32 {
            LinkTarget::Device {
                ifindex: u.xdp.ifindex,
                attach_type: None,
            }
        } else if t == T::BPF_LINK_TYPE_TCX as u32 || t == T::BPF_LINK_TYPE_NETKIT as u32 {
            LinkTarget::Device {
                ifindex: u.tcx.ifindex,
                attach_type: Some(u.tcx.attach_type),
            }
        } else if t == T::BPF_LINK_TYPE_CGROUP as u32 {
            LinkTarget::Cgroup {
                cgroup_id: u.cgroup.cgroup_id,
                attach_type: u.cgroup.attach_type,
            }
        } else if t == T::BPF_LINK_TYPE_TRACING as u32 {
            LinkTarget::Tracing {
                attach_type: u.tracing.attach_type,
                target_obj_id: u.tracing.target_obj_id,
                target_btf_id: u.tracing.target_btf_id,
            }
        } else if t == T::BPF_LINK_TYPE_NETNS as u32 {
            LinkTarget::Netns {
                netns_ino: u.netns.netns_ino,
                attach_type: u.netns.attach_type,
            }
        } else if t == T::BPF_LINK_TYPE_PERF_EVENT as u32 {
            let pe = &u.perf_event;
            let (offset, event_type, event_config) = match pe.type_ {
                1 | 2 => (pe.__bindgen_anon_1.uprobe.offset, 0, 0),
                3 | 4 => (pe.__bindgen_anon_1.kprobe.offset, 0, 0),
                6 => (
                    0,
                    pe.__bindgen_anon_1.event.type_,
                    pe.__bindgen_anon_1.event.config,
                ),
                _ => (0, 0, 0),
            };
            LinkTarget::PerfEvent {
                kind: pe.type_,
                offset,
                event_type,
                event_config,
            }
        } else {
            LinkTarget::Other
        }
    };
    Ok(LinkInfo {
        id: info.id,
        link_type: t,
        prog_id: info.prog_id,
        name,
        target,
    })
}

/// The raw BTF blob of a BTF object.
pub fn btf_bytes(fd: BorrowedFd<'_>) -> Result<Vec<u8>, SyscallError> {
    let mut info: bpf_btf_info = zeroed();
    obj_info(fd, &mut info)?;
    let mut buf = vec![0u8; info.btf_size as usize];
    let mut again: bpf_btf_info = zeroed();
    again.btf = buf.as_mut_ptr() as u64;
    again.btf_size = buf.len() as u32;
    obj_info(fd, &mut again)?;
    buf.truncate((again.btf_size as usize).min(buf.len()));
    Ok(buf)
}

/// A descriptor for the object pinned at `path` (BPF_OBJ_GET).
pub fn obj_get(path: &Path) -> Result<OwnedFd, SyscallError> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| SyscallError {
        call: "BPF_OBJ_GET",
        source: io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
    })?;
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_4.pathname = c.as_ptr() as u64;
    sys_bpf(bpf_cmd::BPF_OBJ_GET, &mut attr, "BPF_OBJ_GET").map(owned_fd)
}

/// Turns on kernel run-time statistics for every program while the returned descriptor is
/// open (BPF_ENABLE_STATS, through aya); closing it turns them off again unless someone else
/// holds one.
pub fn enable_stats() -> Result<OwnedFd, SyscallError> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime).map_err(|e| SyscallError {
        call: "BPF_ENABLE_STATS",
        source: e.io_error,
    })
}

/// One BPF_MAP_LOOKUP_BATCH call. `token` is the opaque position: empty for the first call,
/// then whatever the previous call left in it (`token_size` bytes, at least the key size).
/// Returns (entries read, finished).
pub fn lookup_batch(
    fd: BorrowedFd<'_>,
    token: &mut Vec<u8>,
    token_size: usize,
    keys: &mut [u8],
    values: &mut [u8],
    max: u32,
) -> Result<(u32, bool), SyscallError> {
    let first = token.is_empty();
    let mut out = vec![0u8; token_size];
    let mut attr = zeroed_attr();
    attr.batch.in_batch = if first { 0 } else { token.as_ptr() as u64 };
    attr.batch.out_batch = out.as_mut_ptr() as u64;
    attr.batch.keys = keys.as_mut_ptr() as u64;
    attr.batch.values = values.as_mut_ptr() as u64;
    attr.batch.count = max;
    attr.batch.map_fd = fd.as_raw_fd() as u32;
    let result = sys_bpf(
        bpf_cmd::BPF_MAP_LOOKUP_BATCH,
        &mut attr,
        "BPF_MAP_LOOKUP_BATCH",
    );
    // SAFETY: BPF_MAP_LOOKUP_BATCH reads and writes the `batch` member; the kernel
    // updates `count` to the number of entries it copied.
    let count = unsafe { attr.batch.count };
    match result {
        Ok(_) => {
            *token = out;
            Ok((count, false))
        }
        // ENOENT: the walk reached the end; `count` entries were still copied.
        Err(e) if e.errno() == Some(libc::ENOENT) => Ok((count, true)),
        Err(e) => Err(e),
    }
}

/// BPF_MAP_GET_NEXT_KEY: the key after `key` (or the first key) into `next`; `false` at the end.
pub fn next_key(
    fd: BorrowedFd<'_>,
    key: Option<&[u8]>,
    next: &mut [u8],
) -> Result<bool, SyscallError> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_2.map_fd = fd.as_raw_fd() as u32;
    attr.__bindgen_anon_2.key = key.map_or(0, |k| k.as_ptr() as u64);
    attr.__bindgen_anon_2.__bindgen_anon_1.next_key = next.as_mut_ptr() as u64;
    match sys_bpf(
        bpf_cmd::BPF_MAP_GET_NEXT_KEY,
        &mut attr,
        "BPF_MAP_GET_NEXT_KEY",
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// BPF_MAP_UPDATE_ELEM of `key` to `value` (any: BPF_ANY).
pub fn update(fd: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> Result<(), SyscallError> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_2.map_fd = fd.as_raw_fd() as u32;
    attr.__bindgen_anon_2.key = key.as_ptr() as u64;
    attr.__bindgen_anon_2.__bindgen_anon_1.value = value.as_ptr() as u64;
    sys_bpf(
        bpf_cmd::BPF_MAP_UPDATE_ELEM,
        &mut attr,
        "BPF_MAP_UPDATE_ELEM",
    )
    .map(|_| ())
}

/// BPF_MAP_LOOKUP_ELEM of `key` into `value`; `false` when the key is absent.
pub fn lookup(fd: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> Result<bool, SyscallError> {
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_2.map_fd = fd.as_raw_fd() as u32;
    attr.__bindgen_anon_2.key = key.as_ptr() as u64;
    attr.__bindgen_anon_2.__bindgen_anon_1.value = value.as_mut_ptr() as u64;
    match sys_bpf(
        bpf_cmd::BPF_MAP_LOOKUP_ELEM,
        &mut attr,
        "BPF_MAP_LOOKUP_ELEM",
    ) {
        Ok(_) => Ok(true),
        Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}
