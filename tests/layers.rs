//! The crate's layering, checked on its source: each top-level module imports only modules
//! of lower layers (so there is no cycle between them), kernel calls through aya happen only
//! under `ebpf/`, and `unsafe` appears only under `ebpf/` and in the sandbox's own syscalls.
//! docs/architecture.md draws the same layers; a new module must be placed in one here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    &["time", "glob", "rows", "fault", "resources", "suggest"],
    &["error"],
    &["ebpf"],
    &["config"],
    &["security", "telemetry", "gadgets"],
    &["call"],
    &["trace", "maps", "deploy"],
    &["core"],
    &["tools"],
    &["mcp"],
    &["docs", "server"],
    &["cli"],
];

/// Where `unsafe` may be written: the kernel layer, and the sandbox's prctl, capset,
/// Landlock and seccomp calls (no maintained crate covers them as the sandbox uses them).
const UNSAFE_ALLOWED: &[&str] = &["ebpf/", "security/sandbox.rs"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments (line and block) and without the contents of string
/// literals, so that prose and messages do not count as code.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'r' if b.get(i + 1) == Some(&b'#') || b.get(i + 1) == Some(&b'"') => {
                // Raw string r"..." / r#"..."#: skip to the matching close.
                let start = i;
                let mut j = i + 1;
                let mut hashes = 0;
                while b.get(j) == Some(&b'#') {
                    hashes += 1;
                    j += 1;
                }
                let preceded_by_ident =
                    start > 0 && (b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
                if b.get(j) != Some(&b'"') || preceded_by_ident {
                    out.push('r');
                    i += 1;
                    continue;
                }
                j += 1;
                loop {
                    if j >= b.len() {
                        break;
                    }
                    if b[j] == b'"' && b[j + 1..].iter().take(hashes).all(|c| *c == b'#') {
                        j += 1 + hashes;
                        break;
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("\"\"");
            }
            b'\'' => {
                // A char literal ('x', '\n', '\'') or a lifetime ('a): keep lifetimes.
                if b.get(i + 1) == Some(&b'\\') {
                    let close = b[i + 2..].iter().position(|c| *c == b'\'').unwrap_or(0);
                    i += 3 + close;
                    out.push_str("' '");
                } else if b.get(i + 2) == Some(&b'\'') {
                    i += 3;
                    out.push_str("' '");
                } else {
                    out.push('\'');
                    i += 1;
                }
            }
            c => {
                // Multi-byte characters are copied whole.
                let len = match c {
                    0x00..=0x7f => 1,
                    0xc0..=0xdf => 2,
                    0xe0..=0xef => 3,
                    _ => 4,
                };
                out.push_str(&src[i..(i + len).min(src.len())]);
                i += len;
            }
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The top-level modules `code` names through `crate::`, including `use crate::{a, b::c}`.
fn crate_refs(code: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(is_ident) {
            continue; // `$crate::`, `my_crate::`
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group: split on commas outside nested braces.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        refs.insert(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            refs.insert(first_ident(&item));
        } else {
            refs.insert(first_ident(rest));
        }
    }
    refs.remove("");
    refs
}

fn first_ident(s: &str) -> String {
    s.trim_start()
        .chars()
        .take_while(|c| is_ident(*c))
        .collect()
}

struct Source {
    /// Path below src/, with `/` separators.
    rel: String,
    /// Its top-level module (`ebpf` for src/ebpf/bpf.rs, `time` for src/time.rs).
    module: String,
    code: String,
}

fn crate_sources() -> Vec<Source> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let rel = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let module = rel
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_owned();
            let code = code_only(&std::fs::read_to_string(&path).unwrap());
            Source { rel, module, code }
        })
        .collect()
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

#[test]
fn modules_import_only_lower_layers() {
    let mut problems = Vec::new();
    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for s in crate_sources() {
        if s.module == "lib" || s.module == "main" {
            continue;
        }
        let Some(from) = layer_of(&s.module) else {
            problems.push(format!(
                "src/{}: module `{}` is in no layer of tests/layers.rs",
                s.rel, s.module
            ));
            continue;
        };
        if s.code.contains("super::super::") && !s.rel.contains('/') {
            problems.push(format!("src/{}: `super::super` leaves the crate", s.rel));
        }
        for target in crate_refs(&s.code) {
            if target == s.module {
                continue;
            }
            match layer_of(&target) {
                Some(to) if to < from => {}
                Some(_) => edges
                    .entry((s.module.clone(), target))
                    .or_default()
                    .push(format!("src/{}", s.rel)),
                // Not a module: a re-export at the crate root (`crate::EbpfError`).
                None => {}
            }
        }
    }
    for ((from, to), files) in &edges {
        problems.push(format!(
            "`{from}` uses `{to}`, which is not below it: {}",
            files.join(", ")
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_layer_module_exists() {
    let modules: BTreeSet<String> = crate_sources().into_iter().map(|s| s.module).collect();
    for module in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(
            modules.contains(*module),
            "tests/layers.rs places `{module}`, which src/ does not have"
        );
    }
}

#[test]
fn unsafe_only_in_the_kernel_layer_and_the_sandbox() {
    let mut found = Vec::new();
    for s in crate_sources() {
        if UNSAFE_ALLOWED.iter().any(|a| s.rel.starts_with(a)) {
            continue;
        }
        for (n, line) in s.code.lines().enumerate() {
            let words: Vec<&str> = line.split(|c: char| !is_ident(c)).collect();
            if words.contains(&"unsafe") {
                found.push(format!("src/{}:{}: {}", s.rel, n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "unsafe outside ebpf/ and the sandbox:\n{}",
        found.join("\n")
    );
}

#[test]
fn aya_only_in_the_kernel_layer() {
    // aya_obj (parsing ELF and BTF, no system calls) may be used anywhere; aya itself only
    // under ebpf/, except its macro that embeds an object aligned.
    let mut found = Vec::new();
    for s in crate_sources() {
        if s.rel.starts_with("ebpf/") {
            continue;
        }
        for (n, line) in s.code.lines().enumerate() {
            let uses_aya = line.match_indices("aya::").any(|(at, _)| {
                !line[..at].ends_with(|c: char| is_ident(c))
                    && !line[at..].starts_with("aya::include_bytes_aligned!")
            }) || line.trim_start().starts_with("use aya;");
            if uses_aya {
                found.push(format!("src/{}:{}: {}", s.rel, n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "aya used outside ebpf/:\n{}",
        found.join("\n")
    );
}

/// A field left out of a result when empty must not be `required` in its published output
/// schema: schemars counts a field as optional when it is an `Option` or has `default`.
#[test]
fn fields_skipped_when_empty_are_optional_in_schemas() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut bad = Vec::new();
    for s in crate_sources() {
        let text = std::fs::read_to_string(root.join(&s.rel)).unwrap();
        for line in text
            .lines()
            .filter(|l| l.trim_start().starts_with("#[serde("))
        {
            if line.contains("skip_serializing_if")
                && !line.contains("Option::is_none")
                && !line.contains("default")
            {
                bad.push(format!("{}: {}", s.rel, line.trim()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "add `default` next to skip_serializing_if: {bad:#?}"
    );
}

#[test]
fn the_scanner_sees_code_not_prose() {
    let code = code_only(
        "// crate::tools in a comment\n/* unsafe { } */ let s = \"crate::mcp\"; \
         let r = r#\"crate::server\"#; let c = '\"'; use crate::{config::Config, ebpf::{sys, bpf}};\n\
         fn f<'a>(x: &'a str) {} let q = crate :: x; crate::time::now();",
    );
    assert!(!code.contains("unsafe"));
    let refs = crate_refs(&code);
    assert_eq!(
        refs,
        ["config", "ebpf", "time"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}
