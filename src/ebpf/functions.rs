//! Kernel functions that can be traced: the names ftrace can hook
//! (`available_filter_functions`), each with its prototype from vmlinux BTF and its address
//! from /proc/kallsyms, for the kfunc gadget and for finding functions by glob.

use std::collections::{BTreeMap, HashMap};

use schemars::JsonSchema;
use serde::Serialize;

use super::btf_reader::{Btf, Kind};
use super::host;
use crate::glob::Glob;

/// How one argument (or the return value) is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgKind {
    /// A signed integer of this many bytes.
    Signed(u8),
    /// An unsigned integer of this many bytes.
    Unsigned(u8),
    Bool,
    /// An enum of this many bytes, signed or not: its enumerators by value.
    Enum {
        names: BTreeMap<i64, String>,
        size: u8,
        signed: bool,
    },
    /// `char *` (or const char *): the string it points to.
    Str,
    /// Any other pointer: the address, as hex.
    Pointer,
    /// A struct or float passed by value, `void` return: the raw register, as hex.
    Raw,
    Void,
}

/// One parameter: its name, C type and how it is shown, and the argument slot (8 bytes
/// each) it starts at; parameters past the sixth slot are not read.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub ty: String,
    pub kind: ArgKind,
    pub slot: usize,
    /// Bytes it takes (a struct passed by value may take more than a register).
    pub size: usize,
}

/// A function's prototype from BTF.
#[derive(Debug, Clone)]
pub struct Prototype {
    pub ret_ty: String,
    pub ret: ArgKind,
    pub params: Vec<Param>,
}

impl Prototype {
    /// Whether its arguments are where the decoder reads them: each in one or two of the
    /// six argument registers. A struct over 16 bytes passed by value goes on the stack,
    /// and a returned struct over 16 bytes takes a hidden first argument: such functions'
    /// registers are shown raw.
    pub fn registers_match(&self) -> bool {
        self.params.iter().all(|p| p.size <= 16) && self.ret != ArgKind::Raw
    }

    /// Whether a BPF trampoline can hook it everywhere: its arguments fill at most the six
    /// argument registers (kernels before 6.6 refuse more), none a struct over 16 bytes,
    /// and it does not return a struct.
    pub fn trampoline_can_hook(&self) -> bool {
        let slots = self
            .params
            .last()
            .map_or(0, |p| p.slot + p.size.div_ceil(8));
        self.registers_match() && slots <= 6
    }

    /// As C declares it: `ssize_t vfs_read(struct file *file, char *buf, ...)`.
    pub fn declaration(&self, name: &str) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|p| {
                if p.ty.ends_with('*') {
                    format!("{}{}", p.ty, p.name)
                } else {
                    format!("{} {}", p.ty, p.name)
                }
            })
            .collect();
        let sep = if self.ret_ty.ends_with('*') { "" } else { " " };
        format!("{}{sep}{name}({})", self.ret_ty, params.join(", "))
    }
}

/// One traceable function.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct FunctionRow {
    pub name: String,
    /// The module it is in; absent for the kernel image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// Its C declaration from BTF; absent where BTF does not describe it (then only
    /// kprobes can trace it, with raw arguments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prototype: Option<String>,
}

/// Where the list of traceable functions came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// tracefs `available_filter_functions`: what ftrace (fentry, kprobes) can hook.
    Ftrace,
    /// That file cannot be read here (lockdown, no tracefs): every function BTF describes,
    /// some of which cannot be traced.
    Btf,
}

/// The kernel's functions: names ftrace can hook and what BTF says of them.
pub struct Catalog {
    btf: Option<Btf>,
    /// BTF FUNC id by name.
    by_name: HashMap<String, u32>,
    /// (name, module) in the kernel's order, de-duplicated.
    names: Vec<(String, Option<String>)>,
    pub source: Source,
    /// Why `available_filter_functions` could not be read, when it could not.
    pub ftrace_error: Option<String>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("functions", &self.names.len())
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Catalog {
    /// Reads vmlinux BTF and the ftrace list (a few MB, tens of ms).
    pub fn load() -> Self {
        let btf = std::fs::read("/sys/kernel/btf/vmlinux")
            .ok()
            .and_then(|d| Btf::parse(d).ok());
        let mut by_name = HashMap::new();
        if let Some(btf) = &btf {
            for id in 1..=btf.len() as u32 {
                if let Ok(t) = btf.get(id)
                    && t.kind == Kind::Func
                {
                    by_name
                        .entry(btf.string(t.name_off).to_owned())
                        .or_insert(id);
                }
            }
        }
        let (names, source, ftrace_error) = match ftrace_functions() {
            Ok(names) => (names, Source::Ftrace, None),
            Err(e) => {
                let mut names: Vec<(String, Option<String>)> =
                    by_name.keys().map(|n| (n.clone(), None)).collect();
                names.sort();
                (names, Source::Btf, Some(e))
            }
        };
        Self {
            btf,
            by_name,
            names,
            source,
            ftrace_error,
        }
    }

    /// The functions whose name `glob` matches, in order.
    pub fn matching<'a>(
        &'a self,
        glob: &'a Glob,
    ) -> impl Iterator<Item = &'a (String, Option<String>)> {
        self.names.iter().filter(|(n, _)| glob.matches(n))
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|(n, _)| n.as_str())
    }

    /// The function's prototype, if BTF describes it.
    pub fn prototype(&self, name: &str) -> Option<Prototype> {
        let btf = self.btf.as_ref()?;
        let func = btf.get(*self.by_name.get(name)?).ok()?;
        let proto = btf.get(func.size_or_type).ok()?;
        if proto.kind != Kind::FuncProto {
            return None;
        }
        let mut slot = 0;
        let mut params = Vec::new();
        for (name_off, ty) in proto.params() {
            if ty == 0 {
                break; // variadic
            }
            let size = btf.size_of(ty).unwrap_or(8).max(1);
            params.push(Param {
                name: btf.string(name_off).to_owned(),
                ty: c_type(btf, ty),
                kind: arg_kind(btf, ty),
                slot,
                size,
            });
            slot += size.div_ceil(8);
        }
        let ret = proto.size_or_type;
        // `const char *buf, size_t count` is a buffer of `count` bytes, not a string.
        for i in 1..params.len() {
            let sized = matches!(params[i].kind, ArgKind::Unsigned(_) | ArgKind::Signed(_))
                && matches!(
                    params[i].name.as_str(),
                    "count" | "len" | "size" | "length" | "nbytes" | "n" | "buflen" | "bufsize"
                );
            if sized && params[i - 1].kind == ArgKind::Str {
                params[i - 1].kind = ArgKind::Pointer;
            }
        }
        Some(Prototype {
            ret_ty: c_type(btf, ret),
            ret: if ret == 0 {
                ArgKind::Void
            } else {
                arg_kind(btf, ret)
            },
            params,
        })
    }

    pub fn row(&self, name: &str, module: Option<&str>) -> FunctionRow {
        FunctionRow {
            name: name.to_owned(),
            module: module.map(str::to_owned),
            prototype: self.prototype(name).map(|p| p.declaration(name)),
        }
    }
}

/// A type as C spells it, qualifiers kept: `const char *`, `struct file *`.
fn c_type(btf: &Btf, id: u32) -> String {
    let Ok(t) = btf.get(id) else {
        return format!("#{id}");
    };
    match t.kind {
        Kind::Ptr => format!("{} *", c_type(btf, t.size_or_type)),
        Kind::Const => format!("const {}", c_type(btf, t.size_or_type)),
        Kind::Volatile => format!("volatile {}", c_type(btf, t.size_or_type)),
        Kind::Restrict | Kind::TypeTag => c_type(btf, t.size_or_type),
        _ => btf.type_name(id),
    }
}

fn arg_kind(btf: &Btf, ty: u32) -> ArgKind {
    let Ok((_, t)) = btf.resolve(ty) else {
        return ArgKind::Raw;
    };
    match t.kind {
        Kind::Int => {
            let (encoding, _, bits) = t.int();
            let bytes = u8::try_from(bits.div_ceil(8)).unwrap_or(8).clamp(1, 8);
            if encoding & 4 != 0 {
                ArgKind::Bool
            } else if encoding & 1 != 0 {
                ArgKind::Signed(bytes)
            } else {
                ArgKind::Unsigned(bytes)
            }
        }
        Kind::Enum | Kind::Enum64 => ArgKind::Enum {
            names: t
                .enumerators()
                .map(|(off, v)| (v as i64, btf.string(off).to_owned()))
                .collect(),
            size: u8::try_from(t.size_or_type).unwrap_or(8).clamp(1, 8),
            signed: t.kind_flag,
        },
        // Strings are read only from `const char *`: a plain `char *` is mostly a buffer
        // the function is about to fill, whose old bytes are nobody's argument.
        Kind::Ptr => match btf.resolve(t.size_or_type) {
            Ok((_, target))
                if target.kind == Kind::Int
                    && t.size_or_type != 0
                    && points_to_const(btf, t.size_or_type) =>
            {
                let (encoding, _, bits) = target.int();
                if bits == 8 && (encoding & 2 != 0 || btf.string(target.name_off) == "char") {
                    ArgKind::Str
                } else {
                    ArgKind::Pointer
                }
            }
            _ => ArgKind::Pointer,
        },
        _ => ArgKind::Raw,
    }
}

/// Whether type `id` (what a pointer points to) is const-qualified, through typedefs and
/// other qualifiers.
fn points_to_const(btf: &Btf, mut id: u32) -> bool {
    for _ in 0..16 {
        let Ok(t) = btf.get(id) else { return false };
        match t.kind {
            Kind::Const => return true,
            Kind::Typedef | Kind::Volatile | Kind::Restrict | Kind::TypeTag => id = t.size_or_type,
            _ => return false,
        }
    }
    false
}

/// The functions ftrace can hook, as `available_filter_functions` lists them.
fn ftrace_functions() -> Result<Vec<(String, Option<String>)>, String> {
    let root = host::tracefs_root().ok_or("tracefs is not mounted")?;
    let path = root.join("available_filter_functions");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(parse_ftrace(&text))
}

/// `available_filter_functions`: `name` or `name [module]` per line.
fn parse_ftrace(text: &str) -> Vec<(String, Option<String>)> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let Some(name) = parts.next() else { continue };
        // Compiler-made copies (`.isra.0`, `.cold`) cannot be named by BTF or users.
        if name.contains('.') || !seen.insert(name.to_owned()) {
            continue;
        }
        let module = parts
            .next()
            .map(|m| m.trim_matches(|c| c == '[' || c == ']').to_owned());
        out.push((name.to_owned(), module));
    }
    out
}

/// The addresses /proc/kallsyms gives the kernel's text symbols named in `names` (empty
/// when kallsyms hides addresses: kptr_restrict without CAP_SYSLOG).
pub fn addresses(names: &[String]) -> Vec<(u64, String)> {
    let wanted: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
    let Ok(text) = std::fs::read_to_string("/proc/kallsyms") else {
        return Vec::new();
    };
    parse_kallsyms(&text, &wanted)
}

/// The text symbols of `wanted` in /proc/kallsyms' `address kind name [module]` lines.
fn parse_kallsyms(text: &str, wanted: &std::collections::HashSet<&str>) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !matches!(kind, "t" | "T") || !wanted.contains(name) {
            continue;
        }
        if let Ok(a) = u64::from_str_radix(addr, 16)
            && a != 0
        {
            out.push((a, name.to_owned()));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftrace_lists_name_functions_once_without_compiler_copies() {
        let text = "vfs_read\nvfs_read\nfoo.isra.0\nbar [ext4]\n\n";
        assert_eq!(
            parse_ftrace(text),
            vec![
                ("vfs_read".to_owned(), None),
                ("bar".to_owned(), Some("ext4".to_owned()))
            ]
        );
    }

    #[test]
    fn kallsyms_gives_text_addresses_of_the_functions_asked() {
        let text = "ffffffff81000100 T vfs_read\nffffffff81000000 t do_x\n\
                    ffffffff82000000 D vfs_read\n0000000000000000 T hidden\nbad line\n\
                    ffffffffa0000000 t mod_fn\t[mod]\n";
        let wanted = ["vfs_read", "do_x", "hidden", "mod_fn"]
            .into_iter()
            .collect();
        assert_eq!(
            parse_kallsyms(text, &wanted),
            vec![
                (0xffff_ffff_8100_0000, "do_x".to_owned()),
                (0xffff_ffff_8100_0100, "vfs_read".to_owned()),
                (0xffff_ffff_a000_0000, "mod_fn".to_owned()),
            ]
        );
    }

    #[test]
    fn prototypes_come_from_the_kernels_btf() {
        let catalog = Catalog::load();
        let Some(proto) = catalog.prototype("do_sys_openat2") else {
            assert!(
                !std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
                "the kernel has BTF, but no prototype of do_sys_openat2 was read from it"
            );
            return;
        };
        // A signed integer, `int` or `long` by kernel version, named as the compiler did.
        assert!(
            ["int", "long", "long int"].contains(&proto.ret_ty.as_str()),
            "{}",
            proto.ret_ty
        );
        assert!(
            matches!(proto.ret, ArgKind::Signed(4 | 8)),
            "{:?}",
            proto.ret
        );
        assert_eq!(
            proto.declaration("do_sys_openat2"),
            format!(
                "{} do_sys_openat2(int dfd, const char *filename, struct open_how *how)",
                proto.ret_ty
            )
        );
        assert_eq!(proto.params[0].kind, ArgKind::Signed(4));
        assert_eq!(proto.params[1].kind, ArgKind::Str);
        assert_eq!(proto.params[2].kind, ArgKind::Pointer);
        assert!(proto.trampoline_can_hook());
        // A buffer and its length: the pointer is not read as a string.
        if let Some(w) = catalog.prototype("vfs_write") {
            assert_eq!(w.params[1].kind, ArgKind::Pointer, "{:?}", w.params[1]);
        }
        let glob = Glob::new("do_sys_openat*").unwrap();
        assert!(catalog.matching(&glob).any(|(n, _)| n == "do_sys_openat2"));
        assert!(catalog.row("do_sys_openat2", None).prototype.is_some());
    }
}
