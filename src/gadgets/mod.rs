//! The built-in tracing gadgets: for each, the kernel object (C in bpf/gadgets/), where its
//! programs attach, the fields of its events with types and units, and the decoder from the
//! bytes the kernel sends to JSON. No kernel access here: `ebpf::gadget` runs them.

mod biolatency;
mod decode;
mod exec;
mod exit;
pub mod hist;
mod oom;
mod open;
pub mod profile;
mod runqlat;
mod signal;
pub mod syscalls;
mod tcp;
pub mod tracepoint;
pub mod uprobe;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::ebpf::gadget::Hook;
pub use decode::{Clock, header};

/// A little-endian u64 (a count in a kernel table).
pub fn decode_u64(b: &[u8]) -> u64 {
    decode::u64_at(b, 0)
}

/// One field of a gadget's events.
#[derive(Debug, Clone, Copy, Serialize, schemars::JsonSchema)]
pub struct Field {
    pub name: &'static str,
    /// u32, s32, u64, string, bool, time, ...
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// ns, us, bytes, ... when the value has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<&'static str>,
    pub description: &'static str,
}

impl Field {
    pub const fn new(name: &'static str, ty: &'static str, description: &'static str) -> Self {
        Self {
            name,
            ty,
            unit: None,
            description,
        }
    }

    pub const fn with_unit(
        name: &'static str,
        ty: &'static str,
        unit: &'static str,
        description: &'static str,
    ) -> Self {
        Self {
            name,
            ty,
            unit: Some(unit),
            description,
        }
    }
}

/// The fields every event starts with (struct event_header).
pub const COMMON_FIELDS: &[Field] = &[
    Field {
        name: "time",
        ty: "time",
        unit: None,
        description: "when it happened (RFC 3339, ns precision)",
    },
    Field {
        name: "pid",
        ty: "u32",
        unit: None,
        description: "process (thread group) id",
    },
    Field {
        name: "tid",
        ty: "u32",
        unit: None,
        description: "thread id",
    },
    Field {
        name: "ppid",
        ty: "u32",
        unit: None,
        description: "parent process id",
    },
    Field {
        name: "uid",
        ty: "u32",
        unit: None,
        description: "user id",
    },
    Field {
        name: "comm",
        ty: "string",
        unit: None,
        description: "process name (16 bytes at most)",
    },
    Field {
        name: "cgroup_id",
        ty: "u64",
        unit: None,
        description: "cgroup v2 id (inode of the cgroup directory)",
    },
];

/// How a gadget's results come out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// One event per occurrence, through the ring buffer.
    Events,
    /// Counts kept in this kernel hash map (key to u64), read when asked.
    KernelCounts(&'static str),
    /// Latency histograms kept in the kernel (`hists`, bpf/hist.h).
    KernelHistograms,
    /// CPU samples with their stacks (profile).
    Stacks,
}

/// A built-in gadget.
#[derive(Debug)]
pub struct Gadget {
    pub name: &'static str,
    /// One line: what it reports.
    pub summary: &'static str,
    pub object: &'static [u8],
    pub programs: &'static [(&'static str, Hook)],
    pub fields: &'static [Field],
    pub output: Output,
    /// Fields counted by default in `count` mode.
    pub default_group_by: &'static [&'static str],
    /// Fields the kernel keys by only when asked (grouping by any of them sets arg0).
    pub detail_fields: &'static [&'static str],
    /// Turns one event's bytes (after the common header) into its own fields.
    pub decode: fn(&[u8], &mut Map<String, Value>),
    /// Size of the gadget's event, header included (shorter records are malformed).
    pub event_size: usize,
}

impl Gadget {
    /// Where the gadget attaches, as `category:name` strings.
    pub fn hooks(&self) -> Vec<String> {
        self.programs
            .iter()
            .map(|(_, hook)| hook.to_string())
            .collect()
    }

    /// All fields of an event: the common ones, then the gadget's.
    pub fn all_fields(&self) -> impl Iterator<Item = &Field> {
        let common = match self.output {
            Output::Events => COMMON_FIELDS,
            _ => &[],
        };
        common.iter().chain(self.fields)
    }

    /// Decodes one ring-buffer record (or, for kernel counts, one key of the count table).
    pub fn record(&self, bytes: &[u8], clock: &Clock) -> Option<Map<String, Value>> {
        if bytes.len() < self.event_size {
            return None;
        }
        let mut out = Map::new();
        match self.output {
            Output::Events => {
                let rest = decode::header(bytes, clock, &mut out)?;
                (self.decode)(rest, &mut out);
            }
            _ => (self.decode)(bytes, &mut out),
        }
        Some(out)
    }
}

/// Every gadget, in the order they are listed.
pub fn catalogue() -> &'static [&'static Gadget] {
    static CATALOGUE: [&Gadget; 15] = [
        &exec::GADGET,
        &exit::GADGET,
        &open::GADGET,
        &tcp::CONNECT,
        &tcp::ACCEPT,
        &tcp::STATE,
        &tcp::RETRANSMIT,
        &signal::GADGET,
        &oom::GADGET,
        &syscalls::GADGET,
        &biolatency::GADGET,
        &runqlat::GADGET,
        &profile::GADGET,
        &uprobe::GADGET,
        &tracepoint::GADGET,
    ];
    &CATALOGUE
}

pub fn find(name: &str) -> Option<&'static Gadget> {
    catalogue().iter().copied().find(|g| g.name == name)
}
