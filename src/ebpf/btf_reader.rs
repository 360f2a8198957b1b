//! A small BTF reader: enough of the format to walk the types of a map's key and value and
//! turn raw bytes into JSON the way bpftool's "formatted" output does (ints, bools, enums
//! by name, structs, unions, arrays, bitfields, printable char arrays as strings). aya 0.14
//! has no public type walker. Types are indexed, not copied: a blob costs its own size plus
//! four bytes per type.

use serde_json::Value;

const MAGIC: u16 = 0xeb9f;
const HEADER_MIN: usize = 24;

/// BTF kinds (linux/btf.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Void,
    Int,
    Ptr,
    Array,
    Struct,
    Union,
    Enum,
    Fwd,
    Typedef,
    Volatile,
    Const,
    Restrict,
    Func,
    FuncProto,
    Var,
    Datasec,
    Float,
    DeclTag,
    TypeTag,
    Enum64,
    Unknown(u32),
}

impl Kind {
    fn from_raw(k: u32) -> Self {
        match k {
            0 => Self::Void,
            1 => Self::Int,
            2 => Self::Ptr,
            3 => Self::Array,
            4 => Self::Struct,
            5 => Self::Union,
            6 => Self::Enum,
            7 => Self::Fwd,
            8 => Self::Typedef,
            9 => Self::Volatile,
            10 => Self::Const,
            11 => Self::Restrict,
            12 => Self::Func,
            13 => Self::FuncProto,
            14 => Self::Var,
            15 => Self::Datasec,
            16 => Self::Float,
            17 => Self::DeclTag,
            18 => Self::TypeTag,
            19 => Self::Enum64,
            other => Self::Unknown(other),
        }
    }

    /// Bytes of kind-specific data after the common 12-byte header.
    fn extra_len(self, vlen: usize) -> usize {
        match self {
            Self::Int | Self::Var | Self::DeclTag => 4,
            Self::Array => 12,
            Self::Struct | Self::Union | Self::Enum64 | Self::Datasec => 12 * vlen,
            Self::Enum | Self::FuncProto => 8 * vlen,
            _ => 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("BTF blob is truncated or malformed: {0}")]
    Malformed(&'static str),
    #[error("BTF has no type {0}")]
    NoType(u32),
}

/// A parsed BTF blob.
#[derive(Debug)]
pub struct Btf {
    data: Vec<u8>,
    types_start: usize,
    strings_start: usize,
    strings_len: usize,
    /// Byte offset (in `data`) of type id `i + 1`.
    offsets: Vec<u32>,
}

/// One type's header fields.
#[derive(Debug, Clone, Copy)]
pub struct Type<'a> {
    pub kind: Kind,
    pub name_off: u32,
    pub vlen: usize,
    pub kind_flag: bool,
    /// `size` for sized kinds, the referenced type id for the others.
    pub size_or_type: u32,
    extra: &'a [u8],
}

/// A struct or union member.
#[derive(Debug, Clone, Copy)]
pub struct Member {
    pub name_off: u32,
    pub type_id: u32,
    pub bit_offset: u32,
    /// Non-zero for bitfields.
    pub bit_size: u32,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl Btf {
    pub fn parse(data: Vec<u8>) -> Result<Self, BtfError> {
        let magic = data.get(0..2).map(|m| u16::from_le_bytes([m[0], m[1]]));
        if magic != Some(MAGIC) {
            return Err(BtfError::Malformed(
                "bad magic (only little-endian BTF is read)",
            ));
        }
        let field = |off| u32_at(&data, off).ok_or(BtfError::Malformed("short header"));
        let hdr_len = field(4)? as usize;
        if hdr_len < HEADER_MIN {
            return Err(BtfError::Malformed("header too short"));
        }
        let (type_off, type_len) = (field(8)? as usize, field(12)? as usize);
        let (str_off, str_len) = (field(16)? as usize, field(20)? as usize);
        let types_start = hdr_len + type_off;
        let strings_start = hdr_len + str_off;
        if types_start + type_len > data.len() || strings_start + str_len > data.len() {
            return Err(BtfError::Malformed("sections run past the end"));
        }
        let mut offsets = Vec::new();
        let mut pos = types_start;
        let end = types_start + type_len;
        while pos < end {
            let info = u32_at(&data, pos + 4).ok_or(BtfError::Malformed("short type"))?;
            let kind = Kind::from_raw((info >> 24) & 0x1f);
            let vlen = (info & 0xffff) as usize;
            if let Kind::Unknown(_) = kind {
                return Err(BtfError::Malformed("unknown type kind"));
            }
            offsets.push(pos as u32);
            pos += 12 + kind.extra_len(vlen);
        }
        if pos != end {
            return Err(BtfError::Malformed("type section length mismatch"));
        }
        Ok(Self {
            data,
            types_start,
            strings_start,
            strings_len: str_len,
            offsets,
        })
    }

    /// Number of types (ids 1..=len).
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    pub fn string(&self, off: u32) -> &str {
        let off = off as usize;
        if off >= self.strings_len {
            return "";
        }
        let s = &self.data[self.strings_start + off..self.strings_start + self.strings_len];
        let end = s.iter().position(|b| *b == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    pub fn get(&self, id: u32) -> Result<Type<'_>, BtfError> {
        if id == 0 {
            return Ok(Type {
                kind: Kind::Void,
                name_off: 0,
                vlen: 0,
                kind_flag: false,
                size_or_type: 0,
                extra: &[],
            });
        }
        let pos = *self
            .offsets
            .get(id as usize - 1)
            .ok_or(BtfError::NoType(id))? as usize;
        let d = &self.data;
        let name_off = u32_at(d, pos).ok_or(BtfError::NoType(id))?;
        let info = u32_at(d, pos + 4).ok_or(BtfError::NoType(id))?;
        let size_or_type = u32_at(d, pos + 8).ok_or(BtfError::NoType(id))?;
        let kind = Kind::from_raw((info >> 24) & 0x1f);
        let vlen = (info & 0xffff) as usize;
        let extra_len = kind.extra_len(vlen);
        let extra = d
            .get(pos + 12..pos + 12 + extra_len)
            .ok_or(BtfError::NoType(id))?;
        let _ = self.types_start;
        Ok(Type {
            kind,
            name_off,
            vlen,
            kind_flag: info & 0x8000_0000 != 0,
            size_or_type,
            extra,
        })
    }

    /// The linkage word of a VAR type (0 static, 1 global, 2 extern), `None` for other kinds.
    pub fn var_linkage(&self, id: u32) -> Option<u32> {
        let t = self.get(id).ok()?;
        (t.kind == Kind::Var).then(|| u32_at(t.extra, 0)).flatten()
    }

    pub fn name(&self, id: u32) -> &str {
        self.get(id).map(|t| self.string(t.name_off)).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the type that has a layout.
    pub fn resolve(&self, mut id: u32) -> Result<(u32, Type<'_>), BtfError> {
        for _ in 0..64 {
            let t = self.get(id)?;
            match t.kind {
                Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag => {
                    id = t.size_or_type;
                }
                _ => return Ok((id, t)),
            }
        }
        Err(BtfError::Malformed("typedef chain too long"))
    }

    /// Size in bytes of a type.
    pub fn size_of(&self, id: u32) -> Result<usize, BtfError> {
        let (_, t) = self.resolve(id)?;
        Ok(match t.kind {
            Kind::Int
            | Kind::Struct
            | Kind::Union
            | Kind::Enum
            | Kind::Enum64
            | Kind::Float
            | Kind::Datasec => t.size_or_type as usize,
            Kind::Ptr => 8,
            Kind::Array => {
                let (elem, _, n) = t.array();
                self.size_of(elem)? * n as usize
            }
            _ => 0,
        })
    }

    /// A readable name for a type: `struct flow`, `u32`, `char[16]`.
    pub fn type_name(&self, id: u32) -> String {
        let Ok(t) = self.get(id) else {
            return format!("#{id}");
        };
        let name = self.string(t.name_off);
        match t.kind {
            Kind::Void => "void".into(),
            Kind::Struct => format!("struct {name}"),
            Kind::Union => format!("union {name}"),
            Kind::Enum | Kind::Enum64 => format!("enum {name}"),
            Kind::Ptr => format!("{} *", self.type_name(t.size_or_type)),
            Kind::Array => {
                let (elem, _, n) = t.array();
                format!("{}[{n}]", self.type_name(elem))
            }
            Kind::Const | Kind::Volatile | Kind::Restrict | Kind::TypeTag if name.is_empty() => {
                self.type_name(t.size_or_type)
            }
            _ => name.to_owned(),
        }
    }
}

impl Type<'_> {
    /// INT: (encoding, bit offset, bits). Encoding bits: 1 signed, 2 char, 4 bool.
    pub fn int(&self) -> (u32, u32, u32) {
        let v = u32_at(self.extra, 0).unwrap_or(0);
        ((v >> 24) & 0xf, (v >> 16) & 0xff, v & 0xff)
    }

    /// ARRAY: (element type, index type, number of elements).
    pub fn array(&self) -> (u32, u32, u32) {
        (
            u32_at(self.extra, 0).unwrap_or(0),
            u32_at(self.extra, 4).unwrap_or(0),
            u32_at(self.extra, 8).unwrap_or(0),
        )
    }

    pub fn members(&self) -> impl Iterator<Item = Member> + '_ {
        let kind_flag = self.kind_flag;
        (0..self.vlen).map(move |i| {
            let b = i * 12;
            let offset = u32_at(self.extra, b + 8).unwrap_or(0);
            let (bit_offset, bit_size) = if kind_flag {
                (offset & 0x00ff_ffff, offset >> 24)
            } else {
                (offset, 0)
            };
            Member {
                name_off: u32_at(self.extra, b).unwrap_or(0),
                type_id: u32_at(self.extra, b + 4).unwrap_or(0),
                bit_offset,
                bit_size,
            }
        })
    }

    /// FUNC_PROTO parameters as (name offset, type id); the return type is `size_or_type`.
    pub fn params(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        (0..self.vlen).map(move |i| {
            (
                u32_at(self.extra, i * 8).unwrap_or(0),
                u32_at(self.extra, i * 8 + 4).unwrap_or(0),
            )
        })
    }

    /// ENUM / ENUM64 entries as (name offset, value).
    pub fn enumerators(&self) -> impl Iterator<Item = (u32, i128)> + '_ {
        let signed = self.kind_flag;
        let is64 = self.kind == Kind::Enum64;
        (0..self.vlen).map(move |i| {
            if is64 {
                let b = i * 12;
                let lo = u64::from(u32_at(self.extra, b + 4).unwrap_or(0));
                let hi = u64::from(u32_at(self.extra, b + 8).unwrap_or(0));
                let v = (hi << 32) | lo;
                let v = if signed {
                    i128::from(v as i64)
                } else {
                    i128::from(v)
                };
                (u32_at(self.extra, b).unwrap_or(0), v)
            } else {
                let b = i * 8;
                let raw = u32_at(self.extra, b + 4).unwrap_or(0);
                let v = if signed {
                    i128::from(raw as i32)
                } else {
                    i128::from(raw)
                };
                (u32_at(self.extra, b).unwrap_or(0), v)
            }
        })
    }
}

/// Little-endian unsigned value of up to 16 bytes.
fn read_uint(bytes: &[u8]) -> u128 {
    bytes
        .iter()
        .rev()
        .fold(0u128, |acc, b| (acc << 8) | u128::from(*b))
}

/// A JSON number for integers that fit 64 bits, a hex string otherwise (as bpftool does).
fn write_int(out: &mut String, v: i128) {
    use std::fmt::Write;
    // 64-bit formatting is several times faster than 128-bit; almost every value fits.
    if let Ok(u) = u64::try_from(v) {
        let _ = write!(out, "{u}");
    } else if let Ok(i) = i64::try_from(v) {
        let _ = write!(out, "{i}");
    } else {
        let _ = write!(out, "\"{v:#x}\"");
    }
}

/// A JSON string literal.
pub fn write_str(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Raw bytes as bpftool prints them without BTF: ["0x01", "0x00", ...].
fn write_hex_bytes(out: &mut String, bytes: &[u8]) {
    use std::fmt::Write;
    out.push('[');
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "\"{b:#04x}\"");
    }
    out.push(']');
}

/// Hex bytes as bpftool prints raw keys and values: ["0x01", "0x00", ...].
pub fn hex_bytes(bytes: &[u8]) -> Value {
    let mut s = String::new();
    write_hex_bytes(&mut s, bytes);
    serde_json::from_str(&s).unwrap_or(Value::Null)
}

impl Btf {
    /// Decodes `bytes` as type `id` into a JSON value.
    pub fn decode(&self, id: u32, bytes: &[u8]) -> Value {
        let mut s = String::new();
        self.write_json(id, bytes, &mut s);
        serde_json::from_str(&s).unwrap_or(Value::Null)
    }

    /// Appends `bytes`, decoded as type `id`, to `out` as JSON. This is the decoder; writing
    /// text directly (rather than building values) is what lets a million-entry dump stream.
    pub fn write_json(&self, id: u32, bytes: &[u8], out: &mut String) {
        self.write_at(id, bytes, 0, 0, out);
    }

    fn write_at(&self, id: u32, bytes: &[u8], bit_offset: u32, bit_size: u32, out: &mut String) {
        let Ok((_, t)) = self.resolve(id) else {
            return write_hex_bytes(out, bytes);
        };
        match t.kind {
            Kind::Int => {
                let (enc, int_off, bits) = t.int();
                let size = t.size_or_type as usize;
                if bit_size > 0 || int_off > 0 || (bits as usize) < size * 8 {
                    let width = if bit_size > 0 { bit_size } else { bits };
                    return self.write_bitfield(
                        bytes,
                        bit_offset + int_off,
                        width,
                        enc & 1 != 0,
                        out,
                    );
                }
                let Some(b) = bytes.get(..size) else {
                    return write_hex_bytes(out, bytes);
                };
                let raw = read_uint(b);
                if enc & 4 != 0 {
                    out.push_str(if raw != 0 { "true" } else { "false" });
                } else if enc & 1 != 0 && size > 0 && size <= 16 {
                    let shift = 128 - size * 8;
                    write_int(out, ((raw << shift) as i128) >> shift);
                } else if size > 8 {
                    use std::fmt::Write;
                    let _ = write!(out, "\"{raw:#x}\"");
                } else {
                    write_int(out, raw as i128);
                }
            }
            Kind::Ptr => write_int(out, read_uint(bytes.get(..8).unwrap_or(bytes)) as i128),
            Kind::Enum | Kind::Enum64 => {
                if bit_size > 0 {
                    return self.write_bitfield(bytes, bit_offset, bit_size, t.kind_flag, out);
                }
                let size = t.size_or_type as usize;
                let raw = read_uint(bytes.get(..size).unwrap_or(bytes));
                let value = if t.kind_flag && size > 0 && size <= 16 {
                    let shift = 128 - size * 8;
                    ((raw << shift) as i128) >> shift
                } else {
                    raw as i128
                };
                match t.enumerators().find(|(_, v)| *v == value) {
                    Some((name, _)) => write_str(out, self.string(name)),
                    None => write_int(out, value),
                }
            }
            Kind::Float => {
                use std::fmt::Write;
                let size = t.size_or_type as usize;
                let f = match bytes.get(..size) {
                    Some(b) if size == 4 => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                    Some(b) if size == 8 => {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(b);
                        f64::from_le_bytes(a)
                    }
                    _ => return write_hex_bytes(out, bytes),
                };
                if f.is_finite() {
                    let _ = write!(
                        out,
                        "{}",
                        serde_json::Number::from_f64(f)
                            .map_or(String::from("0"), |n| n.to_string())
                    );
                } else {
                    write_str(out, &f.to_string());
                }
            }
            Kind::Array => {
                let (elem, _, n) = t.array();
                let elem_size = self.size_of(elem).unwrap_or(0);
                if let Some(text) = self.char_array_string(elem, bytes, n as usize) {
                    return write_str(out, &text);
                }
                out.push('[');
                if elem_size > 0 {
                    for i in 0..n as usize {
                        if i > 0 {
                            out.push(',');
                        }
                        let start = i * elem_size;
                        let b = bytes.get(start..start + elem_size).unwrap_or(&[]);
                        self.write_at(elem, b, 0, 0, out);
                    }
                }
                out.push(']');
            }
            Kind::Struct | Kind::Union => {
                out.push('{');
                for (i, m) in t.members().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(out, self.string(m.name_off));
                    out.push(':');
                    let byte = (m.bit_offset / 8) as usize;
                    if m.bit_size > 0 {
                        self.write_at(m.type_id, bytes, m.bit_offset, m.bit_size, out);
                    } else if m.bit_offset.is_multiple_of(8) {
                        let size = self.size_of(m.type_id).unwrap_or(0);
                        let b = bytes.get(byte..byte + size).unwrap_or(&[]);
                        self.write_at(m.type_id, b, 0, 0, out);
                    } else {
                        self.write_at(m.type_id, bytes, m.bit_offset, 0, out);
                    }
                }
                out.push('}');
            }
            _ => write_hex_bytes(out, bytes),
        }
    }

    fn write_bitfield(
        &self,
        bytes: &[u8],
        bit_offset: u32,
        bits: u32,
        signed: bool,
        out: &mut String,
    ) {
        let start = (bit_offset / 8) as usize;
        let shift = bit_offset % 8;
        let take = ((shift + bits).div_ceil(8) as usize).min(16);
        let Some(b) = bytes.get(start..start + take) else {
            return write_hex_bytes(out, bytes);
        };
        let raw = read_uint(b) >> shift;
        let mask = if bits >= 128 {
            u128::MAX
        } else {
            (1u128 << bits) - 1
        };
        let v = raw & mask;
        if signed && bits > 0 && bits < 128 && (v >> (bits - 1)) & 1 == 1 {
            write_int(out, v as i128 - (1i128 << bits));
        } else {
            write_int(out, v as i128);
        }
    }

    /// A `char[N]` holding printable text up to a NUL, as a string. bpftool's rule, kept
    /// exactly so output matches it: elements are 1-byte ints named `char` (or with the CHAR
    /// encoding), reached through qualifiers but not typedefs (`__u8[4]` stays numbers).
    fn char_array_string(&self, elem: u32, bytes: &[u8], n: usize) -> Option<String> {
        let mut id = elem;
        let t = loop {
            let t = self.get(id).ok()?;
            match t.kind {
                Kind::Const | Kind::Volatile | Kind::Restrict | Kind::TypeTag => {
                    id = t.size_or_type
                }
                _ => break t,
            }
        };
        if t.kind != Kind::Int || t.size_or_type != 1 || n == 0 {
            return None;
        }
        let (enc, _, _) = t.int();
        if enc & 2 == 0 && self.string(t.name_off) != "char" {
            return None;
        }
        let b = bytes.get(..n)?;
        let end = b.iter().position(|c| *c == 0)?;
        let text = &b[..end];
        if text.iter().all(|c| (0x20..0x7f).contains(c)) {
            Some(String::from_utf8_lossy(text).into_owned())
        } else {
            None
        }
    }

    /// Encodes a decoded JSON value back into bytes of type `id` (for `map_lookup` keys).
    pub fn encode(&self, id: u32, value: &Value, out: &mut [u8]) -> Result<(), String> {
        let (_, t) = self.resolve(id).map_err(|e| e.to_string())?;
        match t.kind {
            Kind::Int | Kind::Enum | Kind::Enum64 | Kind::Ptr => {
                let size = match t.kind {
                    Kind::Ptr => 8,
                    _ => t.size_or_type as usize,
                };
                let n: i128 = match value {
                    Value::Bool(b) => i128::from(*b),
                    Value::Number(n) => n
                        .as_i64()
                        .map(i128::from)
                        .or_else(|| n.as_u64().map(i128::from))
                        .ok_or_else(|| format!("`{n}` is not an integer"))?,
                    Value::String(s) if matches!(t.kind, Kind::Enum | Kind::Enum64) => t
                        .enumerators()
                        .find(|(name, _)| self.string(*name) == s)
                        .map(|(_, v)| v)
                        .ok_or_else(|| format!("`{s}` is not a value of {}", self.type_name(id)))?,
                    Value::String(s) => {
                        parse_int(s).ok_or_else(|| format!("`{s}` is not an integer"))?
                    }
                    other => {
                        return Err(format!(
                            "expected an integer for {}, got {other}",
                            self.type_name(id)
                        ));
                    }
                };
                // Cut to `size` bytes, a larger number would name another key: refused.
                // Either reading of the bytes is accepted (-1 for 0xffffffff).
                let bits = size.min(16) * 8;
                if bits < 128 && (n < -(1i128 << (bits - 1)) || n >= 1i128 << bits) {
                    return Err(format!(
                        "`{n}` does not fit {} ({size} bytes)",
                        self.type_name(id)
                    ));
                }
                let bytes = n.to_le_bytes();
                let slot = out.get_mut(..size).ok_or("key buffer too small")?;
                slot.copy_from_slice(&bytes[..size]);
                Ok(())
            }
            Kind::Array => {
                let (elem, _, n) = t.array();
                let elem_size = self.size_of(elem).map_err(|e| e.to_string())?;
                if let Value::String(s) = value {
                    let slot = out.get_mut(..n as usize).ok_or("key buffer too small")?;
                    if s.len() >= n as usize {
                        return Err(format!("`{s}` does not fit {}", self.type_name(id)));
                    }
                    slot.fill(0);
                    slot[..s.len()].copy_from_slice(s.as_bytes());
                    return Ok(());
                }
                let items = value
                    .as_array()
                    .ok_or_else(|| format!("expected an array for {}", self.type_name(id)))?;
                if items.len() != n as usize {
                    return Err(format!(
                        "{} needs {n} elements, got {}",
                        self.type_name(id),
                        items.len()
                    ));
                }
                for (i, item) in items.iter().enumerate() {
                    let start = i * elem_size;
                    let slot = out
                        .get_mut(start..start + elem_size)
                        .ok_or("key buffer too small")?;
                    self.encode(elem, item, slot)?;
                }
                Ok(())
            }
            Kind::Struct | Kind::Union => {
                let obj = value
                    .as_object()
                    .ok_or_else(|| format!("expected an object for {}", self.type_name(id)))?;
                for m in t.members() {
                    let name = self.string(m.name_off);
                    let Some(v) = obj.get(name) else {
                        if t.kind == Kind::Union {
                            continue;
                        }
                        return Err(format!("{} needs field `{name}`", self.type_name(id)));
                    };
                    if m.bit_size > 0 || m.bit_offset % 8 != 0 {
                        return Err(format!(
                            "bitfield `{name}` cannot be given in a key; pass the key as hex"
                        ));
                    }
                    let start = (m.bit_offset / 8) as usize;
                    let size = self.size_of(m.type_id).map_err(|e| e.to_string())?;
                    let slot = out
                        .get_mut(start..start + size)
                        .ok_or("key buffer too small")?;
                    self.encode(m.type_id, v, slot)?;
                }
                if let Some(extra) = obj
                    .keys()
                    .find(|k| !t.members().any(|m| self.string(m.name_off) == k.as_str()))
                {
                    return Err(format!("{} has no field `{extra}`", self.type_name(id)));
                }
                Ok(())
            }
            _ => Err(format!("cannot encode a value of {}", self.type_name(id))),
        }
    }
}

fn parse_int(s: &str) -> Option<i128> {
    let s = s.trim();
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        i128::from_str_radix(hex, 16).ok()
    } else {
        s.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Builds a BTF blob from (kind, name, info-vlen, kind_flag, size_or_type, extra words).
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Builder {
        fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
            }
        }
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        fn ty(&mut self, kind: u32, name: &str, vlen: u32, kflag: bool, size: u32, extra: &[u32]) {
            let n = self.s(name);
            let info = (kind << 24) | vlen | if kflag { 1 << 31 } else { 0 };
            for w in [n, info, size].iter().chain(extra) {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
        }
        fn build(self) -> Btf {
            let mut d = Vec::new();
            d.extend_from_slice(&MAGIC.to_le_bytes());
            d.push(1);
            d.push(0);
            for w in [
                24u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                d.extend_from_slice(&w.to_le_bytes());
            }
            d.extend_from_slice(&self.types);
            d.extend_from_slice(&self.strings);
            Btf::parse(d).unwrap()
        }
    }

    #[test]
    fn decodes_structs_enums_bitfields_and_strings() {
        let mut b = Builder::new();
        b.ty(1, "unsigned int", 0, false, 4, &[32]); // 1: u32
        b.ty(1, "char", 0, false, 1, &[(2 << 24) | 8]); // 2: char
        b.ty(3, "", 0, false, 0, &[2, 1, 8]); // 3: char[8]
        let (on, off) = (b.s("ON"), b.s("OFF"));
        b.ty(6, "state", 2, false, 4, &[off, 0, on, 1]); // 4: enum state
        b.ty(1, "_Bool", 0, false, 1, &[(4 << 24) | 8]); // 5: bool
        b.ty(1, "int", 0, false, 4, &[(1 << 24) | 32]); // 6: int
        let names = [
            b.s("id"),
            b.s("name"),
            b.s("st"),
            b.s("up"),
            b.s("lo"),
            b.s("hi"),
        ];
        // 7: struct rec { u32 id; char name[8]; enum state st; bool up; int lo:4 (signed); u32 hi:12; }
        b.ty(
            4,
            "rec",
            6,
            true,
            24,
            &[
                names[0],
                1,
                0,
                names[1],
                3,
                32,
                names[2],
                4,
                96,
                names[3],
                5,
                128,
                names[4],
                6,
                (4 << 24) | 160,
                names[5],
                1,
                (12 << 24) | 164,
            ],
        );
        let btf = b.build();
        let mut bytes = vec![0u8; 24];
        bytes[0..4].copy_from_slice(&7u32.to_le_bytes());
        bytes[4..9].copy_from_slice(b"eth0\0");
        bytes[12..16].copy_from_slice(&1u32.to_le_bytes());
        bytes[16] = 1;
        // lo = -3 in 4 bits (0b1101), hi = 0xabc in the next 12 bits.
        let packed: u32 = 0b1101 | (0xabc << 4);
        bytes[20..24].copy_from_slice(&packed.to_le_bytes());
        let v = btf.decode(7, &bytes);
        assert_eq!(
            v,
            json!({"id": 7, "name": "eth0", "st": "ON", "up": true, "lo": -3, "hi": 0xabc})
        );
        assert_eq!(btf.type_name(7), "struct rec");
        assert_eq!(btf.type_name(3), "char[8]");
        assert_eq!(btf.size_of(7).unwrap(), 24);

        let mut back = vec![0u8; 4];
        btf.encode(4, &json!("ON"), &mut back).unwrap();
        assert_eq!(back, 1u32.to_le_bytes());
        assert!(btf.encode(4, &json!("MAYBE"), &mut back).is_err());
    }

    #[test]
    fn unprintable_char_arrays_stay_arrays_and_garbage_is_rejected() {
        let mut b = Builder::new();
        b.ty(1, "char", 0, false, 1, &[(2 << 24) | 8]);
        b.ty(3, "", 0, false, 0, &[1, 1, 4]);
        let btf = b.build();
        assert_eq!(btf.decode(2, &[0x01, 0x02, 0, 0]), json!([1, 2, 0, 0]));
        assert!(Btf::parse(vec![1, 2, 3]).is_err());
        assert!(Btf::parse(vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
    }

    #[test]
    fn pointers_unions_qualifiers_wide_ints_floats_and_enum64() {
        let mut b = Builder::new();
        b.ty(1, "unsigned int", 0, false, 4, &[32]); // 1: u32
        b.ty(2, "", 0, false, 1, &[]); // 2: u32 *
        b.ty(8, "u32_t", 0, false, 1, &[]); // 3: typedef u32_t
        b.ty(10, "", 0, false, 3, &[]); // 4: const u32_t
        b.ty(9, "", 0, false, 4, &[]); // 5: volatile const u32_t
        b.ty(1, "__int128", 0, false, 16, &[(1 << 24) | 128]); // 6: signed 128
        b.ty(16, "double", 0, false, 8, &[]); // 7: double
        b.ty(16, "float", 0, false, 4, &[]); // 8: float
        let (big, small) = (b.s("BIG"), b.s("NEG"));
        // 9: enum64 with a value past 32 bits and a negative one (signed: kind_flag).
        b.ty(
            19,
            "wide",
            2,
            true,
            8,
            &[big, 0, 1, small, u32::MAX, u32::MAX],
        );
        let (a, f) = (b.s("a"), b.s("f"));
        b.ty(5, "either", 2, false, 8, &[a, 1, 0, f, 7, 0]); // 10: union { u32 a; double f; }
        b.ty(1, "unsigned __int128", 0, false, 16, &[128]); // 11: too wide for a JSON number
        b.ty(3, "", 0, false, 0, &[1, 1, 2]); // 12: u32[2]
        let (arr, ptr) = (b.s("arr"), b.s("ptr"));
        b.ty(4, "holder", 2, false, 16, &[arr, 12, 0, ptr, 2, 64]); // 13
        let btf = b.build();
        assert_eq!(btf.len(), 13);
        assert!(!btf.is_empty());
        assert_eq!(btf.type_name(2), "unsigned int *");
        assert_eq!(btf.type_name(5), "u32_t", "unnamed qualifiers read through");
        assert_eq!(btf.type_name(10), "union either");
        assert_eq!(btf.type_name(99), "#99");
        assert_eq!(btf.size_of(2).unwrap(), 8);
        assert_eq!(btf.size_of(5).unwrap(), 4);
        assert_eq!(btf.decode(5, &7u32.to_le_bytes()), json!(7));
        assert_eq!(
            btf.decode(2, &0xffff_0000u64.to_le_bytes()),
            json!(0xffff_0000u64)
        );
        assert_eq!(btf.decode(6, &(-5i128).to_le_bytes()), json!(-5));
        assert_eq!(btf.decode(7, &2.5f64.to_le_bytes()), json!(2.5));
        assert_eq!(btf.decode(8, &0.5f32.to_le_bytes()), json!(0.5));
        assert_eq!(btf.decode(7, &f64::NAN.to_le_bytes()), json!("NaN"));
        assert_eq!(btf.decode(9, &(1u64 << 32).to_le_bytes()), json!("BIG"));
        assert_eq!(btf.decode(9, &(-1i64).to_le_bytes()), json!("NEG"));
        assert_eq!(
            btf.decode(9, &3u64.to_le_bytes()),
            json!(3),
            "no name: the number"
        );
        let either = btf.decode(10, &1.0f64.to_le_bytes());
        assert_eq!(either["f"], json!(1.0));
        let wide = format!("{:#x}", u128::from_le_bytes([0xab; 16]));
        assert_eq!(btf.decode(11, &[0xab; 16]), json!(wide));
        assert_eq!(
            btf.decode(1, &[1, 2]),
            json!(["0x01", "0x02"]),
            "short input: hex"
        );
        assert_eq!(hex_bytes(&[1, 0xff]), json!(["0x01", "0xff"]));
        // Encoding: integers as numbers or strings (hex too), arrays by length, fields.
        let mut out = [0u8; 16];
        btf.encode(13, &json!({"arr": ["0x10", -1], "ptr": 0}), &mut out)
            .unwrap();
        assert_eq!(&out[..8], &[0x10, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        for (value, needle) in [
            (json!({"arr": [1]}), "needs 2 elements"),
            (json!({"arr": ["x", 1]}), "`x` is not an integer"),
            (json!({"arr": [[1], 1]}), "expected an integer"),
            (
                json!({"arr": ["0x1ffffffff", 1], "ptr": 0}),
                "does not fit unsigned int",
            ),
            (
                json!({"arr": [-2147483649i64, 1], "ptr": 0}),
                "does not fit",
            ),
            (
                json!({"arr": [1, 2], "ptr": 0, "nope": 1}),
                "has no field `nope`",
            ),
        ] {
            let err = btf.encode(13, &value, &mut out).unwrap_err();
            assert!(err.contains(needle), "{value}: {err}");
        }
        assert!(
            btf.encode(7, &json!(1), &mut out)
                .unwrap_err()
                .contains("cannot encode")
        );
        // Paths into values, and the mistakes in them.
        let loc = btf.locate(13, &["arr", "1"]).unwrap();
        let mut value = vec![0u8; 16];
        value[4] = 9;
        assert_eq!(btf.decode_field(loc, &value), json!(9));
        assert_eq!(
            btf.decode_field(loc, &value[..4]),
            Value::Null,
            "short input"
        );
        assert!(
            btf.locate(13, &["arr", "2"])
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            btf.locate(13, &["arr", "x"])
                .unwrap_err()
                .contains("index it with a number")
        );
        assert!(
            btf.locate(13, &["ptr", "x"])
                .unwrap_err()
                .contains("has no field `x`")
        );
        let none = btf.locate(13, &["zzz"]).unwrap_err();
        assert!(none.contains("its fields are: arr, ptr"), "{none}");
        // A header shorter than its own length field is refused.
        let mut short = MAGIC.to_le_bytes().to_vec();
        short.extend_from_slice(&[1, 0, 8, 0, 0, 0]);
        assert!(Btf::parse(short).is_err());
    }
}

/// Where a field lives inside a value of some type (see [`Btf::locate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub type_id: u32,
    pub bit_offset: u32,
    pub bit_size: u32,
}

impl Btf {
    /// Resolves a field path (`["range", "lo"]`, `["hist", "3"]`) inside type `id`.
    pub fn locate(&self, id: u32, path: &[&str]) -> Result<Located, String> {
        let mut loc = Located {
            type_id: id,
            bit_offset: 0,
            bit_size: 0,
        };
        for (depth, part) in path.iter().enumerate() {
            let (_, t) = self.resolve(loc.type_id).map_err(|e| e.to_string())?;
            match t.kind {
                Kind::Struct | Kind::Union => {
                    let m = t
                        .members()
                        .find(|m| self.string(m.name_off) == *part)
                        .ok_or_else(|| {
                            let fields: Vec<&str> =
                                t.members().map(|m| self.string(m.name_off)).collect();
                            format!(
                                "{} has no field `{part}`; its fields are: {}",
                                self.type_name(loc.type_id),
                                fields.join(", ")
                            )
                        })?;
                    loc = Located {
                        type_id: m.type_id,
                        bit_offset: loc.bit_offset + m.bit_offset,
                        bit_size: m.bit_size,
                    };
                }
                Kind::Array => {
                    let (elem, _, n) = t.array();
                    let i: u32 = part.parse().map_err(|_| {
                        format!(
                            "`{}` is an array: index it with a number, e.g. `{}.0`",
                            path[..depth].join("."),
                            path[..depth].join(".")
                        )
                    })?;
                    if i >= n {
                        return Err(format!(
                            "index {i} is out of range for {}",
                            self.type_name(loc.type_id)
                        ));
                    }
                    let size = self.size_of(elem).map_err(|e| e.to_string())? as u32;
                    loc = Located {
                        type_id: elem,
                        bit_offset: loc.bit_offset + i * size * 8,
                        bit_size: 0,
                    };
                }
                _ => {
                    return Err(format!(
                        "`{}` is {} and has no field `{part}`",
                        path[..depth].join("."),
                        self.type_name(loc.type_id)
                    ));
                }
            }
        }
        Ok(loc)
    }

    /// Decodes the field at `loc` from the bytes of its containing value.
    pub fn decode_field(&self, loc: Located, bytes: &[u8]) -> Value {
        let mut s = String::new();
        if loc.bit_size > 0 || !loc.bit_offset.is_multiple_of(8) {
            self.write_at(loc.type_id, bytes, loc.bit_offset, loc.bit_size, &mut s);
        } else {
            let start = (loc.bit_offset / 8) as usize;
            let size = self.size_of(loc.type_id).unwrap_or(0);
            match bytes.get(start..start + size) {
                Some(b) => self.write_at(loc.type_id, b, 0, 0, &mut s),
                None => return Value::Null,
            }
        }
        serde_json::from_str(&s).unwrap_or(Value::Null)
    }
}
