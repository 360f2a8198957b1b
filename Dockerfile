# ebpf-mcp container image: `docker build -t ebpf-mcp:0.1.0 .`
# Build stage: the same command as scripts/install.sh (the BPF objects are committed in
# bpf/obj, so no clang is needed).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ebpf-mcp

# Run stage: the binary and the default configuration only.
FROM debian:bookworm-slim
COPY --from=build /src/target/release/ebpf-mcp /usr/local/bin/ebpf-mcp
COPY configs/default.yaml /etc/ebpf-mcp/config.yaml
# Every tier needs CAP_BPF and CAP_PERFMON, and container runtimes give capabilities to
# root only (no ambient capabilities for other users), so the image runs as root; the
# server keeps only the capabilities it needs, sets no_new_privs and installs its seccomp
# allow-list itself once started (docs/security.md). deploy/kubernetes grants exactly those
# capabilities instead of `privileged`.
# The default configuration has no tokens, so the server refuses to serve on 0.0.0.0 until
# you mount one that sets security.access_control.tokens_file (as deploy/kubernetes does).
USER 0:0
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/ebpf-mcp"]
CMD ["--config", "/etc/ebpf-mcp/config.yaml", "serve", "--http", "0.0.0.0:8080"]
