//! The `ebpf-mcp` binary: everything lives in the library so tests can reach it.

fn main() -> std::process::ExitCode {
    ebpf_mcp::ebpf::sys::tune_allocator();
    ebpf_mcp::cli::main()
}
