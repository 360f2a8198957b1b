//! Every BPF program, map and link on the system (not only ours), read by id through the
//! kernel, with the processes that hold them and, for links, the attach target in human
//! terms. This is what `list_programs`, `list_maps`, `list_links` and the resources read.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::Serialize;

use super::bpf::{self, Object};
use super::names;
use super::sys::SyscallError;

/// A process holding a file descriptor to a BPF object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct Holder {
    pub pid: u32,
    pub comm: String,
}

/// Which processes hold which objects, from /proc/*/fdinfo (this process excluded).
#[derive(Debug, Default)]
pub struct Holders {
    progs: HashMap<u32, Vec<Holder>>,
    maps: HashMap<u32, Vec<Holder>>,
    links: HashMap<u32, Vec<Holder>>,
}

impl Holders {
    /// Scans every process's descriptors for BPF objects of `kind` (programs, maps or
    /// links). Processes that exit mid-scan, or whose fds this process may not read, are
    /// skipped. `stop` is asked between processes (a host can hold hundreds of thousands
    /// of descriptors): once it says so, the scan ends with what it has.
    pub fn scan(kind: Object, stop: &dyn Fn() -> bool) -> Self {
        let (link_target, id_key): (&[&str], &[u8]) = match kind {
            Object::Prog => (&["anon_inode:bpf-prog"], b"prog_id:"),
            Object::Map => (&["anon_inode:bpf-map"], b"map_id:"),
            _ => (&["anon_inode:bpf_link", "anon_inode:bpf-link"], b"link_id:"),
        };
        let mut holders = Self::default();
        let table = match kind {
            Object::Prog => &mut holders.progs,
            Object::Map => &mut holders.maps,
            _ => &mut holders.links,
        };
        let me = std::process::id();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return holders;
        };
        for entry in procs.flatten() {
            if stop() {
                break;
            }
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
                continue;
            };
            let mut comm: Option<String> = None;
            for fd in fds.flatten() {
                let Ok(target) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                if !link_target.iter().any(|t| target.as_os_str() == *t) {
                    continue;
                }
                let info_path = entry.path().join("fdinfo").join(fd.file_name());
                let Some(id) = fdinfo_field(&info_path, id_key) else {
                    continue;
                };
                let comm = comm
                    .get_or_insert_with(|| {
                        std::fs::read_to_string(entry.path().join("comm"))
                            .map(|c| c.trim_end().to_owned())
                            .unwrap_or_default()
                    })
                    .clone();
                let list = table.entry(id as u32).or_default();
                if !list.iter().any(|h| h.pid == pid) {
                    list.push(Holder { pid, comm });
                }
            }
        }
        holders
    }

    pub fn of(&self, kind: Object, id: u32) -> Vec<Holder> {
        let table = match kind {
            Object::Prog => &self.progs,
            Object::Map => &self.maps,
            _ => &self.links,
        };
        let mut list = table.get(&id).cloned().unwrap_or_default();
        list.sort_by_key(|h| h.pid);
        list
    }
}

/// A numeric field of an fdinfo file ("memlock:\t4096"). One read into a stack buffer:
/// listings read thousands of these, and BPF fdinfo files are a few hundred bytes.
fn fdinfo_field(path: &Path, key: &[u8]) -> Option<u64> {
    use std::io::Read;
    let mut buf = [0u8; 1024];
    let n = std::fs::File::open(path).ok()?.read(&mut buf).ok()?;
    buf[..n]
        .split(|b| *b == b'\n')
        .find_map(|line| line.strip_prefix(key))
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok())
}

/// fdinfo of one of this process's descriptors.
fn own_fdinfo(fd: &OwnedFd, key: &str) -> Option<u64> {
    fdinfo_field(
        &PathBuf::from(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())),
        key.as_bytes(),
    )
}

fn c_name(raw: &[std::ffi::c_char]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

use super::host::boot_time;

/// A loaded program, as the kernel reports it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Program {
    pub id: u32,
    pub name: String,
    /// Program type, as bpftool names it (tracepoint, kprobe, xdp, sched_cls, ...).
    #[serde(rename = "type")]
    pub prog_type: String,
    /// The program's tag (hash of its instructions), hex.
    pub tag: String,
    /// When it was loaded (RFC 3339).
    pub loaded_at: String,
    /// User that loaded it.
    pub uid: u32,
    pub bytes_xlated: u32,
    pub bytes_jited: u32,
    /// Instructions the verifier processed.
    pub verified_insns: u32,
    /// Memory charged to it, in bytes.
    pub memlock: u64,
    pub map_ids: Vec<u32>,
    /// Its BTF object id (0: none).
    pub btf_id: u32,
    pub gpl_compatible: bool,
    /// Cumulative run count and time; counted only while kernel BPF stats are enabled.
    pub run_cnt: u64,
    pub run_time_ns: u64,
    pub recursion_misses: u64,
}

/// A map, as the kernel reports it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MapRecord {
    pub id: u32,
    pub name: String,
    #[serde(rename = "type")]
    pub map_type: String,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    /// Memory charged to it, in bytes.
    pub memlock: u64,
    /// Frozen: read-only from user space.
    pub frozen: bool,
    /// Its BTF object id (0: none) and the key/value type ids in it.
    pub btf_id: u32,
    pub btf_key_type_id: u32,
    pub btf_value_type_id: u32,
}

pub fn read_program(id: u32) -> Result<(Program, OwnedFd), SyscallError> {
    let fd = bpf::fd_by_id(Object::Prog, id)?;
    let (info, map_ids, _) = bpf::prog_info(fd.as_fd(), false)?;
    let loaded_at = if info.load_time > 0 {
        crate::time::rfc3339_seconds(crate::time::add(
            boot_time(),
            Duration::from_nanos(info.load_time),
        ))
    } else {
        String::new()
    };
    let mut name = c_name(&info.name);
    // The kernel keeps 15 characters of a name; the program's BTF has it whole (as bpftool
    // shows it).
    if name.len() == 15
        && info.btf_id != 0
        && let Some(full) = full_name(&fd, info.btf_id)
    {
        name = full;
    }
    let program = Program {
        id: info.id,
        name,
        prog_type: names::prog_type(info.type_),
        tag: info.tag.iter().map(|b| format!("{b:02x}")).collect(),
        loaded_at,
        uid: info.created_by_uid,
        bytes_xlated: info.xlated_prog_len,
        bytes_jited: info.jited_prog_len,
        verified_insns: info.verified_insns,
        memlock: own_fdinfo(&fd, "memlock:").unwrap_or(0),
        map_ids,
        btf_id: info.btf_id,
        gpl_compatible: info.gpl_compatible() != 0,
        run_cnt: info.run_cnt,
        run_time_ns: info.run_time_ns,
        recursion_misses: info.recursion_misses,
    };
    Ok((program, fd))
}

fn full_name(fd: &OwnedFd, btf_id: u32) -> Option<String> {
    let type_id = bpf::prog_main_func_type(fd.as_fd()).ok()??;
    let btf_fd = bpf::fd_by_id(Object::Btf, btf_id).ok()?;
    let btf = super::btf_reader::Btf::parse(bpf::btf_bytes(btf_fd.as_fd()).ok()?).ok()?;
    let name = btf.name(type_id);
    (!name.is_empty()).then(|| name.to_owned())
}

/// Translated instructions of program `id` (raw bytes, 8 per instruction).
pub fn program_insns(id: u32) -> Result<Vec<u8>, SyscallError> {
    let fd = bpf::fd_by_id(Object::Prog, id)?;
    bpf::prog_info(fd.as_fd(), true).map(|(_, _, insns)| insns)
}

pub fn read_map_fd(fd: &OwnedFd) -> Result<MapRecord, SyscallError> {
    let info = bpf::map_info(fd.as_fd())?;
    Ok(MapRecord {
        id: info.id,
        name: c_name(&info.name),
        map_type: names::map_type(info.type_),
        key_size: info.key_size,
        value_size: info.value_size,
        max_entries: info.max_entries,
        flags: info.map_flags,
        memlock: own_fdinfo(fd, "memlock:").unwrap_or(0),
        frozen: own_fdinfo(fd, "frozen:").unwrap_or(0) != 0,
        btf_id: info.btf_id,
        btf_key_type_id: info.btf_key_type_id,
        btf_value_type_id: info.btf_value_type_id,
    })
}

pub fn read_map(id: u32) -> Result<(MapRecord, OwnedFd), SyscallError> {
    let fd = bpf::fd_by_id(Object::Map, id)?;
    let record = read_map_fd(&fd)?;
    Ok((record, fd))
}

/// A link with its attach target in human terms.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LinkRecord {
    pub id: u32,
    #[serde(rename = "type")]
    pub link_type: String,
    pub prog_id: u32,
    /// What it is attached to, in one line: `tracepoint sched_process_exec`,
    /// `xdp eth0 (ifindex 2)`, `cgroup /sys/fs/cgroup/app (cgroup_inet_ingress)`, ...
    pub target: String,
    /// Attach type, as bpftool names it (cgroup_inet_ingress, tcx_ingress, trace_fentry...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attach_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifindex: Option<u32>,
    /// Interface name, when the interface is in this network namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_path: Option<String>,
    /// Tracepoint, kernel function, iterator target or probed file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Offset within the probed function or file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Why the link no longer acts, when it does not: its interface was deleted (the
    /// kernel keeps the link until its holder closes it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detached: Option<String>,
}

fn if_name(ifindex: u32) -> Option<String> {
    // Index 0 names no device (nix answers it with an empty name rather than an error).
    if ifindex == 0 {
        return None;
    }
    nix::net::if_::if_indextoname(ifindex)
        .ok()
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| !name.is_empty())
}

/// The cgroup v2 directory whose inode is `id` (cgroup ids are cgroupfs inode numbers).
fn cgroup_path(id: u64) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let root = super::host::cgroup2_root()?;
    let mut stack = vec![root];
    let mut visited = 0;
    while let Some(dir) = stack.pop() {
        visited += 1;
        if visited > 20_000 {
            return None;
        }
        if std::fs::metadata(&dir).is_ok_and(|m| m.ino() == id) {
            return Some(dir.display().to_string());
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    None
}

/// The function or tracepoint a tracing link (fentry, fexit, tp_btf, lsm) targets, from the
/// target's BTF.
fn tracing_target(btf_obj_id: u32, type_id: u32) -> Option<String> {
    let fd = bpf::fd_by_id(Object::Btf, btf_obj_id).ok()?;
    let btf = super::btf_reader::Btf::parse(bpf::btf_bytes(fd.as_fd()).ok()?).ok()?;
    let name = btf.name(type_id);
    (!name.is_empty()).then(|| name.trim_start_matches("btf_trace_").to_owned())
}

pub fn read_link(id: u32) -> Result<LinkRecord, SyscallError> {
    use bpf::LinkTarget;
    let fd = bpf::fd_by_id(Object::Link, id)?;
    let info = bpf::link_info(fd.as_fd())?;
    let mut rec = LinkRecord {
        id: info.id,
        link_type: names::link_type(info.link_type),
        prog_id: info.prog_id,
        target: String::new(),
        attach_type: None,
        ifindex: None,
        ifname: None,
        cgroup_id: None,
        cgroup_path: None,
        name: info.name,
        offset: None,
        detached: None,
    };
    match info.target {
        LinkTarget::Device {
            ifindex,
            attach_type,
        } => {
            rec.ifindex = Some(ifindex);
            rec.ifname = if_name(ifindex);
            rec.attach_type = attach_type.map(names::attach_type);
            // The kernel reports index 0 once the device the link was on is gone.
            if ifindex == 0 {
                rec.detached = Some("its interface was deleted".into());
            }
        }
        LinkTarget::Cgroup {
            cgroup_id,
            attach_type,
        } => {
            rec.cgroup_id = Some(cgroup_id);
            rec.cgroup_path = cgroup_path(cgroup_id);
            rec.attach_type = Some(names::attach_type(attach_type));
        }
        LinkTarget::Tracing {
            attach_type,
            target_obj_id,
            target_btf_id,
        } => {
            rec.attach_type = Some(names::attach_type(attach_type));
            rec.name = tracing_target(target_obj_id, target_btf_id);
        }
        LinkTarget::Netns {
            netns_ino,
            attach_type,
        } => {
            rec.attach_type = Some(names::attach_type(attach_type));
            rec.name = Some(format!("netns inode {netns_ino}"));
        }
        LinkTarget::PerfEvent {
            kind,
            offset,
            event_type,
            event_config,
        } => {
            let kind_name = match kind {
                1 => "uprobe",
                2 => "uretprobe",
                3 => "kprobe",
                4 => "kretprobe",
                5 => "tracepoint",
                _ => "event",
            };
            rec.attach_type = Some(kind_name.to_owned());
            if matches!(kind, 1..=4) {
                rec.offset = Some(u64::from(offset));
            } else if kind == 6 {
                rec.name = Some(format!("perf type {event_type} config {event_config:#x}"));
            }
        }
        LinkTarget::Other => {}
    }
    rec.target = describe(&rec);
    rec.resolve_fd_path(&[]);
    Ok(rec)
}

impl LinkRecord {
    /// A uprobe attached through `/proc/self/fd/N` (as this server attaches, so that the
    /// file checked is the file probed) is named by the kernel by that path, meaningful
    /// only to the process that attached. The file it is: read from this process when it
    /// holds the link (read_link does that), else from a holder that still has descriptor
    /// N open.
    pub fn resolve_fd_path(&mut self, holders: &[Holder]) {
        let Some(n) = self
            .name
            .as_deref()
            .and_then(|p| p.strip_prefix("/proc/self/fd/"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            return;
        };
        let me = std::process::id();
        let pids = held_here(self.id)
            .then_some(me)
            .into_iter()
            .chain(holders.iter().map(|h| h.pid));
        for pid in pids {
            if let Ok(path) = std::fs::read_link(format!("/proc/{pid}/fd/{n}")) {
                self.name = Some(path.display().to_string());
                self.target = describe(self);
                return;
            }
        }
    }
}

/// Whether this process holds link `id` (Holders leaves this process out).
fn held_here(id: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc/self/fdinfo") else {
        return false;
    };
    let want = format!("link_id:\t{id}\n");
    entries
        .flatten()
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains(&want)))
}

fn describe(r: &LinkRecord) -> String {
    let name = r.name.as_deref().unwrap_or("");
    let at = r.attach_type.as_deref().unwrap_or("");
    let dev = |ifindex: Option<u32>, ifname: &Option<String>| match (ifname, ifindex) {
        (Some(n), Some(i)) => format!("{n} (ifindex {i})"),
        (None, Some(0)) => "(detached: its interface was deleted)".to_owned(),
        (None, Some(i)) => format!("ifindex {i} (other network namespace)"),
        _ => String::new(),
    };
    match r.link_type.as_str() {
        "raw_tracepoint" => format!("raw tracepoint {name}"),
        "tracing" => format!("{} {name}", at.trim_start_matches("trace_")),
        "xdp" => format!("xdp {}", dev(r.ifindex, &r.ifname)),
        "tcx" | "netkit" => format!("{at} {}", dev(r.ifindex, &r.ifname)),
        "cgroup" => format!(
            "cgroup {} ({at})",
            r.cgroup_path
                .clone()
                .unwrap_or_else(|| format!("id {}", r.cgroup_id.unwrap_or(0)))
        ),
        "perf_event" => match (at, r.offset) {
            ("uprobe" | "uretprobe", Some(off)) => format!("{at} {name}+{off:#x}"),
            ("kprobe" | "kretprobe", Some(off)) if off > 0 => format!("{at} {name}+{off:#x}"),
            _ => format!("{at} {name}"),
        },
        "iter" => format!("iterator {name}"),
        other => format!("{other} {at} {name}"),
    }
    .trim()
    .to_owned()
}

/// Every id of `kind`, ascending, skipping none.
pub fn ids(kind: Object) -> Result<Vec<u32>, SyscallError> {
    bpf::all_ids(kind)
}
