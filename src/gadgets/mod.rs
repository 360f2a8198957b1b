//! The built-in tracing gadgets: for each, the kernel object (C in bpf/gadgets/), where its
//! programs attach, the fields of its events with types and units, and the decoder from the
//! bytes the kernel sends to JSON. No kernel access here: `ebpf::gadget` runs them.

mod biolatency;
pub mod count;
mod decode;
mod exec;
mod exit;
pub mod hist;
pub mod kfunc;
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
pub use decode::{At, Clock, HEADER, Layout, header};

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
    Field {
        name: "container_id",
        ty: "string",
        unit: None,
        description: "the container (64 hex digits) whose cgroup it is: docker, containerd, \
            cri-o, podman; absent outside containers",
    },
    Field {
        name: "pod_uid",
        ty: "string",
        unit: None,
        description: "the Kubernetes pod of that container; absent outside pods",
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
    /// Histograms of a value (a size, a count) kept in the kernel, in the same table.
    KernelValues,
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
    /// How count mode runs in the kernel, where it can (else events are counted by the
    /// server).
    pub kernel_count: Option<count::KernelCount>,
    /// Turns one event's bytes (after the common header) into its own fields.
    pub decode: fn(&[u8], &mut Map<String, Value>),
    /// Size of the gadget's event, header included (shorter records are malformed).
    pub event_size: usize,
    /// The struct `decode` reads (the event, or the kernel table's key) and its fields.
    pub layout: Layout,
    /// A tracepoint record read at fixed offsets where the kernel's BTF has no type for it.
    pub fixed_record: Option<&'static FixedRecord>,
}

pub use crate::ebpf::tracefs::FixedRecord;

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
    static CATALOGUE: [&Gadget; 16] = [
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
        &kfunc::GADGET,
        &tracepoint::GADGET,
    ];
    &CATALOGUE
}

pub fn find(name: &str) -> Option<&'static Gadget> {
    catalogue().iter().copied().find(|g| g.name == name)
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use crate::ebpf::btf_reader::{Btf, Kind};
    use object::{Object as _, ObjectSection as _};

    fn btf_of(object: &[u8]) -> Btf {
        let elf = object::File::parse(object).expect("a gadget object is ELF");
        let section = elf
            .section_by_name(".BTF")
            .expect("gadget objects carry BTF");
        Btf::parse(section.data().unwrap().to_vec()).expect("the object's BTF parses")
    }

    fn struct_id(btf: &Btf, name: &str) -> Option<u32> {
        (1..=btf.len() as u32)
            .find(|id| btf.get(*id).is_ok_and(|t| t.kind == Kind::Struct) && btf.name(*id) == name)
    }

    /// Every offset and size a decoder reads, against the struct in the object's BTF.
    fn check(object: &[u8], layout: &Layout, whole: Option<usize>, problems: &mut Vec<String>) {
        let btf = btf_of(object);
        let Some(id) = struct_id(&btf, layout.btf_struct) else {
            problems.push(format!(
                "struct {} is not in the object's BTF",
                layout.btf_struct
            ));
            return;
        };
        if let Some(size) = whole {
            let real = btf.size_of(id).unwrap();
            if real != size {
                problems.push(format!(
                    "struct {} is {real} bytes; the gadget expects {size}",
                    layout.btf_struct
                ));
            }
        }
        for (path, at) in layout.fields {
            let parts: Vec<&str> = path.split('.').collect();
            match btf.locate(id, &parts) {
                Ok(loc) => {
                    let offset = (loc.bit_offset / 8) as usize;
                    let size = btf.size_of(loc.type_id).unwrap();
                    if offset != layout.skip + at.offset || size != at.size {
                        problems.push(format!(
                            "{}.{path}: BTF has offset {offset} size {size}; the decoder reads \
                             offset {} size {}",
                            layout.btf_struct,
                            layout.skip + at.offset,
                            at.size
                        ));
                    }
                }
                Err(e) => problems.push(format!("{}.{path}: {e}", layout.btf_struct)),
            }
        }
    }

    #[test]
    fn decoders_read_the_layout_the_objects_btf_defines() {
        let mut problems = Vec::new();
        for g in catalogue() {
            check(g.object, &g.layout, Some(g.event_size), &mut problems);
            if g.output == Output::Events {
                check(
                    g.object,
                    &decode::HEADER_LAYOUT,
                    Some(decode::HEADER),
                    &mut problems,
                );
            }
            if g.kernel_count.is_some() || g.name == "tracepoint" {
                check(
                    g.object,
                    &count::KEY_LAYOUT,
                    Some(count::KEY_SIZE),
                    &mut problems,
                );
            }
            let btf = btf_of(g.object);
            let cfg = struct_id(&btf, "gadget_cfg").expect("every gadget has gadget_cfg");
            let size = btf.size_of(cfg).unwrap();
            if size != std::mem::size_of::<crate::ebpf::gadget::GadgetCfg>() {
                problems.push(format!(
                    "{}: struct gadget_cfg is {size} bytes; GadgetCfg is {}",
                    g.name,
                    std::mem::size_of::<crate::ebpf::gadget::GadgetCfg>()
                ));
            }
            if g.output == Output::KernelHistograms {
                check(g.object, &hist::VALUE_LAYOUT, None, &mut problems);
            }
        }
        // uprobe's events mode.
        check(
            uprobe::GADGET.object,
            &uprobe::EVENT_LAYOUT,
            Some(uprobe::EVENT_SIZE),
            &mut problems,
        );
        check(
            uprobe::GADGET.object,
            &decode::HEADER_LAYOUT,
            Some(decode::HEADER),
            &mut problems,
        );
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn a_moved_field_is_caught() {
        let g = catalogue().iter().find(|g| g.name == "exit").unwrap();
        const MOVED: &[(&str, At)] = &[("signal", At::new(8, 4))];
        let moved = Layout {
            fields: MOVED,
            ..g.layout
        };
        let mut problems = Vec::new();
        check(g.object, &moved, None, &mut problems);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("exit_event.signal"), "{problems:?}");
    }
}
