//! Confining the server process once its start-up work is done (`security.enable_sandboxing`,
//! on by default). Applied on the only thread, before the async runtime starts, so every
//! thread inherits it:
//!
//! 1. `PR_SET_NO_NEW_PRIVS`: nothing the process runs can gain privileges.
//! 2. Capabilities cut to what the tools need (see [`needed`]), in the effective, permitted
//!    and bounding sets; inheritable and ambient cleared.
//! 3. With `security.enable_landlock` (off by default: a Landlock domain may not read other
//!    processes' /proc entries, which holders and profile symbolization need): files
//!    readable only where the tools read (everything with the trace tier, whose uprobes and
//!    symbolization read any binary), writable only in the audit and log directories, the
//!    server's bpffs directory and the unix socket's directory, nothing executable, no TCP
//!    bind or connect.
//! 4. seccomp: an allow-list of the system calls the server makes; any other fails with
//!    EPERM and is logged by the kernel (SECCOMP_FILTER_FLAG_LOG: the audit log or dmesg).
//!
//! Each step that the kernel or the process's privileges do not allow is reported, never
//! silently skipped: `info.server.sandbox` says what is in force.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::Serialize;

use crate::config::Config;
use crate::ebpf::caps;

/// What the sandbox put in force.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct SandboxReport {
    /// security.enable_sandboxing.
    pub enabled: bool,
    /// PR_SET_NO_NEW_PRIVS is set.
    pub no_new_privs: bool,
    /// Effective capabilities after the cut.
    pub capabilities: Vec<String>,
    /// Capabilities removed from the bounding set as well (needs CAP_SETPCAP at start).
    pub bounding_set_reduced: bool,
    /// Landlock: enforced (with the ABI version), partially enforced, or why not.
    pub landlock: String,
    /// seccomp: the allow-list's size and what happens to other calls, or why not.
    pub seccomp: String,
    /// Steps that could not be applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// The capabilities the server keeps, and why each:
/// - CAP_BPF: load programs, create maps (every tier: read-tier tools read maps through
///   their own fds);
/// - CAP_PERFMON: attach tracing programs, perf events (trace, profile, probes);
/// - CAP_SYS_ADMIN: the kernel demands it for BPF_*_GET_FD_BY_ID and GET_NEXT_ID, which
///   every listing of other programs, maps and links needs, and for BPF_ENABLE_STATS
///   (list_programs sample_ms) and the feature probes' private network namespace;
/// - CAP_SYS_PTRACE: read /proc/PID/fdinfo and /proc/PID/maps of other processes (which
///   process holds a program; symbolizing profile stacks);
/// - CAP_DAC_READ_SEARCH: read binaries and libraries whatever their mode (uprobes,
///   symbolization);
/// - CAP_DAC_OVERRIDE: create the cgroup feature probe's empty cgroup (cgroup roots are
///   often mode 555). Landlock still confines every write to the directories it allows;
/// - CAP_NET_ADMIN: attach XDP and TC (deploy; the XDP/TC feature probes of `info`);
/// - CAP_SYSLOG: read kernel addresses in /proc/kallsyms (helper names in program detail,
///   kernel frames of profile stacks).
pub fn needed() -> Vec<u32> {
    vec![
        caps::DAC_OVERRIDE,
        caps::DAC_READ_SEARCH,
        caps::NET_ADMIN,
        caps::SYS_PTRACE,
        caps::SYS_ADMIN,
        caps::SYSLOG,
        caps::PERFMON,
        caps::BPF,
    ]
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

fn capget() -> std::io::Result<u64> {
    let mut header = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and a two-element data array, as the v3 ABI requires.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(u64::from(data[0].permitted) | (u64::from(data[1].permitted) << 32))
}

fn capset(keep: u64) -> std::io::Result<()> {
    let mut header = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: keep as u32,
            permitted: keep as u32,
            inheritable: 0,
        },
        CapData {
            effective: (keep >> 32) as u32,
            permitted: (keep >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: header and a two-element data array, as the v3 ABI requires.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Cuts the capability sets to `keep`; returns whether the bounding set was cut too.
fn drop_capabilities(keep: &[u32], problems: &mut Vec<String>) -> bool {
    let keep_mask = keep.iter().fold(0u64, |m, b| m | (1 << b));
    let permitted = match capget() {
        Ok(p) => p,
        Err(e) => {
            problems.push(format!("capget: {e}"));
            return false;
        }
    };
    let mut bounding = permitted & (1 << caps::SETPCAP) != 0;
    if bounding {
        for cap in 0..=last_cap() {
            if keep_mask & (1 << cap) != 0 {
                continue;
            }
            // SAFETY: PR_CAPBSET_DROP takes a capability number.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                let e = std::io::Error::last_os_error();
                // EINVAL: a capability this kernel does not know.
                if e.raw_os_error() != Some(libc::EINVAL) {
                    problems.push(format!(
                        "dropping {} from the bounding set: {e}",
                        caps::name(cap)
                    ));
                    bounding = false;
                }
            }
        }
    } else {
        problems.push(
            "the bounding set is left as it is: CAP_SETPCAP was not held at start (set \
             CapabilityBoundingSet= in the service unit instead)"
                .into(),
        );
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointers.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    if let Err(e) = capset(permitted & keep_mask) {
        problems.push(format!("capset: {e}"));
    }
    bounding
}

/// Paths the server reads, writes, and may remove files in.
#[derive(Debug, Default)]
pub struct FsPolicy {
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    /// Directories where the server may create and remove directories (cgroup probes).
    pub make_dirs: Vec<PathBuf>,
}

/// Where the server needs to read and write, from its configuration.
pub fn fs_policy(
    config: &Config,
    config_file: Option<&Path>,
    socket_dir: Option<&Path>,
) -> FsPolicy {
    let mut p = FsPolicy::default();
    if config.tools.trace.enabled {
        // uprobe targets and the binaries of profiled processes can be anywhere.
        p.read.push("/".into());
    } else {
        p.read.extend(["/proc", "/sys", "/etc"].map(PathBuf::from));
        p.read
            .extend(config.tools.deploy.allowed_dirs.iter().cloned());
        if let Some(f) = config_file {
            p.read.push(f.to_path_buf());
        }
        if let Some(f) = &config.security.access_control.tokens_file {
            p.read.push(f.clone());
        }
        if let Ok(exe) = std::env::current_exe() {
            p.read.push(exe); // the uprobe feature probe attaches to the server's own binary
        }
    }
    let parent = |f: &Path| {
        f.parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf)
    };
    if config.security.enable_audit
        && let Some(d) = parent(&config.security.audit_log)
    {
        p.write.push(d);
    }
    if let Some(d) = config
        .observability
        .logging
        .file
        .as_deref()
        .and_then(parent)
    {
        p.write.push(d);
    }
    p.write.push(config.ebpf.bpffs_dir.clone());
    if let Some(d) = socket_dir {
        p.write.push(d.to_path_buf());
    }
    if let Some(cgroup) = crate::ebpf::host::cgroup2_root() {
        p.make_dirs.push(cgroup);
    }
    p
}

fn landlock(policy: &FsPolicy, problems: &mut Vec<String>) -> String {
    use landlock::{
        ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr,
        RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
    };
    let abi = ABI::V6;
    let result = (|| -> Result<_, landlock::RulesetError> {
        let read = AccessFs::from_read(abi) & !AccessFs::Execute;
        let ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(AccessFs::from_all(abi))?
            .handle_access(AccessNet::from_all(abi))?
            .scope(Scope::from_all(abi))?
            .create()?
            .add_rules(path_beneath_rules(&policy.read, read))?
            .add_rules(path_beneath_rules(
                &policy.write,
                AccessFs::from_all(abi) & !AccessFs::Execute,
            ))?
            .add_rules(path_beneath_rules(
                &policy.make_dirs,
                read | AccessFs::MakeDir | AccessFs::RemoveDir,
            ))?;
        ruleset.restrict_self()
    })();
    match result {
        Ok(status) => match status.ruleset {
            RulesetStatus::FullyEnforced => "enforced".into(),
            RulesetStatus::PartiallyEnforced => {
                "partially enforced (this kernel's Landlock lacks some of the rules)".into()
            }
            RulesetStatus::NotEnforced => {
                problems.push("Landlock is not enforced: the kernel lacks it (CONFIG_SECURITY_LANDLOCK, lsm=landlock)".into());
                "not enforced: not available in this kernel".into()
            }
        },
        Err(e) => {
            problems.push(format!("Landlock: {e}"));
            format!("not enforced: {e}")
        }
    }
}

/// The system calls the server makes, found by tracing the whole test suite and reviewed:
/// the async runtime and std (memory, threads, futexes, epoll, signals, time, files), the
/// transports (sockets; accept; no new TCP binds or connects, which Landlock also forbids),
/// and the work (bpf, perf_event_open, ioctl on perf events, netlink for XDP/TC, unshare
/// for the feature probes' network namespace). Not here, so refused:
/// execve, ptrace, mount, kexec, module loading, reboot, swapon, keyctl, and the rest.
const ALLOWED_SYSCALLS: &[(&str, libc::c_long)] = &[
    ("read", libc::SYS_read),
    ("write", libc::SYS_write),
    ("readv", libc::SYS_readv),
    ("writev", libc::SYS_writev),
    ("pread64", libc::SYS_pread64),
    ("pwrite64", libc::SYS_pwrite64),
    ("close", libc::SYS_close),
    ("openat", libc::SYS_openat),
    ("lseek", libc::SYS_lseek),
    ("mmap", libc::SYS_mmap),
    ("munmap", libc::SYS_munmap),
    ("mprotect", libc::SYS_mprotect),
    ("mremap", libc::SYS_mremap),
    ("madvise", libc::SYS_madvise),
    ("brk", libc::SYS_brk),
    ("rt_sigaction", libc::SYS_rt_sigaction),
    ("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    ("rt_sigreturn", libc::SYS_rt_sigreturn),
    ("sigaltstack", libc::SYS_sigaltstack),
    ("futex", libc::SYS_futex),
    ("sched_yield", libc::SYS_sched_yield),
    ("sched_getaffinity", libc::SYS_sched_getaffinity),
    ("nanosleep", libc::SYS_nanosleep),
    ("clock_nanosleep", libc::SYS_clock_nanosleep),
    ("clock_gettime", libc::SYS_clock_gettime),
    ("clock_getres", libc::SYS_clock_getres),
    ("gettimeofday", libc::SYS_gettimeofday),
    ("getrandom", libc::SYS_getrandom),
    ("epoll_create1", libc::SYS_epoll_create1),
    ("epoll_ctl", libc::SYS_epoll_ctl),
    ("epoll_pwait", libc::SYS_epoll_pwait),
    ("epoll_pwait2", libc::SYS_epoll_pwait2),
    ("eventfd2", libc::SYS_eventfd2),
    ("pipe2", libc::SYS_pipe2),
    ("ppoll", libc::SYS_ppoll),
    ("fcntl", libc::SYS_fcntl),
    ("ioctl", libc::SYS_ioctl),
    ("clone", libc::SYS_clone),
    ("clone3", libc::SYS_clone3),
    ("exit", libc::SYS_exit),
    ("exit_group", libc::SYS_exit_group),
    ("set_robust_list", libc::SYS_set_robust_list),
    ("rseq", libc::SYS_rseq),
    ("set_tid_address", libc::SYS_set_tid_address),
    ("gettid", libc::SYS_gettid),
    ("getpid", libc::SYS_getpid),
    ("getppid", libc::SYS_getppid),
    ("prctl", libc::SYS_prctl),
    ("prlimit64", libc::SYS_prlimit64),
    ("getrlimit", libc::SYS_getrlimit),
    ("setrlimit", libc::SYS_setrlimit),
    ("uname", libc::SYS_uname),
    ("sysinfo", libc::SYS_sysinfo),
    ("getuid", libc::SYS_getuid),
    ("geteuid", libc::SYS_geteuid),
    ("getgid", libc::SYS_getgid),
    ("getegid", libc::SYS_getegid),
    ("getgroups", libc::SYS_getgroups),
    ("getresuid", libc::SYS_getresuid),
    ("getresgid", libc::SYS_getresgid),
    ("capget", libc::SYS_capget),
    ("statx", libc::SYS_statx),
    ("newfstatat", libc::SYS_newfstatat),
    ("fstat", libc::SYS_fstat),
    ("fstatfs", libc::SYS_fstatfs),
    ("statfs", libc::SYS_statfs),
    ("readlinkat", libc::SYS_readlinkat),
    ("getdents64", libc::SYS_getdents64),
    ("getcwd", libc::SYS_getcwd),
    ("faccessat", libc::SYS_faccessat),
    ("faccessat2", libc::SYS_faccessat2),
    ("mkdirat", libc::SYS_mkdirat),
    ("unlinkat", libc::SYS_unlinkat),
    ("renameat", libc::SYS_renameat),
    ("renameat2", libc::SYS_renameat2),
    ("fsync", libc::SYS_fsync),
    ("fdatasync", libc::SYS_fdatasync),
    ("ftruncate", libc::SYS_ftruncate),
    ("fchmod", libc::SYS_fchmod),
    ("fchmodat", libc::SYS_fchmodat),
    ("dup", libc::SYS_dup),
    ("dup3", libc::SYS_dup3),
    ("socket", libc::SYS_socket),
    ("socketpair", libc::SYS_socketpair),
    ("bind", libc::SYS_bind),
    ("listen", libc::SYS_listen),
    ("accept4", libc::SYS_accept4),
    ("connect", libc::SYS_connect),
    ("getsockname", libc::SYS_getsockname),
    ("getpeername", libc::SYS_getpeername),
    ("getsockopt", libc::SYS_getsockopt),
    ("setsockopt", libc::SYS_setsockopt),
    ("sendto", libc::SYS_sendto),
    ("recvfrom", libc::SYS_recvfrom),
    ("sendmsg", libc::SYS_sendmsg),
    ("recvmsg", libc::SYS_recvmsg),
    ("shutdown", libc::SYS_shutdown),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
];

/// Legacy calls x86_64 has and aarch64 does not (glibc and std still use some).
#[cfg(target_arch = "x86_64")]
const ALLOWED_LEGACY: &[(&str, libc::c_long)] = &[
    ("open", libc::SYS_open),
    ("stat", libc::SYS_stat),
    ("lstat", libc::SYS_lstat),
    ("poll", libc::SYS_poll),
    ("access", libc::SYS_access),
    ("pipe", libc::SYS_pipe),
    ("dup2", libc::SYS_dup2),
    ("epoll_wait", libc::SYS_epoll_wait),
    ("readlink", libc::SYS_readlink),
    ("mkdir", libc::SYS_mkdir),
    ("rmdir", libc::SYS_rmdir),
    ("unlink", libc::SYS_unlink),
    ("rename", libc::SYS_rename),
    ("chmod", libc::SYS_chmod),
    ("arch_prctl", libc::SYS_arch_prctl),
    ("accept", libc::SYS_accept),
    ("epoll_create", libc::SYS_epoll_create),
    ("getdents", libc::SYS_getdents),
];
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_LEGACY: &[(&str, libc::c_long)] = &[];

fn syscall_numbers() -> BTreeMap<i64, &'static str> {
    ALLOWED_SYSCALLS
        .iter()
        .chain(ALLOWED_LEGACY)
        .map(|(name, nr)| (*nr, *name))
        .collect()
}

fn seccomp(problems: &mut Vec<String>) -> String {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
    let arch = match std::env::consts::ARCH {
        "x86_64" => TargetArch::x86_64,
        "aarch64" => TargetArch::aarch64,
        other => {
            problems.push(format!("seccomp: no allow-list for {other}"));
            return format!("not installed: no allow-list for {other}");
        }
    };
    let allowed = syscall_numbers();
    let rules = allowed.keys().map(|n| (*n, Vec::new())).collect();
    let program: Result<BpfProgram, String> = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(|e| e.to_string())
    .and_then(|f| {
        f.try_into()
            .map_err(|e: seccompiler::BackendError| e.to_string())
    });
    let program = match program {
        Ok(p) => p,
        Err(e) => {
            problems.push(format!("seccomp: {e}"));
            return format!("not installed: {e}");
        }
    };
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut().cast(),
    };
    // Every thread (there is one now), and every refusal logged by the kernel.
    let flags = libc::SECCOMP_FILTER_FLAG_TSYNC | libc::SECCOMP_FILTER_FLAG_LOG;
    // SAFETY: `fprog` points at `program`, alive for the call; the kernel copies it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &raw const fprog,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        problems.push(format!("seccomp: {e}"));
        return format!("not installed: {e}");
    }
    format!(
        "allow-list of {} system calls; any other fails with EPERM and is logged by the kernel",
        allowed.len()
    )
}

/// Applies the sandbox `config` asks for, says so in the log and returns what is in force.
/// `config_file` stays readable (reloads) and `socket_dir` writable (a Unix socket's
/// directory). Call with one thread only (before the async runtime starts).
pub fn enter(
    config: &Config,
    config_file: Option<&Path>,
    socket_dir: Option<&Path>,
) -> SandboxReport {
    let report = if config.security.enable_sandboxing {
        apply(config, config_file, socket_dir)
    } else {
        tracing::warn!(
            "security.enable_sandboxing is false: the process keeps all its capabilities and \
             has no seccomp or Landlock confinement"
        );
        SandboxReport::default()
    };
    if report.enabled {
        tracing::info!(
            capabilities = ?report.capabilities,
            landlock = %report.landlock,
            seccomp = %report.seccomp,
            "sandbox in force"
        );
        for problem in &report.problems {
            tracing::warn!("sandbox: {problem}");
        }
    }
    report
}

/// Applies the whole sandbox to this process. Call with one thread only.
pub fn apply(
    config: &Config,
    config_file: Option<&Path>,
    socket_dir: Option<&Path>,
) -> SandboxReport {
    let mut report = SandboxReport {
        enabled: true,
        ..SandboxReport::default()
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes no pointers.
    report.no_new_privs = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } == 0;
    if !report.no_new_privs {
        report.problems.push(format!(
            "PR_SET_NO_NEW_PRIVS: {}",
            std::io::Error::last_os_error()
        ));
    }
    // What the operator requires stays too, or /ready could never pass.
    let mut keep = needed();
    keep.extend(
        config
            .security
            .access_control
            .required_capabilities
            .iter()
            .filter_map(|c| caps::bit(c)),
    );
    keep.sort_unstable();
    keep.dedup();
    report.bounding_set_reduced = drop_capabilities(&keep, &mut report.problems);
    report.capabilities = caps::CapSet::current()
        .map(|c| c.names())
        .unwrap_or_default();
    report.landlock = if config.security.enable_landlock {
        if config.tools.deploy.enabled {
            // Its pins go under ebpf.bpffs_dir: it must exist for the rule that allows it.
            let base = &config.ebpf.bpffs_dir;
            if let Err(e) = crate::ebpf::pins::create(base, base) {
                report
                    .problems
                    .push(format!("Landlock: {e}; pinning will be refused"));
            }
        }
        let policy = fs_policy(config, config_file, socket_dir);
        landlock(&policy, &mut report.problems)
    } else {
        "off (security.enable_landlock): a Landlock domain may not read other processes' \
         /proc entries, which list_* holders and profile symbolization need"
            .into()
    };
    report.seccomp = seccomp(&mut report.problems);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filesystem_policy_follows_the_configuration() {
        let mut config = Config::default();
        config.security.audit_log = PathBuf::from("/var/log/ebpf-mcp/audit.log");
        config.observability.logging.file = Some(PathBuf::from("/var/log/ebpf-mcp/server.log"));
        let sock = Path::new("/run/ebpf-mcp");
        // The trace tier reads anywhere: uprobe targets and profiled binaries can be.
        let p = fs_policy(&config, None, Some(sock));
        assert_eq!(p.read, [PathBuf::from("/")]);
        assert!(p.write.contains(&PathBuf::from("/var/log/ebpf-mcp")));
        assert!(p.write.contains(&config.ebpf.bpffs_dir));
        assert!(p.write.contains(&sock.to_path_buf()));
        // Without it, only what the other tools read.
        config.tools.trace.enabled = false;
        config.tools.deploy.allowed_dirs = vec![PathBuf::from("/srv/bpf")];
        config.security.access_control.tokens_file = Some(PathBuf::from("/etc/ebpf-mcp/tokens"));
        let p = fs_policy(&config, Some(Path::new("/etc/ebpf-mcp/config.yaml")), None);
        for want in [
            "/proc",
            "/sys",
            "/etc",
            "/srv/bpf",
            "/etc/ebpf-mcp/config.yaml",
            "/etc/ebpf-mcp/tokens",
        ] {
            assert!(
                p.read.contains(&PathBuf::from(want)),
                "{want}: {:?}",
                p.read
            );
        }
        assert!(!p.read.contains(&PathBuf::from("/")));
        // No audit log, no audit directory.
        config.security.enable_audit = false;
        config.observability.logging.file = None;
        let p = fs_policy(&config, None, None);
        assert_eq!(p.write, [config.ebpf.bpffs_dir.clone()]);
    }
}
