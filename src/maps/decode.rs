//! Entries as JSON: keys and values decoded through the map's BTF (hex without it), per-CPU
//! values with their sum.

use serde_json::{Map, Value, json};

use crate::ebpf::btf_reader::Btf;
use crate::ebpf::maps::{self, OpenMap};

/// Decodes keys and values of one map.
pub(crate) struct Decoder<'a> {
    pub(crate) map: &'a OpenMap,
    pub(crate) btf: Option<&'a Btf>,
    pub(crate) key_type: u32,
    pub(crate) value_type: u32,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(map: &'a OpenMap) -> Self {
        let btf = map
            .btf
            .as_ref()
            .filter(|_| map.record.btf_value_type_id != 0 || map.record.btf_key_type_id != 0);
        Self {
            map,
            btf,
            key_type: map.record.btf_key_type_id,
            value_type: map.record.btf_value_type_id,
        }
    }

    pub(crate) fn write_key(&self, bytes: &[u8], out: &mut String) {
        match self.btf {
            Some(btf) if self.key_type != 0 => btf.write_json(self.key_type, bytes, out),
            _ => write_hex(bytes, out),
        }
    }

    pub(crate) fn write_value(&self, bytes: &[u8], out: &mut String) {
        match self.btf {
            Some(btf) if self.value_type != 0 => btf.write_json(self.value_type, bytes, out),
            _ => write_hex(bytes, out),
        }
    }

    /// One entry as a JSON object appended to `out`: `{"key":..,"value":..}`, or for per-CPU
    /// maps `{"key":..,"values":[{"cpu":0,"value":..},..],"sum":..}`.
    pub(crate) fn write_entry(&self, key: &[u8], value: &[u8], out: &mut String) {
        out.push_str("{\"key\":");
        self.write_key(key, out);
        if !maps::per_cpu(&self.map.record.map_type) {
            out.push_str(",\"value\":");
            self.write_value(value, out);
            out.push('}');
            return;
        }
        out.push_str(",\"values\":[");
        let mut sum: Option<Value> = None;
        for cpu in 0..self.map.cpus {
            if cpu > 0 {
                out.push(',');
            }
            out.push_str(&format!("{{\"cpu\":{cpu},\"value\":"));
            let start = out.len();
            self.write_value(self.map.cpu_slice(value, cpu), out);
            let v: Value = serde_json::from_str(&out[start..]).unwrap_or(Value::Null);
            sum = Some(match sum {
                Some(acc) => add(&acc, &v),
                None => v,
            });
            out.push('}');
        }
        out.push_str("],\"sum\":");
        out.push_str(&sum.unwrap_or(Value::Null).to_string());
        out.push('}');
    }
}

pub(crate) fn write_hex(bytes: &[u8], out: &mut String) {
    use std::fmt::Write;
    out.push_str("\"0x");
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out.push('"');
}

/// Field-wise sum of two decoded values: numbers add, objects and arrays add member by
/// member, anything else keeps the first value.
pub(crate) fn add(a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                json!(x.saturating_add(y))
            } else if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                json!(x.saturating_add(y))
            } else {
                json!(x.as_f64().unwrap_or(0.0) + y.as_f64().unwrap_or(0.0))
            }
        }
        (Value::Object(x), Value::Object(y)) => Value::Object(
            x.iter()
                .map(|(k, v)| (k.clone(), y.get(k).map_or_else(|| v.clone(), |w| add(v, w))))
                .collect::<Map<_, _>>(),
        ),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            Value::Array(x.iter().zip(y).map(|(v, w)| add(v, w)).collect())
        }
        (a, _) => a.clone(),
    }
}
