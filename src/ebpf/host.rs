//! Facts about the running kernel that decide what eBPF can do here (release, lockdown, BTF,
//! JIT, sysctls, mounts, capabilities, build options), and the start-up preparation of the
//! host: mounting the pseudo filesystems the server needs and raising the memlock limit.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use schemars::JsonSchema;
use serde::Serialize;

use super::caps::{CapSet, Capabilities};
use super::sys;

pub const TRACEFS: &str = "/sys/kernel/tracing";
pub const BPFFS: &str = "/sys/fs/bpf";
pub const SECURITYFS: &str = "/sys/kernel/security";
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Kernel build options `info` reports: the ones that decide eBPF features.
const CONFIG_OPTIONS: &[&str] = &[
    "CONFIG_BPF_SYSCALL",
    "CONFIG_BPF_JIT",
    "CONFIG_BPF_JIT_ALWAYS_ON",
    "CONFIG_BPF_EVENTS",
    "CONFIG_BPF_LSM",
    "CONFIG_BPF_KPROBE_OVERRIDE",
    "CONFIG_KPROBES",
    "CONFIG_UPROBES",
    "CONFIG_TRACEPOINTS",
    "CONFIG_FTRACE_SYSCALLS",
    "CONFIG_FUNCTION_TRACER",
    "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS",
    "CONFIG_DEBUG_INFO_BTF",
    "CONFIG_DEBUG_INFO_BTF_MODULES",
    "CONFIG_CGROUP_BPF",
    "CONFIG_NET_CLS_BPF",
    "CONFIG_NET_SCH_INGRESS",
    "CONFIG_XDP_SOCKETS",
    "CONFIG_SECURITY_LOCKDOWN_LSM",
];

/// Everything `info` says about the kernel.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct KernelFacts {
    /// `uname -r`.
    pub release: String,
    /// `uname -v`.
    pub version: String,
    /// `uname -m`.
    pub arch: String,
    pub lockdown: Lockdown,
    pub btf: BtfFacts,
    pub jit: JitFacts,
    /// kernel.unprivileged_bpf_disabled.
    pub unprivileged_bpf_disabled: SysctlFact,
    /// Whether per-program run time is being counted: kernel.bpf_stats_enabled, or this
    /// server holding the statistics on to watch its deployments' CPU.
    pub bpf_stats_enabled: bool,
    pub mounts: Mounts,
    /// Effective capabilities of the server process.
    pub capabilities: Capabilities,
    pub memlock: Memlock,
    /// Build options relevant to eBPF.
    pub config: KernelConfig,
}

/// Kernel lockdown (/sys/kernel/security/lockdown).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Lockdown {
    /// none, integrity, confidentiality, or unknown.
    pub mode: String,
    /// What the mode means for eBPF, or why it is unknown.
    pub detail: String,
}

/// Kernel type information (BTF).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BtfFacts {
    /// /sys/kernel/btf/vmlinux exists: CO-RE and BTF-typed programs can work.
    pub vmlinux: bool,
    /// Size of the vmlinux BTF in bytes (0 when absent).
    pub vmlinux_bytes: u64,
    /// Kernel modules that ship their own BTF.
    pub modules: u32,
}

/// The BPF just-in-time compiler.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct JitFacts {
    /// net.core.bpf_jit_enable is non-zero.
    pub enabled: bool,
    /// net.core.bpf_jit_enable (0 off, 1 on, 2 on with debug output).
    pub bpf_jit_enable: i64,
    /// net.core.bpf_jit_harden (0 off, 1 unprivileged, 2 all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bpf_jit_harden: Option<i64>,
    /// The kernel cannot run BPF without the JIT (CONFIG_BPF_JIT_ALWAYS_ON).
    pub always_on: bool,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SysctlFact {
    /// The sysctl's value.
    pub value: i64,
    /// What the value means.
    pub meaning: String,
}

/// Pseudo filesystems eBPF tooling needs.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Mounts {
    /// Tracepoint ids and formats (/sys/kernel/tracing).
    pub tracefs: MountState,
    /// Pinned BPF objects (/sys/fs/bpf).
    pub bpffs: MountState,
    /// Lockdown state (/sys/kernel/security).
    pub securityfs: MountState,
    /// cgroup v2, for cgroup programs and filters.
    pub cgroup2: MountState,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct MountState {
    /// The filesystem is mounted somewhere.
    pub mounted: bool,
    /// Where it is mounted, or where the server expects it.
    pub path: String,
    /// This server mounted it at start (`ebpf.auto_mount`).
    pub mounted_by_server: bool,
}

/// RLIMIT_MEMLOCK of the server process.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Memlock {
    /// RLIMIT_MEMLOCK has no limit.
    pub unlimited: bool,
    /// The limit in bytes when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    /// How BPF memory is accounted on this kernel.
    pub accounting: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct KernelConfig {
    /// File the options were read from, or why none could be.
    pub source: String,
    /// Option → "y", "m", or "n" (not set). Empty when no config file is readable.
    pub options: BTreeMap<String, String>,
}

/// What start-up preparation did, kept for `info` and the log.
#[derive(Debug, Clone, Default)]
pub struct HostSetup {
    /// Filesystems this process mounted, as (fstype, path).
    pub mounted: Vec<(String, String)>,
    /// Mounts that were missing and could not be made, with the reason.
    pub mount_problems: Vec<String>,
    pub memlock_raised: bool,
}

static SETUP: OnceLock<HostSetup> = OnceLock::new();

/// Prepares the host once per process: mounts missing tracefs, bpffs and securityfs (when
/// `auto_mount` and CAP_SYS_ADMIN allow) and raises RLIMIT_MEMLOCK. Never fails: what could
/// not be done is logged and reported by `info`.
pub fn prepare(auto_mount: bool) -> &'static HostSetup {
    SETUP.get_or_init(|| {
        let mut setup = HostSetup::default();
        let caps = CapSet::current().ok();
        let mounts = read_mounts().unwrap_or_default();
        let wanted = [
            ("tracefs", TRACEFS, false),
            ("bpf", BPFFS, false),
            ("securityfs", SECURITYFS, true),
        ];
        for (fstype, path, read_only) in wanted {
            if mounts.iter().any(|m| m.fstype == fstype) {
                continue;
            }
            if !auto_mount {
                setup.mount_problems.push(format!(
                    "{fstype} is not mounted and ebpf.auto_mount is off; mount it with \
                     `mount -t {fstype} none {path}`"
                ));
                continue;
            }
            if !caps.is_some_and(CapSet::sys_admin) {
                setup.mount_problems.push(format!(
                    "{fstype} is not mounted and mounting it needs CAP_SYS_ADMIN; mount it \
                     with `sudo mount -t {fstype} none {path}`"
                ));
                continue;
            }
            match sys::mount_pseudo(fstype, Path::new(path), read_only) {
                Ok(()) => {
                    tracing::info!(fstype, path, read_only, "mounted missing filesystem");
                    setup.mounted.push((fstype.to_owned(), path.to_owned()));
                }
                Err(e) => {
                    tracing::warn!(fstype, path, error = %e, "could not mount");
                    setup
                        .mount_problems
                        .push(format!("{fstype} at {path} could not be mounted: {e}"));
                }
            }
        }
        match sys::raise_memlock_limit() {
            Ok(()) => setup.memlock_raised = true,
            // Kernels since 5.11 charge BPF memory to the memory cgroup instead.
            Err(e) => tracing::debug!(error = %e, "RLIMIT_MEMLOCK not raised (memcg accounting)"),
        }
        setup
    })
}

/// The preparation done so far (empty if `prepare` was never called).
pub fn setup() -> HostSetup {
    SETUP.get().cloned().unwrap_or_default()
}

/// One line of /proc/self/mountinfo: where and what.
#[derive(Debug, Clone)]
pub struct MountEntry {
    pub path: String,
    pub fstype: String,
}

pub fn read_mounts() -> std::io::Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text))
}

fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let path = left.split(' ').nth(4)?;
            let fstype = right.split(' ').next()?;
            Some(MountEntry {
                path: unescape_mount_path(path),
                fstype: fstype.to_owned(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mount_path(p: &str) -> String {
    let bytes = p.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| {
            bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)) && d[0] <= b'3'
        });
        if let Some(d) = octal {
            out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where a filesystem of `fstype` is mounted, preferring `preferred`.
pub fn mount_point(mounts: &[MountEntry], fstype: &str, preferred: &str) -> Option<String> {
    let mut found = mounts.iter().filter(|m| m.fstype == fstype);
    let first = found.clone().next()?;
    Some(
        found
            .find(|m| m.path == preferred)
            .unwrap_or(first)
            .path
            .clone(),
    )
}

/// The tracefs root, whether mounted at /sys/kernel/tracing or under debugfs.
pub fn tracefs_root() -> Option<PathBuf> {
    let mounts = read_mounts().ok()?;
    if let Some(p) = mount_point(&mounts, "tracefs", TRACEFS) {
        return Some(PathBuf::from(p));
    }
    mount_point(&mounts, "debugfs", "/sys/kernel/debug")
        .map(|p| PathBuf::from(p).join("tracing"))
        .filter(|p| p.join("events").is_dir())
}

/// The first cgroup v2 mount, if any.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = read_mounts().ok()?;
    mount_point(&mounts, "cgroup2", "/sys/fs/cgroup").map(PathBuf::from)
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn read_i64(path: &str) -> Option<i64> {
    read_trimmed(path)?.parse().ok()
}

/// Gathers the facts. Cheap (file reads only); nothing here needs privileges except reading
/// the lockdown file, which needs securityfs mounted.
pub fn kernel_facts() -> KernelFacts {
    let (release, version, arch) = sys::uname().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "uname failed");
        (
            String::from("unknown"),
            String::new(),
            std::env::consts::ARCH.into(),
        )
    });
    let mounts = read_mounts().unwrap_or_default();
    let setup = setup();
    let config = kernel_config(&release).clone();
    let caps = CapSet::current()
        .map(CapSet::summary)
        .unwrap_or(Capabilities {
            effective: Vec::new(),
            bpf: false,
            perfmon: false,
            net_admin: false,
            sys_admin: false,
        });
    KernelFacts {
        lockdown: lockdown(&mounts),
        btf: btf_facts(),
        jit: JitFacts {
            bpf_jit_enable: read_i64("/proc/sys/net/core/bpf_jit_enable").unwrap_or(0),
            enabled: read_i64("/proc/sys/net/core/bpf_jit_enable").is_some_and(|v| v != 0),
            bpf_jit_harden: read_i64("/proc/sys/net/core/bpf_jit_harden"),
            always_on: config
                .options
                .get("CONFIG_BPF_JIT_ALWAYS_ON")
                .map(String::as_str)
                == Some("y"),
        },
        unprivileged_bpf_disabled: {
            let value = read_i64("/proc/sys/kernel/unprivileged_bpf_disabled").unwrap_or(-1);
            let meaning = match value {
                0 => "unprivileged users may load BPF programs",
                1 => "unprivileged BPF is disabled until reboot",
                2 => "unprivileged BPF is disabled; an admin may re-enable it",
                _ => "unknown (sysctl not readable)",
            };
            SysctlFact {
                value,
                meaning: meaning.into(),
            }
        },
        bpf_stats_enabled: read_i64("/proc/sys/kernel/bpf_stats_enabled").is_some_and(|v| v != 0),
        mounts: Mounts {
            tracefs: mount_state(&mounts, &setup, "tracefs", TRACEFS),
            bpffs: mount_state(&mounts, &setup, "bpf", BPFFS),
            securityfs: mount_state(&mounts, &setup, "securityfs", SECURITYFS),
            cgroup2: mount_state(&mounts, &setup, "cgroup2", "/sys/fs/cgroup"),
        },
        capabilities: caps,
        memlock: match sys::memlock_limit() {
            Ok(limit) => Memlock {
                unlimited: limit.is_none(),
                limit_bytes: limit,
                accounting: memlock_accounting(&release),
            },
            Err(_) => Memlock {
                unlimited: false,
                limit_bytes: None,
                accounting: memlock_accounting(&release),
            },
        },
        config,
        release,
        version,
        arch,
    }
}

fn memlock_accounting(release: &str) -> String {
    let at_least_5_11 = parse_release(release).is_some_and(|v| v >= (5, 11));
    if at_least_5_11 {
        "memory cgroup (kernel >= 5.11): RLIMIT_MEMLOCK does not limit BPF".into()
    } else {
        "RLIMIT_MEMLOCK (kernel < 5.11)".into()
    }
}

/// (major, minor) of a release string like "6.18.44-fc".
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn mount_state(
    mounts: &[MountEntry],
    setup: &HostSetup,
    fstype: &str,
    default: &str,
) -> MountState {
    let found = mount_point(mounts, fstype, default);
    MountState {
        mounted: found.is_some(),
        mounted_by_server: setup.mounted.iter().any(|(t, _)| t == fstype),
        path: found.unwrap_or_else(|| default.to_owned()),
    }
}

fn lockdown(mounts: &[MountEntry]) -> Lockdown {
    let Some(root) = mount_point(mounts, "securityfs", SECURITYFS) else {
        return Lockdown {
            mode: "unknown".into(),
            detail: "securityfs is not mounted, so /sys/kernel/security/lockdown cannot be \
                     read; mount it read-only or enable ebpf.auto_mount"
                .into(),
        };
    };
    let path = Path::new(&root).join("lockdown");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Lockdown {
            mode: "none".into(),
            detail: "the lockdown LSM is not active (no lockdown file)".into(),
        };
    };
    let mode = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
        .unwrap_or("unknown")
        .to_owned();
    let detail = match mode.as_str() {
        "none" => "no lockdown restrictions",
        "integrity" => {
            "integrity lockdown: features that can modify the running kernel are refused, \
             bpf_probe_write_user among them"
        }
        "confidentiality" => {
            "confidentiality lockdown: in addition to integrity, features that can read \
             kernel memory are refused: kprobes, bpf_probe_read_kernel, perf, tracefs"
        }
        _ => "unrecognised lockdown mode",
    };
    Lockdown {
        mode,
        detail: detail.into(),
    }
}

fn btf_facts() -> BtfFacts {
    let vmlinux_bytes = std::fs::metadata(VMLINUX_BTF).map(|m| m.len()).ok();
    let modules = std::fs::read_dir("/sys/kernel/btf")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name() != "vmlinux")
                .count()
        })
        .unwrap_or(0);
    BtfFacts {
        vmlinux: vmlinux_bytes.is_some(),
        vmlinux_bytes: vmlinux_bytes.unwrap_or(0),
        modules: u32::try_from(modules).unwrap_or(u32::MAX),
    }
}

/// The kernel build configuration, read once per process (it cannot change while the kernel
/// runs) from /proc/config.gz or /boot/config-RELEASE.
fn kernel_config(release: &str) -> &'static KernelConfig {
    static CONFIG: OnceLock<KernelConfig> = OnceLock::new();
    CONFIG.get_or_init(|| read_kernel_config(release))
}

fn read_kernel_config(release: &str) -> KernelConfig {
    let boot = format!("/boot/config-{release}");
    let text = read_gzip("/proc/config.gz")
        .map(|t| ("/proc/config.gz".to_owned(), t))
        .or_else(|| {
            std::fs::read_to_string(&boot)
                .ok()
                .map(|t| (boot.clone(), t))
        });
    let Some((source, text)) = text else {
        return KernelConfig {
            source: format!("unavailable (no /proc/config.gz, no {boot})"),
            options: BTreeMap::new(),
        };
    };
    let mut options: BTreeMap<String, String> = CONFIG_OPTIONS
        .iter()
        .map(|o| ((*o).to_owned(), "n".to_owned()))
        .collect();
    for line in text.lines() {
        if let Some((key, value)) = line.split_once('=')
            && let Some(slot) = options.get_mut(key)
        {
            *slot = value.trim_matches('"').to_owned();
        }
    }
    KernelConfig { source, options }
}

fn read_gzip(path: &str) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// Names of the kernel functions that BPF helper calls in translated code jump to: the
/// kernel stores each as an offset from `__bpf_call_base`. One pass over /proc/kallsyms;
/// empty when addresses are hidden (kptr_restrict) or the file is unreadable.
pub fn helper_call_symbols(offsets: &[i32]) -> std::collections::HashMap<i32, String> {
    let mut out = std::collections::HashMap::new();
    let Ok(text) = std::fs::read_to_string("/proc/kallsyms") else {
        return out;
    };
    let parse = |line: &str| -> Option<(u64, String)> {
        let mut f = line.split_whitespace();
        let addr = u64::from_str_radix(f.next()?, 16).ok()?;
        let _kind = f.next()?;
        Some((addr, f.next()?.to_owned()))
    };
    let Some(base) = text
        .lines()
        .filter_map(parse)
        .find(|(_, name)| name == "__bpf_call_base")
        .map(|(a, _)| a)
        .filter(|a| *a != 0)
    else {
        return out;
    };
    let wanted: std::collections::HashMap<u64, i32> = offsets
        .iter()
        .map(|off| (base.wrapping_add_signed(i64::from(*off)), *off))
        .collect();
    for (addr, name) in text.lines().filter_map(parse) {
        if let Some(off) = wanted.get(&addr) {
            out.entry(*off).or_insert(name);
        }
    }
    out
}

/// Whether the kernel was built with `option` (`Some(false)` when the config says not set,
/// `None` when no config is readable).
pub fn config_enabled(config: &KernelConfig, option: &str) -> Option<bool> {
    if config.options.is_empty() {
        return None;
    }
    config.options.get(option).map(|v| v == "y" || v == "m")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let text = "36 25 0:31 / /sys/kernel/tracing rw,nosuid - tracefs tracefs rw\n\
                    40 25 0:33 / /sys/fs/bpf rw - bpf none rw,mode=700\n\
                    41 25 0:34 / /mnt/with\\040space rw - tmpfs tmpfs rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].fstype, "tracefs");
        assert_eq!(m[1].path, "/sys/fs/bpf");
        assert_eq!(m[2].path, "/mnt/with space");
        assert_eq!(
            mount_point(&m, "bpf", BPFFS).as_deref(),
            Some("/sys/fs/bpf")
        );
        assert_eq!(mount_point(&m, "securityfs", SECURITYFS), None);
    }

    #[test]
    fn parses_release_versions() {
        assert_eq!(parse_release("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_release("5.4.0"), Some((5, 4)));
        assert_eq!(parse_release("garbage"), None);
    }
}

/// A running process, told apart from a later one that reuses its pid by its start time
/// (field 22 of /proc/PID/stat, in clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: u32,
    start: u64,
}

impl ProcessId {
    /// The process `pid` if it is alive now (not a zombie).
    pub fn alive(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The name (field 2) is in parentheses and may hold spaces: fields follow the last `)`.
        let rest = stat.rsplit_once(')')?.1;
        let mut fields = rest.split_whitespace();
        let state = fields.next()?;
        if matches!(state, "Z" | "X" | "x") {
            return None;
        }
        // After the state: ppid, pgrp, session, tty, tpgid, flags, minflt, cminflt, majflt,
        // cmajflt, utime, stime, cutime, cstime, priority, nice, threads, itrealvalue, start.
        let start = fields.nth(18)?.parse().ok()?;
        Some(Self { pid, start })
    }

    /// Whether this very process still runs.
    pub fn still_alive(&self) -> bool {
        Self::alive(self.pid).is_some_and(|now| now == *self)
    }
}

/// When the machine booted, as wall-clock time: the kernel stamps BPF events and load
/// times in nanoseconds since boot (CLOCK_BOOTTIME, which counts suspend too).
pub fn boot_time() -> std::time::SystemTime {
    use nix::time::{ClockId, clock_gettime};
    // CLOCK_BOOTTIME always exists on Linux; were it to fail, boot would be "now".
    let since_boot = clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(std::time::Duration::from)
        .unwrap_or_default();
    std::time::SystemTime::now()
        .checked_sub(since_boot)
        .unwrap_or(std::time::SystemTime::UNIX_EPOCH)
}

/// Whether the kernel exposes its own BTF (/sys/kernel/btf/vmlinux), which the gadgets need.
pub fn has_vmlinux_btf() -> bool {
    Path::new("/sys/kernel/btf/vmlinux").exists()
}

/// The name (`sda`, `nvme0n1`) of block device `major:minor`, from sysfs.
pub fn block_device_name(major: u32, minor: u32) -> Option<String> {
    std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME=").map(str::to_owned))
}

/// Whether the kernel.bpf_stats_enabled sysctl has run-time statistics on.
pub fn bpf_stats_sysctl() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() != "0")
}

/// The supplementary groups of process `pid` (empty if it is gone).
pub fn process_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// A file a process has mapped (one line of /proc/PID/maps with a path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedFile {
    /// Its path as the process names it (in its own mount namespace).
    pub path: String,
    /// The mapping: `/proc/PID/map_files/START-END` opens this very file.
    pub start: u64,
    pub end: u64,
    /// Where in the file the mapping starts.
    pub offset: u64,
    pub executable: bool,
    /// The file was deleted or replaced since it was mapped (`(deleted)`).
    pub deleted: bool,
}

/// What the start of an ELF file says about where its code is: its GNU build id and its
/// loadable segments.
#[derive(Debug, Clone, Default)]
pub struct ElfHead {
    /// Hex; `None` when the file has no build-id note.
    pub build_id: Option<String>,
    /// PT_LOAD segments: (file offset, virtual address, size in the file).
    loads: Vec<(u64, u64, u64)>,
}

impl ElfHead {
    /// The ELF virtual address of a file offset (what `addr2line -e FILE` and debuggers
    /// take), if a loadable segment holds it.
    pub fn address(&self, file_offset: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|(off, _, size)| (*off..off.saturating_add(*size)).contains(&file_offset))
            .map(|(off, vaddr, _)| file_offset - off + vaddr)
    }
}

/// The [`ElfHead`] of the file a mapping of process `pid` maps, read from its first 64 KiB
/// (program headers and the notes they point to) through `/proc/PID/map_files`: the very
/// file mapped, in whatever mount namespace. `None` when it is not a 64-bit ELF file.
pub fn elf_head(pid: u32, m: &MappedFile) -> Option<ElfHead> {
    use object::elf;
    use object::read::elf::{FileHeader, ProgramHeader};
    use std::io::Read;
    let path = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
    let file = std::fs::File::open(path).ok()?;
    let mut head = Vec::with_capacity(64 * 1024);
    file.take(64 * 1024).read_to_end(&mut head).ok()?;
    let data = head.as_slice();
    let header = elf::FileHeader64::<object::Endianness>::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let mut out = ElfHead::default();
    for segment in header.program_headers(endian, data).ok()? {
        if segment.p_type(endian) == elf::PT_LOAD {
            out.loads.push((
                segment.p_offset(endian),
                segment.p_vaddr(endian),
                segment.p_filesz(endian),
            ));
        }
        let Ok(Some(mut notes)) = segment.notes(endian, data) else {
            continue;
        };
        while let Ok(Some(note)) = notes.next() {
            if out.build_id.is_none()
                && note.name() == elf::ELF_NOTE_GNU
                && note.n_type(endian) == elf::NT_GNU_BUILD_ID
            {
                out.build_id = Some(note.desc().iter().map(|b| format!("{b:02x}")).collect());
            }
        }
    }
    Some(out)
}

/// The files process `pid` maps, each once, in address order. `NotFound` when there is no
/// such process.
pub fn mapped_files(pid: u32) -> std::io::Result<Vec<MappedFile>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    Ok(parse_maps(&text))
}

/// Every file mapping of process `pid` (empty when it is gone).
pub fn file_mappings(pid: u32) -> Vec<MappedFile> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|t| parse_mappings(&t))
        .unwrap_or_default()
}

/// The file mappings of a /proc/PID/maps text, each path once (its first mapping).
pub fn parse_maps(text: &str) -> Vec<MappedFile> {
    let mut out: Vec<MappedFile> = Vec::new();
    for m in parse_mappings(text) {
        if !out.iter().any(|o| o.path == m.path) {
            out.push(m);
        }
    }
    out
}

/// Every file mapping of a /proc/PID/maps text, in address order.
pub fn parse_mappings(text: &str) -> Vec<MappedFile> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut rest = line;
        let mut field = || {
            let t = rest.trim_start();
            let end = t.find(char::is_whitespace).unwrap_or(t.len());
            let (f, r) = t.split_at(end);
            rest = r;
            f
        };
        let (range, perms, offset, _dev, inode) = (field(), field(), field(), field(), field());
        let path = rest.trim_start();
        if inode.parse::<u64>().is_ok_and(|i| i == 0) || !path.starts_with('/') {
            continue;
        }
        let (path, deleted) = match path.strip_suffix(" (deleted)") {
            Some(p) => (p, true),
            None => (path, false),
        };
        let hex = |s: &str| u64::from_str_radix(s, 16).ok();
        let Some((Some(start), Some(end))) = range.split_once('-').map(|(a, b)| (hex(a), hex(b)))
        else {
            continue;
        };
        let Some(offset) = hex(offset) else {
            continue;
        };
        out.push(MappedFile {
            path: path.to_owned(),
            start,
            end,
            offset,
            executable: perms.contains('x'),
            deleted,
        });
    }
    out
}

#[cfg(test)]
mod maps_tests {
    use super::*;

    #[test]
    fn file_mappings_once_each_with_their_identity() {
        let text = "\
55d0c0a00000-55d0c0a28000 r--p 00000000 fe:01 1835123                    /usr/bin/python3.11
55d0c0a28000-55d0c0b00000 r-xp 00028000 fe:01 1835123                    /usr/bin/python3.11
7f3a40000000-7f3a40021000 rw-p 00000000 00:00 0 
7f3a41000000-7f3a41028000 r--p 00000000 08:02 393  /opt/my lib/libpython3.11.so.1.0 (deleted)
7ffd1c9e0000-7ffd1ca01000 rw-p 00000000 00:00 0                          [stack]
";
        let files = parse_maps(text);
        assert_eq!(files.len(), 2, "{files:?}");
        assert_eq!(files[0].path, "/usr/bin/python3.11");
        assert_eq!(
            (files[0].start, files[0].end),
            (0x55d0c0a00000, 0x55d0c0a28000)
        );
        assert!(!files[0].deleted && !files[0].executable);
        assert_eq!(files[1].path, "/opt/my lib/libpython3.11.so.1.0");
        assert!(files[1].deleted);
        let all = parse_mappings(text);
        assert_eq!(all.len(), 3);
        assert!(all[1].executable && all[1].offset == 0x28000);
    }

    #[test]
    fn the_elf_head_gives_the_build_id_and_code_addresses() {
        use object::{Object as _, ObjectSection as _};
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let here = the_elf_head_gives_the_build_id_and_code_addresses as *const () as u64;
        let all = parse_mappings(&std::fs::read_to_string("/proc/self/maps").unwrap());
        let m = all
            .iter()
            .find(|m| (m.start..m.end).contains(&here))
            .expect("this function is in a file mapping");
        assert_eq!(std::path::Path::new(&m.path), exe);
        let head = elf_head(std::process::id(), m).expect("the test binary is ELF");
        let whole = std::fs::read(&exe).unwrap();
        let elf = object::File::parse(whole.as_slice()).unwrap();
        let want = elf
            .build_id()
            .unwrap()
            .map(|id| id.iter().map(|b| format!("{b:02x}")).collect::<String>());
        assert_eq!(head.build_id, want);
        let text = elf.section_by_name(".text").unwrap();
        let at = head.address(here - m.start + m.offset).unwrap();
        assert!(
            (text.address()..text.address() + text.size()).contains(&at),
            "{at:#x}"
        );
        assert_eq!(head.address(u64::MAX), None);
    }

    #[test]
    fn this_process_maps_its_own_executable() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let files = mapped_files(std::process::id()).unwrap();
        assert!(
            files.iter().any(|m| std::path::Path::new(&m.path) == exe),
            "{files:?}"
        );
        assert_eq!(
            mapped_files(u32::MAX).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
    }
}
