//! Tracepoints as tracefs describes them: which exist, and the layout of each one's record
//! (its `format` file), so that any tracepoint's raw records can be decoded.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Serialize;

use super::host;

/// One field of a tracepoint record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct TpField {
    pub name: String,
    /// The C type as tracefs prints it (`const char *`, `__data_loc char[]`, `pid_t`).
    #[serde(rename = "type")]
    pub ty: String,
    pub offset: usize,
    pub size: usize,
    pub signed: bool,
    /// For arrays (`char comm[16]`), the element count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub array_len: Option<usize>,
}

impl TpField {
    /// `__data_loc` fields point into the record's variable-length part.
    pub fn is_data_loc(&self) -> bool {
        self.ty.starts_with("__data_loc")
    }

    /// A pointer to a string in the traced process (a syscall's file name).
    pub fn is_user_string(&self) -> bool {
        let t = self.ty.replace(' ', "");
        t == "constchar*" || t == "char*"
    }

    pub fn is_char_array(&self) -> bool {
        self.array_len.is_some()
            && self
                .ty
                .trim_end_matches(|c: char| c.is_ascii_digit() || c == '[' || c == ']')
                .trim()
                .ends_with("char")
    }
}

/// A tracepoint's record layout.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Format {
    pub category: String,
    pub name: String,
    pub id: u32,
    /// Fields after the common header (common_type, common_pid...), in record order.
    pub fields: Vec<TpField>,
    pub print_fmt: String,
}

impl Format {
    /// Bytes of the fixed part of the record.
    pub fn fixed_size(&self) -> usize {
        self.fields
            .iter()
            .map(|f| f.offset + f.size)
            .max()
            .unwrap_or(8)
    }

    pub fn has_data_loc(&self) -> bool {
        self.fields.iter().any(TpField::is_data_loc)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted; mount it at /sys/kernel/tracing or enable ebpf.auto_mount")]
    NotMounted,
    #[error("no tracepoint {0}")]
    NoSuchTracepoint(String),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn events_dir() -> Result<PathBuf, TracefsError> {
    host::tracefs_root()
        .map(|r| r.join("events"))
        .filter(|p| p.is_dir())
        .ok_or(TracefsError::NotMounted)
}

/// Every tracepoint as `category:name`, sorted.
pub fn list() -> Result<Vec<String>, TracefsError> {
    let dir = events_dir()?;
    let read = |p: &std::path::Path| {
        std::fs::read_dir(p).map_err(|source| TracefsError::Read {
            path: p.to_owned(),
            source,
        })
    };
    let mut out = Vec::new();
    for cat in read(&dir)?.flatten() {
        if !cat.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let category = cat.file_name().to_string_lossy().into_owned();
        let Ok(events) = std::fs::read_dir(cat.path()) else {
            continue;
        };
        for ev in events.flatten() {
            if ev.path().join("format").is_file() {
                out.push(format!("{category}:{}", ev.file_name().to_string_lossy()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether tracefs has tracepoint `category:name` (both plain names, checked by the caller).
pub fn exists(category: &str, name: &str) -> bool {
    events_dir().is_ok_and(|d| d.join(category).join(name).join("format").is_file())
}

/// The format of `category:name`.
pub fn format(category: &str, name: &str) -> Result<Format, TracefsError> {
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    };
    if !valid(category) || !valid(name) {
        return Err(TracefsError::NoSuchTracepoint(format!("{category}:{name}")));
    }
    let path = events_dir()?.join(category).join(name).join("format");
    let text = std::fs::read_to_string(&path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            TracefsError::NoSuchTracepoint(format!("{category}:{name}"))
        } else {
            TracefsError::Read { path, source }
        }
    })?;
    Ok(parse(category, name, &text))
}

fn parse(category: &str, name: &str, text: &str) -> Format {
    let mut fields = Vec::new();
    let mut id = 0;
    let mut print_fmt = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("ID:") {
            id = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("print fmt:") {
            print_fmt = v.trim().to_owned();
        } else if let Some(rest) = line.strip_prefix("field:")
            && let Some(f) = parse_field(rest)
            && !f.name.starts_with("common_")
        {
            fields.push(f);
        }
    }
    Format {
        category: category.to_owned(),
        name: name.to_owned(),
        id,
        fields,
        print_fmt,
    }
}

/// `int dfd;\toffset:16;\tsize:8;\tsigned:0;`
fn parse_field(rest: &str) -> Option<TpField> {
    let mut parts = rest.split(';').map(str::trim);
    let decl = parts.next()?;
    let mut offset = None;
    let mut size = None;
    let mut signed = false;
    for p in parts {
        if let Some(v) = p.strip_prefix("offset:") {
            offset = v.parse().ok();
        } else if let Some(v) = p.strip_prefix("size:") {
            size = v.parse().ok();
        } else if let Some(v) = p.strip_prefix("signed:") {
            signed = v == "1";
        }
    }
    let split = decl.rfind([' ', '*'])?;
    let (ty, mut field) = (
        decl[..=split].trim().to_owned(),
        decl[split + 1..].trim().to_owned(),
    );
    let mut array_len = None;
    let mut ty = ty;
    if let Some(open) = field.find('[') {
        let len = field[open + 1..].trim_end_matches(']');
        array_len = len.parse().ok();
        ty = format!("{ty} {}", &field[open..]);
        field.truncate(open);
    }
    Some(TpField {
        name: field,
        ty,
        offset: offset?,
        size: size?,
        signed,
        array_len,
    })
}

/// A tracepoint record a gadget reads through CO-RE where the kernel's BTF describes it
/// and at fixed offsets where it does not (some distribution kernels leave tracepoint
/// record types out of their BTF). The offsets are checked against the tracepoint's
/// tracefs format before the gadget is loaded.
#[derive(Debug)]
pub struct FixedRecord {
    pub category: &'static str,
    pub name: &'static str,
    /// The BTF struct the gadget reads where the kernel has it.
    pub btf_type: &'static str,
    /// The fields of the fixed layout and their offsets.
    pub offsets: &'static [(&'static str, usize)],
    /// A 4-byte field only some kernels' records have, read at the offset the tracefs
    /// format gives (handed to the gadget as `gadget_cfg.arg0`).
    pub optional: Option<&'static str>,
}

impl FixedRecord {
    /// How a gadget reads this record here: through CO-RE where the kernel's BTF has the
    /// record's type (Ok(None)), else at its fixed layout, which the tracefs format must
    /// agree with, and then Ok(Some(offset of the optional field)) when the record has it.
    /// Err: why it cannot be read.
    pub fn resolve(&self) -> Result<Option<usize>, String> {
        if super::btf::vmlinux_has_struct(self.btf_type) {
            return Ok(None);
        }
        let (category, name) = (self.category, self.name);
        let format = format(category, name)
            .map_err(|e| format!("reading the format of {category}:{name}: {e}"))?;
        self.check(&format)?;
        Ok(self.optional.and_then(|field| {
            let f = format.fields.iter().find(|f| f.name == field)?;
            (f.size == 4 && f.offset < 0x1000).then_some(f.offset)
        }))
    }

    fn check(&self, format: &Format) -> Result<(), String> {
        let (category, name) = (self.category, self.name);
        for &(field, offset) in self.offsets {
            match format.fields.iter().find(|f| f.name == field) {
                Some(f) if f.offset == offset => {}
                Some(f) => {
                    return Err(format!(
                        "the kernel's BTF does not describe the {category}:{name} record and \
                         its tracefs format has `{field}` at offset {}, where the gadget's fixed \
                         layout has {offset}",
                        f.offset
                    ));
                }
                None => {
                    return Err(format!(
                        "the kernel's BTF does not describe the {category}:{name} record and \
                         its tracefs format has no field `{field}`"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_format_files() {
        let text = "name: sys_enter_openat\nID: 782\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;\n\
            \tfield:const char * filename;\toffset:24;\tsize:8;\tsigned:0;\n\
            \tfield:__data_loc char[] name;\toffset:32;\tsize:4;\tsigned:0;\n\
            \tfield:char comm[16];\toffset:36;\tsize:16;\tsigned:0;\n\
            \nprint fmt: \"x\"\n";
        let f = parse("syscalls", "sys_enter_openat", text);
        assert_eq!(f.id, 782);
        assert_eq!(f.fields.len(), 4);
        assert_eq!(f.fields[1].name, "filename");
        assert!(f.fields[1].is_user_string());
        assert!(f.fields[2].is_data_loc() && f.fields[2].name == "name");
        assert_eq!(f.fields[3].array_len, Some(16));
        assert!(f.fields[3].is_char_array());
        assert_eq!(f.fixed_size(), 52);
        assert!(format("../x", "y").is_err());
    }

    #[test]
    fn a_fixed_layout_is_checked_against_the_format() {
        let record = FixedRecord {
            category: "tcp",
            name: "tcp_retransmit_skb",
            btf_type: "no_such_type",
            offsets: &[("skaddr", 16), ("family", 32)],
            optional: None,
        };
        let text = |family_at: u32| {
            format!(
                "format:\n\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;\n\
                 \tfield:__u16 family;\toffset:{family_at};\tsize:2;\tsigned:0;\n"
            )
        };
        assert!(record.check(&parse("tcp", "x", &text(32))).is_ok());
        let moved = record.check(&parse("tcp", "x", &text(34))).unwrap_err();
        assert!(moved.contains("`family` at offset 34"), "{moved}");
        let missing = record.check(&parse("tcp", "x", "format:\n")).unwrap_err();
        assert!(missing.contains("no field `skaddr`"), "{missing}");
    }
}
