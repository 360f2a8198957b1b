//! Count mode in the kernel (bpf/gadget.h `counted()`): when every field a count is grouped
//! by is one the kernel knows where the event happens, the gadget adds one to a hash table
//! keyed by those fields instead of sending the event, and the server reads the table.

use serde_json::{Map, Value, json};

use super::decode::{At, Layout};
use crate::ebpf::gadget::Hook;

/// The kernel table of counts, in every gadget object.
pub const TABLE: &str = "counts";
/// Size of `struct count_key`.
pub const KEY_SIZE: usize = 48;

const PID: At = At::new(0, 4);
const TID: At = At::new(4, 4);
const PPID: At = At::new(8, 4);
const UID: At = At::new(12, 4);
const CGROUP_ID: At = At::new(16, 8);
const VALUE: At = At::new(24, 8);
const COMM: At = At::new(32, 16);

/// `struct count_key`.
pub const KEY_LAYOUT: Layout = Layout {
    btf_struct: "count_key",
    skip: 0,
    fields: &[
        ("pid", PID),
        ("tid", TID),
        ("ppid", PPID),
        ("uid", UID),
        ("cgroup_id", CGROUP_ID),
        ("value", VALUE),
        ("comm", COMM),
    ],
};

const ON: u32 = 1;
/// `count_keys` of a histogram of the gadget's value (generic tracepoint), per process
/// with `per_process`.
pub fn histogram(per_process: bool) -> u32 {
    ON | 1 << 8 | if per_process { 1 << 1 } else { 0 }
}
const VALUE_BIT: u32 = 1 << 7;
/// The common fields the kernel keys counts by, and their `COUNT_*` bits.
const COMMON: [(&str, u32); 6] = [
    ("pid", 1 << 1),
    ("tid", 1 << 2),
    ("ppid", 1 << 3),
    ("uid", 1 << 4),
    ("comm", 1 << 5),
    ("cgroup_id", 1 << 6),
];

/// How a gadget counts in the kernel.
#[derive(Debug)]
pub struct KernelCount {
    /// The programs attached to count (an event counted at entry needs no exit program).
    pub programs: &'static [(&'static str, Hook)],
    /// The gadget's fields that come from the one value its programs key by.
    pub value_fields: &'static [&'static str],
    /// Those fields from the value.
    pub decode_value: fn(i64, &mut Map<String, Value>),
}

/// No value: only the common fields.
pub const NO_VALUE: fn(i64, &mut Map<String, Value>) = |_, _| {};

/// The `count_keys` for grouping by `group_by` when the kernel knows every one of those
/// fields (`value_fields`: those the gadget's value gives); `None` otherwise.
pub fn keys(group_by: &[String], value_fields: &[impl AsRef<str>]) -> Option<u32> {
    group_by.iter().try_fold(ON, |keys, field| {
        if value_fields.iter().any(|v| v.as_ref() == field) {
            return Some(keys | VALUE_BIT);
        }
        COMMON
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, bit)| keys | bit)
    })
}

/// The fields one key of the table stands for: those `keys` named, the value's through
/// `decode_value`.
pub fn decode_key(
    b: &[u8],
    keys: u32,
    decode_value: &dyn Fn(i64, &mut Map<String, Value>),
    out: &mut Map<String, Value>,
) -> Option<()> {
    if b.len() < KEY_SIZE {
        return None;
    }
    for (name, bit) in COMMON {
        if keys & bit == 0 {
            continue;
        }
        let value = match name {
            "pid" => json!(PID.u32(b)),
            "tid" => json!(TID.u32(b)),
            "ppid" => json!(PPID.u32(b)),
            "uid" => json!(UID.u32(b)),
            "cgroup_id" => json!(CGROUP_ID.u64(b)),
            _ => json!(COMM.str(b)),
        };
        out.insert(name.into(), value);
    }
    if keys & VALUE_BIT != 0 {
        decode_value(VALUE.u64(b) as i64, out);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by(fields: &[&str]) -> Vec<String> {
        fields.iter().map(|f| (*f).to_owned()).collect()
    }

    #[test]
    fn only_fields_the_kernel_knows_are_counted_there() {
        assert_eq!(keys(&by(&[]), &[] as &[&str]), Some(ON));
        assert_eq!(
            keys(&by(&["comm", "pid"]), &[] as &[&str]),
            Some(ON | 1 << 5 | 1 << 1)
        );
        assert_eq!(keys(&by(&["comm", "path"]), &[] as &[&str]), None);
        assert_eq!(
            keys(&by(&["signal"]), &["sig", "signal"]),
            Some(ON | VALUE_BIT)
        );
        assert_eq!(keys(&by(&["time"]), &["sig"]), None);
    }

    #[test]
    fn keys_decode_to_the_fields_they_were_made_of() {
        let mut b = vec![0u8; KEY_SIZE];
        b[0..4].copy_from_slice(&7u32.to_le_bytes());
        b[24..32].copy_from_slice(&(-2i64).to_le_bytes());
        b[32..35].copy_from_slice(b"cat");
        let keys = keys(&by(&["pid", "comm", "v"]), &["v"]).unwrap();
        let mut out = Map::new();
        decode_key(
            &b,
            keys,
            &|v, out| drop(out.insert("v".into(), v.into())),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"pid": 7, "comm": "cat", "v": -2})
        );
        assert!(decode_key(&b[..10], keys, &|_, _| {}, &mut Map::new()).is_none());
    }
}
