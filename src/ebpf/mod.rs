//! The kernel layer, the only one that talks to the kernel (the sandbox aside, which makes
//! its own confinement calls): aya for programs and maps, raw bpf(2) where aya lacks a call
//! (`bpf`), the other raw syscalls (`sys`), /proc and /sys reads (`host`), BTF (`btf`),
//! feature probes.

pub mod bpf;
pub mod btf;
pub mod btf_reader;
pub mod caps;
pub mod disasm;
pub mod functions;
pub mod gadget;
pub mod host;
pub mod inventory;
pub mod maps;
pub mod names;
pub mod object;
pub mod pins;
pub mod probe;
pub mod process;
pub mod sys;
pub mod tracefs;
