//! What /proc says about one process (for `process_info`), and which container a cgroup
//! path belongs to. Every read is bounded: a command line of megabytes costs a few KiB.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Arguments of a command line kept, and bytes kept of each and of all of them.
pub const MAX_ARGS: usize = 64;
pub const MAX_ARG_BYTES: usize = 256;
pub const MAX_CMDLINE_BYTES: usize = 4096;

/// One process as /proc shows it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub comm: String,
    /// R (running), S (sleeping), D (disk sleep), T (stopped), Z (zombie)…
    pub state: String,
    pub ppid: u32,
    pub threads: u32,
    /// When it started (from its start time in clock ticks after boot).
    pub started: SystemTime,
    /// Real and effective user and group ids.
    pub uid: (u32, u32),
    pub gid: (u32, u32),
}

/// The fields of /proc/PID/stat and /proc/PID/status that `Process` holds. `None` when the
/// process is gone (or the texts are not what the kernel writes).
pub fn read(pid: u32) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse(
        pid,
        &stat,
        &status,
        super::host::boot_time(),
        ticks_per_second(),
    )
}

fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|n| u64::try_from(n).ok())
        .filter(|n| *n > 0)
        .unwrap_or(100)
}

fn parse(pid: u32, stat: &str, status: &str, boot: SystemTime, hz: u64) -> Option<Process> {
    // The name (field 2) is in parentheses and may hold anything: fields follow the last `)`.
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): field N is rest[N - 3].
    let field = |n: usize| fields.get(n - 3).copied();
    let ticks: u64 = field(22)?.parse().ok()?;
    let ids = |key: &str| -> Option<(u32, u32)> {
        let line = status.lines().find_map(|l| l.strip_prefix(key))?;
        let mut it = line.split_whitespace().map(|n| n.parse::<u32>().ok());
        Some((it.next()??, it.next()??))
    };
    Some(Process {
        pid,
        comm,
        state: field(3)?.to_owned(),
        ppid: field(4)?.parse().ok()?,
        threads: field(20)?.parse().ok()?,
        started: crate::time::add(
            boot,
            Duration::from_millis(ticks.saturating_mul(1000) / hz.max(1)),
        ),
        uid: ids("Uid:")?,
        gid: ids("Gid:")?,
    })
}

/// The command line of `pid`, bounded (see the constants); `true` when something was cut.
/// Empty for kernel threads and zombies.
pub fn cmdline(pid: u32) -> (Vec<String>, bool) {
    use std::io::Read;
    let mut raw = Vec::new();
    let cut_total = std::fs::File::open(format!("/proc/{pid}/cmdline"))
        .and_then(|f| f.take(MAX_CMDLINE_BYTES as u64 + 1).read_to_end(&mut raw))
        .is_ok_and(|n| n > MAX_CMDLINE_BYTES);
    let (args, cut) = split_cmdline(&raw[..raw.len().min(MAX_CMDLINE_BYTES)]);
    (args, cut || cut_total)
}

fn split_cmdline(raw: &[u8]) -> (Vec<String>, bool) {
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    if raw.is_empty() {
        return (Vec::new(), false);
    }
    let mut cut = false;
    let mut args = Vec::new();
    for arg in raw.split(|&b| b == 0) {
        if args.len() == MAX_ARGS {
            cut = true;
            break;
        }
        let kept = &arg[..arg.len().min(MAX_ARG_BYTES)];
        cut |= kept.len() < arg.len();
        args.push(String::from_utf8_lossy(kept).into_owned());
    }
    (args, cut)
}

/// The executable's path (None for kernel threads, or when it cannot be read).
pub fn exe(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// The process's cgroup path (see [`cgroup_of`]) and the container that any of its
/// hierarchies' paths names (v2 first, then v1: with cgroup v1 a runtime may place it in
/// some controllers only).
pub fn cgroup(pid: u32) -> (Option<String>, Option<Container>) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
        return (None, None);
    };
    // (v1?, path): the v2 line ("0::…") sorts first.
    let mut paths: Vec<(bool, &str)> = text
        .lines()
        .filter_map(|l| {
            let (id, rest) = l.split_once(':')?;
            Some((id != "0", rest.split_once(':')?.1))
        })
        .collect();
    paths.sort_by_key(|(v1, _)| *v1);
    let container = paths.iter().find_map(|(_, p)| container_of(p));
    (cgroup_of(&text), container)
}

/// The container this server runs in: named by its cgroup path, or, in a private cgroup
/// namespace (where that path is `/`), by the container's own files that docker mounts
/// (`/var/lib/docker/containers/ID/hostname`, seen in mountinfo).
pub fn own_container() -> Option<Container> {
    if let (_, Some(c)) = cgroup(std::process::id()) {
        return Some(c);
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    container_of_mounts(&mounts)
}

fn container_of_mounts(mountinfo: &str) -> Option<Container> {
    mountinfo.lines().find_map(|line| {
        // The 4th field is the mounted path within its filesystem.
        let root = line.split(' ').nth(3)?;
        let (_, rest) = root.split_once("/containers/")?;
        let id = rest.split('/').next()?;
        is_container_id(id).then(|| Container {
            id: id.to_owned(),
            runtime: "docker",
            pod_uid: None,
        })
    })
}

/// The v2 path (`0::/…`) when there is one below the root, else the v1 path of the
/// hierarchy with the most specific (longest) path.
fn cgroup_of(text: &str) -> Option<String> {
    let mut v1: Option<&str> = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(_controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && path != "/" {
            return Some(path.to_owned());
        }
        if id != "0" && v1.is_none_or(|best| path.len() > best.len()) {
            v1 = Some(path);
        }
    }
    v1.or_else(|| text.lines().find_map(|l| l.strip_prefix("0::")))
        .map(str::to_owned)
}

/// The container a cgroup path belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The container id: 64 hex digits.
    pub id: String,
    /// Which runtime's layout named it: docker, containerd, cri-o, podman, or `unknown`
    /// (a bare id under a kubepods or other tree).
    pub runtime: &'static str,
    /// Kubernetes: the pod's UID, from the kubepods part of the path.
    pub pod_uid: Option<String>,
}

/// Reads a container id out of a cgroup path, in the layouts of docker (cgroupfs
/// `/docker/ID`, systemd `docker-ID.scope`), containerd (`cri-containerd-ID.scope`, or a
/// bare ID under kubepods), cri-o (`crio-ID.scope`, `crio-conmon-` excluded), podman
/// (`libpod-ID.scope`, `/libpod_parent/libpod-ID`), cgroup v1 or v2.
pub fn container_of(path: &str) -> Option<Container> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let pod_uid = parts.iter().find_map(|p| pod_uid_of(p));
    for (i, part) in parts.iter().enumerate().rev() {
        let name = part.strip_suffix(".scope").unwrap_or(part);
        let (runtime, id) = [
            ("docker-", "docker"),
            ("cri-containerd-", "containerd"),
            ("crio-", "cri-o"),
            ("libpod-", "podman"),
        ]
        .iter()
        .find_map(|(prefix, runtime)| name.strip_prefix(prefix).map(|id| (*runtime, id)))
        .unwrap_or_else(|| {
            let runtime = match i.checked_sub(1).map(|p| parts[p]) {
                Some("docker") => "docker",
                _ if pod_uid.is_some() => "containerd",
                _ => "unknown",
            };
            (runtime, name)
        });
        if is_container_id(id) {
            return Some(Container {
                id: id.to_owned(),
                runtime,
                pod_uid,
            });
        }
    }
    None
}

/// The cgroup v2 directories of running containers whose id starts with `prefix`, under
/// `root`: for each such container its id and the deepest directory naming it (where its
/// processes are: podman's `libpod-ID.scope/container`). Walks at most `MAX_DIRS`
/// directories, 8 deep.
pub fn container_cgroups(root: &Path, prefix: &str) -> Vec<(String, PathBuf)> {
    const MAX_DIRS: usize = 100_000;
    let mut found: Vec<(String, PathBuf, usize)> = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    let mut seen = 0;
    while let Some((dir, depth)) = stack.pop() {
        seen += 1;
        if seen > MAX_DIRS {
            break;
        }
        if let Ok(rel) = dir.strip_prefix(root)
            && let Some(c) = container_of(&format!("/{}", rel.display()))
            && c.id.starts_with(prefix)
        {
            match found.iter_mut().find(|(id, _, _)| *id == c.id) {
                Some(entry) if entry.2 < depth => (entry.1, entry.2) = (dir.clone(), depth),
                Some(_) => {}
                None => found.push((c.id, dir.clone(), depth)),
            }
        }
        if depth < 8
            && let Ok(entries) = std::fs::read_dir(&dir)
        {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((e.path(), depth + 1));
                }
            }
        }
    }
    found.into_iter().map(|(id, dir, _)| (id, dir)).collect()
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `pod0a1b…` (cgroupfs) or `kubepods-burstable-pod0a1b_…slice` (systemd): the pod's UID.
fn pod_uid_of(part: &str) -> Option<String> {
    let name = part.strip_suffix(".slice").unwrap_or(part);
    let at = name.rfind("pod")?;
    let uid = name[at + 3..].replace('_', "-");
    let valid = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    (valid && (at == 0 || name[..at].ends_with('-'))).then_some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";

    #[test]
    fn stat_and_status_parse_with_odd_names() {
        let stat = "42 (a) b (c)) S 7 42 42 0 -1 4194560 1 0 0 0 3 4 0 0 20 0 5 0 250 1 1";
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t100\t100\t100\t100\n";
        let boot = SystemTime::UNIX_EPOCH;
        let p = parse(42, stat, status, boot, 100).unwrap();
        assert_eq!(p.comm, "a) b (c)");
        assert_eq!((p.state.as_str(), p.ppid, p.threads), ("S", 7, 5));
        assert_eq!(
            p.started,
            SystemTime::UNIX_EPOCH + Duration::from_millis(2500)
        );
        assert_eq!((p.uid, p.gid), ((1000, 0), (100, 100)));
        assert!(parse(42, "garbage", status, boot, 100).is_none());
    }

    #[test]
    fn this_process_reads_back() {
        let me = read(std::process::id()).unwrap();
        assert_eq!(me.ppid, std::os::unix::process::parent_id());
        assert!(me.threads >= 1 && me.started <= SystemTime::now());
        let (args, _) = cmdline(std::process::id());
        assert!(!args.is_empty());
        assert!(exe(std::process::id()).is_some());
        assert!(read(u32::MAX).is_none());
    }

    #[test]
    fn command_lines_are_bounded() {
        let (args, cut) = split_cmdline(b"ls\0-l\0/tmp\0");
        assert_eq!(
            (args.as_slice(), cut),
            (["ls", "-l", "/tmp"].map(String::from).as_slice(), false)
        );
        let long = [vec![b'x'; 300], vec![0]].concat();
        let (args, cut) = split_cmdline(&long);
        assert!(cut && args[0].len() == MAX_ARG_BYTES);
        let many = b"a\0".repeat(100);
        let (args, cut) = split_cmdline(&many);
        assert!(cut && args.len() == MAX_ARGS);
        assert_eq!(split_cmdline(b""), (Vec::new(), false));
    }

    #[test]
    fn the_v2_path_wins_else_the_longest_v1_path() {
        assert_eq!(
            cgroup_of("0::/user.slice/session-1.scope\n").unwrap(),
            "/user.slice/session-1.scope"
        );
        let v1 = "12:memory:/docker/abc\n3:cpu,cpuacct:/\n1:name=systemd:/docker/abc/x\n0::/\n";
        assert_eq!(cgroup_of(v1).unwrap(), "/docker/abc/x");
        assert_eq!(cgroup_of("0::/\n").unwrap(), "/");
    }

    #[test]
    fn a_private_cgroup_namespace_still_names_the_docker_container() {
        let id = "9c0f31c899d48e651a715515d1fe20be7eefc44ca69bf5dbc25068a65fca1b59";
        let mountinfo = format!(
            "1 0 8:1 / / rw - overlay overlay rw\n\
             2 1 254:0 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 /dev/vda rw\n"
        );
        let c = container_of_mounts(&mountinfo).unwrap();
        assert_eq!((c.id.as_str(), c.runtime), (id, "docker"));
        assert!(container_of_mounts("1 0 8:1 / / rw - ext4 /dev/vda rw\n").is_none());
    }

    #[test]
    fn container_ids_in_every_runtime_layout() {
        let uid = "0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9";
        let under = uid.replace('-', "_");
        for (path, runtime, pod) in [
            (format!("/docker/{ID}"), "docker", None),
            (format!("/system.slice/docker-{ID}.scope"), "docker", None),
            (
                format!("/kubepods/burstable/pod{uid}/{ID}"),
                "containerd",
                Some(uid),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{under}.slice/cri-containerd-{ID}.scope"
                ),
                "containerd",
                Some(uid),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{under}.slice/crio-{ID}.scope"),
                "cri-o",
                Some(uid),
            ),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                "podman",
                None,
            ),
            (format!("/libpod_parent/libpod-{ID}"), "podman", None),
        ] {
            let c = container_of(&path).unwrap_or_else(|| panic!("{path}"));
            assert_eq!((c.id.as_str(), c.runtime), (ID, runtime), "{path}");
            assert_eq!(c.pod_uid.as_deref(), pod, "{path}");
            // Events know a cgroup's directory and its parent only: that is enough.
            let parts: Vec<&str> = path.rsplitn(3, '/').collect();
            let last_two = format!("/{}/{}", parts[1], parts[0]);
            assert_eq!(container_of(&last_two), Some(c), "{last_two}");
        }
        for path in [
            "/",
            "/user.slice/user-0.slice/session-3.scope",
            "/docker/abc",
            format!("/system.slice/crio-conmon-{ID}.scope").as_str(),
        ] {
            assert_eq!(container_of(path), None, "{path}");
        }
    }
}
