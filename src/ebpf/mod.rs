//! The only module that talks to the kernel: aya for programs and maps, the few raw
//! syscalls aya lacks (`sys`), /proc and /sys reads (`host`), BTF (`btf`), feature probes.

pub mod btf;
pub mod caps;
pub mod host;
pub mod probe;
pub mod sys;
