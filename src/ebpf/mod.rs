//! The only module that talks to the kernel: aya for programs and maps, the few raw
//! syscalls aya lacks (`sys`), /proc and /sys reads (`host`), BTF (`btf`), feature probes.

pub mod bpf;
pub mod btf;
pub mod btf_reader;
pub mod caps;
pub mod disasm;
pub mod gadget;
pub mod host;
pub mod inventory;
pub mod maps;
pub mod names;
pub mod object;
pub mod pins;
pub mod probe;
pub mod sys;
pub mod tracefs;
