//! uprobe: calls of one user-space function (`binary:symbol`), counted in the kernel per
//! process, or their latency from entry to return as log2 histograms.

use std::path::{Path, PathBuf};

use super::hist::{KEY_SIZE, decode_process_key};
use super::{Field, Gadget, Output};
use crate::ebpf::host::MappedFile;
use crate::ebpf::sys::PinnedFile;

pub const ENTRY: &str = "uprobe_entry";
pub const RETURN: &str = "uprobe_return";
/// events mode: one event per call with its argument registers (struct uprobe_event).
pub const CALL: &str = "uprobe_call";
/// events mode with `return: true`: the call is reported at its return.
pub const CALL_ENTER: &str = "uprobe_call_enter";
pub const CALL_RETURN: &str = "uprobe_call_return";
pub const EVENT_SIZE: usize = super::decode::HEADER + 8 * 8;
/// The fields a call reported at its return adds.
pub static RETURN_FIELDS: [Field; 2] = [
    Field::new("ret", "u64", "the return value register (x86-64: rax)"),
    Field::with_unit("duration_ns", "u64", "ns", "from entry to return"),
];
/// The fields of a call event after the common ones.
pub static CALL_FIELDS: [Field; 6] = [
    Field::new("arg0", "u64", "the first argument register (x86-64: rdi)"),
    Field::new("arg1", "u64", "the second (rsi)"),
    Field::new("arg2", "u64", "the third (rdx)"),
    Field::new("arg3", "u64", "the fourth (rcx)"),
    Field::new("arg4", "u64", "the fifth (r8)"),
    Field::new("arg5", "u64", "the sixth (r9)"),
];
pub const EVENT_LAYOUT: super::decode::Layout = super::decode::Layout {
    btf_struct: "uprobe_event",
    skip: super::decode::HEADER,
    fields: &[
        ("args", super::decode::At::new(0, 48)),
        ("ret", super::decode::At::new(48, 8)),
        ("duration_ns", super::decode::At::new(56, 8)),
    ],
};

/// Decodes a call event after the header: the arguments, and with `returned` the return
/// value and the duration.
pub fn decode_call(
    rest: &[u8],
    returned: bool,
    out: &mut serde_json::Map<String, serde_json::Value>,
) {
    for (i, f) in CALL_FIELDS.iter().enumerate() {
        let v = super::decode::At::new(i * 8, 8).u64(rest);
        out.insert(f.name.into(), v.into());
    }
    if returned {
        for (i, f) in RETURN_FIELDS.iter().enumerate() {
            let v = super::decode::At::new(48 + i * 8, 8).u64(rest);
            out.insert(f.name.into(), v.into());
        }
    }
}
/// The kernel's count table (key: struct hist_key).
pub const COUNTS: &str = "call_counts";

static FIELDS: [Field; 2] = [
    Field::new("pid", "u32", "the calling process"),
    Field::new("comm", "string", "its name"),
];

pub static GADGET: Gadget = Gadget {
    name: "uprobe",
    summary: "calls of a user-space function, `target: \"binary:symbol\"`: counts per process \
        (mode count), entry-to-return latency histograms (mode histogram), or one event per \
        call with its first six arguments, arg0..arg5 (mode events; with `return: true` at \
        the return, with `ret` and `duration_ns`)",
    object: aya::include_bytes_aligned!("../../bpf/obj/uprobe.bpf.o"),
    programs: &[],
    fields: &FIELDS,
    output: Output::KernelCounts(COUNTS),
    default_group_by: &["pid", "comm"],
    detail_fields: &["pid", "comm"],
    kernel_count: None,
    decode: decode_process_key,
    event_size: KEY_SIZE,
    layout: super::hist::KEY_LAYOUT,
    fixed_record: None,
};

/// Splits `binary:symbol`.
pub fn split_target(target: &str) -> Result<(&str, &str), String> {
    target
        .split_once(':')
        .filter(|(b, s)| !b.is_empty() && !s.is_empty())
        .ok_or_else(|| {
            format!(
                "`target` is `binary:symbol`, e.g. \"/usr/bin/bash:readline\" or \
                 \"libc.so.6:malloc\"; got `{target}`"
            )
        })
}

/// Why a uprobe target did not resolve.
#[derive(Debug, PartialEq, Eq)]
pub enum TargetError {
    /// Malformed, ambiguous, a script, or not among a process's files: the message says
    /// how to fix it.
    Invalid(String),
    /// A path that is missing, not a regular file or not readable: one answer for all, so
    /// the trace tier cannot learn which paths exist.
    NotFound,
    /// `pid` names no running process.
    NoProcess(u32),
}

/// A uprobe's file, found and opened (pinned: the file checked is the file attached).
#[derive(Debug)]
pub struct Resolved {
    /// How results name it: the path as the process maps it (with `pid`), or as found.
    pub shown: PathBuf,
    pub file: PinnedFile,
    /// Said with the result: why the probe may never fire.
    pub warning: Option<String>,
}

/// Finds the file of `binary` (a path, a program or library name, or with `pid` a file
/// that process maps) as the process that would run it sees it.
pub fn resolve(binary: &str, pid: Option<u32>) -> Result<Resolved, TargetError> {
    match pid {
        Some(pid) => resolve_in(binary, pid),
        None if binary.contains('/') => {
            let file = open_regular(Path::new(binary)).ok_or(TargetError::NotFound)?;
            Ok(Resolved {
                shown: file.real.clone(),
                file,
                warning: None,
            })
        }
        None => {
            let path = find_binary(binary).map_err(TargetError::Invalid)?;
            let file = open_regular(&path).ok_or(TargetError::NotFound)?;
            refuse_non_elf(binary, &file)?;
            Ok(Resolved {
                shown: file.real.clone(),
                file,
                warning: None,
            })
        }
    }
}

fn open_regular(path: &Path) -> Option<PinnedFile> {
    PinnedFile::open(path).ok().filter(PinnedFile::is_regular)
}

/// A name found on PATH or in the library directories must be an ELF file: a script (a
/// version manager's shim, a wrapper) is refused naming what runs it.
fn refuse_non_elf(binary: &str, file: &PinnedFile) -> Result<(), TargetError> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = file
        .reopen()
        .and_then(|mut f| f.read(&mut head))
        .map_err(|_| TargetError::NotFound)?;
    let head = &head[..n];
    if head.starts_with(b"\x7fELF") {
        return Ok(());
    }
    let path = file.real.display();
    Err(TargetError::Invalid(match head.strip_prefix(b"#!") {
        Some(rest) => {
            let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
            let interpreter = String::from_utf8_lossy(line).trim().to_owned();
            format!(
                "`{binary}` is {path}, a script run by `{interpreter}`, not an ELF binary: \
                 uprobes go in the file that runs, so target the interpreter (or the binary \
                 the script starts) by its path, or give `pid` of the running process to \
                 find its binary and libraries as it maps them"
            )
        }
        None => format!(
            "`{binary}` is {path}, which is not an ELF binary or library; give the path of \
             the ELF file, or `pid` of a process that runs it"
        ),
    }))
}

/// The file `binary` names among those process `pid` maps: by exact path, file name,
/// `name.` prefix (`libc` → `libc.so.6`) or unique prefix, opened through the process's
/// root (or its map_files entry when the file was replaced since it was mapped).
fn resolve_in(binary: &str, pid: u32) -> Result<Resolved, TargetError> {
    use crate::ebpf::host;
    if host::ProcessId::alive(pid).is_none() {
        return Err(TargetError::NoProcess(pid));
    }
    let files = host::mapped_files(pid).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => TargetError::NoProcess(pid),
        _ => TargetError::Invalid(format!(
            "cannot read which files process {pid} maps (/proc/{pid}/maps: {e})"
        )),
    })?;
    // A relative path is the process's: from its working directory.
    let absolute;
    let binary = if binary.contains('/') && !binary.starts_with('/') {
        let cwd =
            std::fs::read_link(format!("/proc/{pid}/cwd")).map_err(|_| TargetError::NotFound)?;
        absolute = lexical(&cwd.join(binary));
        absolute.as_str()
    } else {
        binary
    };
    let chosen = choose(&files, binary);
    match chosen.as_slice() {
        [one] => open_mapped(pid, one),
        [] if binary.contains('/') => {
            let file = open_regular(&in_root(pid, binary)).ok_or(TargetError::NotFound)?;
            Ok(Resolved {
                shown: PathBuf::from(binary),
                file,
                warning: Some(format!(
                    "process {pid} does not map {binary} now: the probe fires only if it \
                     loads that file (trace without `pid`, or name one of the files it maps)"
                )),
            })
        }
        [] => {
            let mut names: Vec<&str> = files.iter().map(|m| file_name(&m.path)).collect();
            names.sort_unstable();
            names.dedup();
            const SHOWN: usize = 40;
            let more = names.len().saturating_sub(SHOWN);
            names.truncate(SHOWN);
            let listed = if names.is_empty() {
                "no files at all".to_owned()
            } else if more > 0 {
                format!("{} and {more} more", names.join(", "))
            } else {
                names.join(", ")
            };
            Err(TargetError::Invalid(format!(
                "process {pid} maps no file named `{binary}` (nor one whose name starts with \
                 it); it maps {listed}; give one of these names or a full path"
            )))
        }
        many => Err(TargetError::Invalid(format!(
            "`{binary}` matches {} files process {pid} maps: {}; give the full name or path",
            many.len(),
            many.iter()
                .map(|m| m.path.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// `path` with `.` and `..` taken out by name (the kernel names mapped files without them).
fn lexical(path: &Path) -> String {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                parts.pop();
            }
            std::path::Component::Normal(p) => parts.push(p),
            _ => {}
        }
    }
    let mut out = PathBuf::from("/");
    out.extend(parts);
    out.to_string_lossy().into_owned()
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The mapped files `binary` names, by the first rule that matches any: exact path (when
/// it has a `/`); else file name, then `name.` prefix, then any prefix.
fn choose<'a>(files: &'a [MappedFile], binary: &str) -> Vec<&'a MappedFile> {
    if binary.contains('/') {
        return files.iter().filter(|m| m.path == binary).collect();
    }
    let dotted = format!("{binary}.");
    let rules: [&dyn Fn(&str) -> bool; 3] = [&|n| n == binary, &|n| n.starts_with(&dotted), &|n| {
        n.starts_with(binary)
    }];
    rules
        .iter()
        .map(|rule| {
            files
                .iter()
                .filter(|m| rule(file_name(&m.path)))
                .collect::<Vec<_>>()
        })
        .find(|found| !found.is_empty())
        .unwrap_or_default()
}

/// `path` as process `pid` sees it: through its root directory (its mount namespace).
fn in_root(pid: u32, path: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/root/{}", path.trim_start_matches('/')))
}

fn open_mapped(pid: u32, m: &MappedFile) -> Result<Resolved, TargetError> {
    let through_root = || open_regular(&in_root(pid, &m.path));
    // The very file mapped, even when replaced or deleted since (needs CAP_SYS_ADMIN).
    let mapped = || {
        open_regular(Path::new(&format!(
            "/proc/{pid}/map_files/{:x}-{:x}",
            m.start, m.end
        )))
    };
    let file = if m.deleted {
        mapped()
    } else {
        through_root().or_else(mapped)
    };
    let file = file.ok_or_else(|| {
        TargetError::Invalid(format!(
            "process {pid} maps {}, but that file {}; the probe needs the file the process \
             runs",
            m.path,
            if m.deleted {
                "was deleted or replaced since it was loaded and the server cannot open the \
                 mapped copy (/proc/PID/map_files needs CAP_SYS_ADMIN)"
            } else {
                "cannot be opened through /proc/PID/root"
            }
        ))
    })?;
    Ok(Resolved {
        shown: PathBuf::from(&m.path),
        file,
        warning: None,
    })
}

/// A bare program or library name as a path: a program on PATH, else a library in the
/// loader's directories by exact name, else by `name.` prefix (`libc` → `libc.so.6`) when
/// that names one library.
pub fn find_binary(binary: &str) -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(binary))
            .find(|p| p.is_file())
    });
    if let Some(found) = on_path.or_else(|| find_library(binary)) {
        return Ok(found);
    }
    let mut by_prefix = find_libraries_by_prefix(binary);
    match by_prefix.len() {
        1 => Ok(by_prefix.remove(0)),
        0 => Err(format!(
            "no program `{binary}` on PATH and no library `{binary}` (or `{binary}.*`) in the \
             loader's directories; give the binary's full path, or `pid` of a process that \
             maps it"
        )),
        _ => Err(format!(
            "`{binary}` names several libraries: {}; give the full name",
            by_prefix
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The directories the dynamic loader searches: /etc/ld.so.conf (and its includes), then
/// the defaults.
fn library_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut confs = vec![PathBuf::from("/etc/ld.so.conf")];
    if let Ok(entries) = std::fs::read_dir("/etc/ld.so.conf.d") {
        let mut more: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        more.sort();
        confs.extend(
            more.into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "conf")),
        );
    }
    for conf in confs {
        let Ok(text) = std::fs::read_to_string(&conf) else {
            continue;
        };
        dirs.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| l.starts_with('/'))
                .map(PathBuf::from),
        );
    }
    for d in ["/lib64", "/usr/lib64", "/lib", "/usr/lib"] {
        dirs.push(PathBuf::from(d));
    }
    dirs
}

/// ELF machine number of this build (e_machine).
const fn this_machine() -> u16 {
    if cfg!(target_arch = "x86_64") {
        62
    } else if cfg!(target_arch = "aarch64") {
        183
    } else {
        0
    }
}

/// Whether `path` is an ELF file for this machine (a 32-bit libc of the same name is not).
fn is_native_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut header = [0u8; 20];
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    if f.read_exact(&mut header).is_err() || &header[..4] != b"\x7fELF" {
        return false;
    }
    this_machine() == 0 || u16::from_le_bytes([header[18], header[19]]) == this_machine()
}

fn find_library(name: &str) -> Option<PathBuf> {
    library_dirs()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| is_native_elf(p))
}

/// Native ELF libraries named `name.…` in the loader's directories, one per real file
/// (`libc.so.6` and a link to it are one).
fn find_libraries_by_prefix(name: &str) -> Vec<PathBuf> {
    let dotted = format!("{name}.");
    let mut found: Vec<(PathBuf, PathBuf)> = Vec::new();
    for dir in library_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut names: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(&dotted))
            })
            .map(|e| e.path())
            .collect();
        names.sort();
        for path in names {
            let Ok(real) = std::fs::canonicalize(&path) else {
                continue;
            };
            if is_native_elf(&real) && !found.iter().any(|(_, r)| *r == real) {
                found.push((path, real));
            }
        }
    }
    found.into_iter().map(|(path, _)| path).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_at_the_first_colon() {
        assert_eq!(split_target("/bin/sh:main").unwrap(), ("/bin/sh", "main"));
        assert!(
            split_target("nocolon")
                .unwrap_err()
                .contains("binary:symbol")
        );
        assert!(split_target("/bin/sh:").is_err() && split_target(":f").is_err());
    }

    #[test]
    fn names_resolve_on_path_and_in_the_library_directories() {
        let lib = find_binary("libc.so.6").unwrap();
        assert!(lib.is_absolute() && is_native_elf(&lib), "{lib:?}");
        // A unique `name.` prefix is the library (libc.so, a linker script, is not ELF).
        let short = find_binary("libc").unwrap();
        assert_eq!(
            std::fs::canonicalize(&short).unwrap(),
            std::fs::canonicalize(&lib).unwrap()
        );
        assert!(find_binary("libnothere").unwrap_err().contains("full path"));
        let sh = resolve("sh", None).unwrap();
        assert!(sh.shown.is_absolute() && sh.warning.is_none());
        assert_eq!(
            resolve("/no/such/file", None).unwrap_err(),
            TargetError::NotFound
        );
    }

    #[test]
    fn a_script_is_refused_naming_its_interpreter() {
        let dir = std::env::temp_dir().join(format!("uprobe-shim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let shim = dir.join("shim");
        std::fs::write(&shim, "#!/bin/sh -e\nexec python3 \"$@\"\n").unwrap();
        let file = open_regular(&shim).unwrap();
        let err = refuse_non_elf("shim", &file).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        let TargetError::Invalid(text) = err else {
            panic!("{err:?}")
        };
        assert!(
            text.contains("script run by `/bin/sh -e`") && text.contains("pid"),
            "{text}"
        );
    }

    #[test]
    fn with_a_pid_the_files_it_maps_are_matched() {
        let me = std::process::id();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let exe_name = exe.file_name().unwrap().to_str().unwrap();
        let found = resolve(exe_name, Some(me)).unwrap();
        assert_eq!(found.shown, exe);
        assert!(found.warning.is_none());
        // By `name.` prefix, as the process maps it.
        let libc = resolve("libc", Some(me)).unwrap();
        assert!(file_name(libc.shown.to_str().unwrap()).starts_with("libc.so"));
        // By exact path; a path it does not map resolves with a warning.
        let again = resolve(exe.to_str().unwrap(), Some(me)).unwrap();
        assert_eq!(again.shown, exe);
        // A relative path is taken from the process's working directory.
        let cwd = std::env::current_dir().unwrap();
        let rel = pathdiff(&exe, &cwd);
        let relative = resolve(&rel, Some(me)).unwrap();
        assert_eq!(relative.shown, exe, "{rel}");
        assert_eq!(lexical(Path::new("/a/./b/../c")), "/a/c");
        let other = resolve("/bin/sh", Some(me)).unwrap();
        assert!(other.warning.unwrap().contains("does not map"));
        let TargetError::Invalid(text) = resolve("nosuchlibrary", Some(me)).unwrap_err() else {
            panic!()
        };
        assert!(
            text.contains("maps no file named") && text.contains(exe_name),
            "{text}"
        );
        assert_eq!(
            resolve("libc", Some(u32::MAX)).unwrap_err(),
            TargetError::NoProcess(u32::MAX)
        );
    }

    /// `target` relative to `base` (both absolute), with `..` where needed.
    fn pathdiff(target: &Path, base: &Path) -> String {
        let t: Vec<_> = target.components().collect();
        let b: Vec<_> = base.components().collect();
        let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
        let mut out = vec![".".to_owned()];
        out.extend(std::iter::repeat_n("..".to_owned(), b.len() - common));
        out.extend(
            t[common..]
                .iter()
                .map(|c| c.as_os_str().to_string_lossy().into_owned()),
        );
        out.join("/")
    }

    #[test]
    fn several_matches_are_listed() {
        let files = crate::ebpf::host::parse_maps(
            "1000-2000 r--p 0 08:01 7 /usr/lib/libssl.so.3\n\
             2000-3000 r--p 0 08:01 8 /usr/lib/libssl3.so\n\
             3000-4000 r--p 0 08:01 9 /usr/lib/libc.so.6\n",
        );
        assert_eq!(choose(&files, "libc").len(), 1);
        assert_eq!(choose(&files, "libssl").len(), 1, "the dotted rule wins");
        assert_eq!(choose(&files, "libs").len(), 2);
        assert_eq!(choose(&files, "/usr/lib/libc.so.6").len(), 1);
        assert!(choose(&files, "/usr/lib/libc").is_empty());
    }
}
