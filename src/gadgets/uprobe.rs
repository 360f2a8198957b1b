//! uprobe: calls of one user-space function (`binary:symbol`), counted in the kernel per
//! process, or their latency from entry to return as log2 histograms.

use std::path::{Path, PathBuf};

use super::hist::{KEY_SIZE, decode_process_key};
use super::{Field, Gadget, Output};

pub const ENTRY: &str = "uprobe_entry";
pub const RETURN: &str = "uprobe_return";
/// The kernel's count table (key: struct hist_key).
pub const COUNTS: &str = "call_counts";

static FIELDS: [Field; 2] = [
    Field::new("pid", "u32", "the calling process"),
    Field::new("comm", "string", "its name"),
];

pub static GADGET: Gadget = Gadget {
    name: "uprobe",
    summary: "calls of a user-space function, `target: \"binary:symbol\"`: counts per process \
        (mode count), or entry-to-return latency histograms (mode histogram)",
    object: aya::include_bytes_aligned!("../../bpf/obj/uprobe.bpf.o"),
    programs: &[],
    fields: &FIELDS,
    output: Output::KernelCounts(COUNTS),
    default_group_by: &["pid", "comm"],
    detail_fields: &["pid", "comm"],
    decode: decode_process_key,
    event_size: KEY_SIZE,
    layout: super::hist::KEY_LAYOUT,
};

/// Splits `binary:symbol` and finds the binary: a path, a program on PATH, or a library
/// name (`libc.so.6`, found by the loader's cache when attaching).
pub fn parse_target(target: &str) -> Result<(PathBuf, String), String> {
    let (binary, symbol) = target
        .split_once(':')
        .filter(|(b, s)| !b.is_empty() && !s.is_empty())
        .ok_or_else(|| {
            format!(
                "`target` is `binary:symbol`, e.g. \"/usr/bin/bash:readline\" or \
                 \"libc.so.6:malloc\"; got `{target}`"
            )
        })?;
    // A path is not looked at here: whether it exists is said only by the attach, in the
    // same words as for a missing symbol.
    if binary.contains('/') {
        return Ok((PathBuf::from(binary), symbol.to_owned()));
    }
    Ok((find_binary(binary)?, symbol.to_owned()))
}

/// A bare program or library name as a path: a program on PATH, else a library in the
/// loader's directories.
pub fn find_binary(binary: &str) -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(binary))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| find_library(binary)).ok_or_else(|| {
        format!(
            "no program `{binary}` on PATH and no library `{binary}` in the loader's \
             directories; give the binary's full path"
        )
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let (path, sym) = parse_target("/bin/sh:main").unwrap();
        assert_eq!(
            (path.as_path(), sym.as_str()),
            (Path::new("/bin/sh"), "main")
        );
        assert!(
            parse_target("nocolon")
                .unwrap_err()
                .contains("binary:symbol")
        );
        assert!(parse_target("/bin/sh:").is_err());
        assert!(parse_target("/no/such/file:f").is_ok());
        let (lib, _) = parse_target("libc.so.6:malloc").unwrap();
        assert!(lib.is_absolute() && is_native_elf(&lib), "{lib:?}");
        assert!(
            parse_target("libnothere.so.9:f")
                .unwrap_err()
                .contains("full path")
        );
    }
}
