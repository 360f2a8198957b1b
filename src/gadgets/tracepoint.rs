//! tracepoint: any tracepoint, its raw records decoded with the layout tracefs gives (ints by
//! size and sign, char arrays and `__data_loc` strings, pointers as hex); up to two
//! `const char *` fields are read as strings in the kernel, while the memory exists.

use serde_json::{Map, Value, json};

use super::decode::{At, HEADER, Layout, i32_at, str_at, u32_at, u64_at};
use crate::ebpf::tracefs::{Format, TpField};

pub static OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/obj/tracepoint.bpf.o");

/// The catalogue's entry; the plan for one tracepoint is made from its format file.
pub static GADGET: super::Gadget = super::Gadget {
    name: "tracepoint",
    summary: "any tracepoint, `tracepoint: \"category:name\"`: its fields decoded from the \
        tracefs format (list_tracepoints with detail shows them), syscall string arguments \
        read in the kernel",
    object: OBJECT,
    programs: &[],
    fields: &[],
    output: super::Output::Events,
    default_group_by: &["comm"],
    detail_fields: &[],
    kernel_count: None,
    decode: |_, _| {},
    event_size: EVENT_SIZE,
    layout: Layout {
        btf_struct: "tp_event",
        skip: HEADER,
        fields: &[
            ("size", SIZE),
            ("record", RECORD),
            ("str", STRINGS),
            ("str.0", STRINGS.index(0, STR_MAX)),
            ("str.1", STRINGS.index(1, STR_MAX)),
        ],
    },
    fixed_record: None,
};

const SIZE: At = At::new(0, 4);
const RECORD: At = At::new(8, RECORD_MAX);
const STRINGS: At = At::new(8 + RECORD_MAX, 2 * STR_MAX);
pub const PROGRAM: &str = "tracepoint_record";

const RECORD_MAX: usize = 512;
const STR_MAX: usize = 128;
/// Size of `struct tp_event`.
pub const EVENT_SIZE: usize = HEADER + 8 + RECORD_MAX + 2 * STR_MAX;

/// How the kernel side reads one record of this tracepoint: (bytes to copy, bytes of the
/// fixed part, offsets of up to two string pointer fields packed in 16 bits each), and the
/// indexes of those fields.
pub fn config(format: &Format) -> ((u32, u32, u32), Vec<usize>) {
    let fixed = format.fixed_size().min(RECORD_MAX);
    let wanted = if format.has_data_loc() {
        RECORD_MAX
    } else {
        fixed
    };
    let strings: Vec<usize> = format
        .fields
        .iter()
        .enumerate()
        .filter(|(_, f)| f.is_user_string() && f.offset + 8 <= RECORD_MAX)
        .map(|(i, _)| i)
        .take(2)
        .collect();
    let offset = |n: usize| {
        strings
            .get(n)
            .map_or(0, |i| format.fields[*i].offset as u32)
    };
    (
        (wanted as u32, fixed as u32, offset(0) | (offset(1) << 16)),
        strings,
    )
}

fn int_at(record: &[u8], f: &TpField, off: usize, size: usize) -> Value {
    match (size, f.signed) {
        (1, false) => json!(record.get(off).copied().unwrap_or(0)),
        (1, true) => json!(record.get(off).copied().unwrap_or(0) as i8),
        (2, false) => json!(u16::from_le_bytes([record[off], record[off + 1]])),
        (2, true) => json!(i16::from_le_bytes([record[off], record[off + 1]])),
        (4, false) => json!(u32_at(record, off)),
        (4, true) => json!(i32_at(record, off)),
        (8, false) => json!(u64_at(record, off)),
        (8, true) => json!(u64_at(record, off) as i64),
        _ => json!(
            record
                .get(off..off + size)
                .map(|b| b.iter().map(|x| format!("{x:02x}")).collect::<String>())
        ),
    }
}

fn field_value(record: &[u8], f: &TpField) -> Value {
    let end = f.offset + f.size;
    if end > record.len() {
        return Value::Null;
    }
    if f.is_data_loc() {
        let loc = u32_at(record, f.offset);
        let (start, len) = ((loc & 0xffff) as usize, (loc >> 16) as usize);
        return json!(str_at(record, start, len));
    }
    if f.is_char_array() {
        return json!(str_at(record, f.offset, f.size));
    }
    if f.ty.contains('*') {
        return json!(format!("{:#x}", u64_at(record, f.offset)));
    }
    if let Some(n) = f.array_len.filter(|n| *n > 0 && f.size.is_multiple_of(*n)) {
        let each = f.size / n;
        return Value::Array(
            (0..n)
                .map(|i| int_at(record, f, f.offset + i * each, each))
                .collect(),
        );
    }
    int_at(record, f, f.offset, f.size)
}

/// An integer field of the record that the kernel can read where the event happens (to
/// key counts by): its event name, its gadget_cfg.value_field, and how to show its value.
#[derive(Debug)]
pub struct Numeric {
    pub name: String,
    pub cfg: u32,
    pub signed: bool,
    pub size: usize,
}

impl Numeric {
    /// The value as the event shows it (the kernel sign-extends signed fields).
    pub fn json(&self, v: i64) -> Value {
        match (self.signed, self.size) {
            (true, _) => json!(v),
            (false, 8) => json!(v as u64),
            (false, size) => json!((v as u64) & ((1u64 << (8 * size)) - 1)),
        }
    }
}

/// The record's integer fields (not arrays, strings or pointers).
pub fn numeric_fields(format: &Format) -> Vec<Numeric> {
    format
        .fields
        .iter()
        .filter(|f| {
            matches!(f.size, 1 | 2 | 4 | 8)
                && f.array_len.is_none()
                && !f.is_data_loc()
                && !f.ty.contains('*')
                && f.offset + 8 <= RECORD_MAX
        })
        .map(|f| Numeric {
            name: field_name(&f.name),
            cfg: f.offset as u32 | (f.size as u32) << 16 | u32::from(f.signed) << 24,
            signed: f.signed,
            size: f.size,
        })
        .collect()
}

/// The name a record field gets in an event: its own, or `tp_<name>` when it would
/// shadow a common field (sched_process_exec has its own `pid`).
pub fn field_name(name: &str) -> String {
    if super::COMMON_FIELDS.iter().any(|c| c.name == name) {
        format!("tp_{name}")
    } else {
        name.to_owned()
    }
}

/// Decodes the bytes after the common header of one event.
pub fn decode(format: &Format, strings: &[usize], b: &[u8], out: &mut Map<String, Value>) {
    let size = (SIZE.u32(b) as usize).min(RECORD_MAX);
    let record = RECORD.bytes(b).get(..size).unwrap_or(&[]);
    for (i, f) in format.fields.iter().enumerate() {
        let value = match strings.iter().position(|s| *s == i) {
            Some(n) => json!(STRINGS.index(n, STR_MAX).str(b)),
            None => field_value(record, f),
        };
        out.insert(field_name(&f.name), value);
    }
}
