# ebpf-mcp container image: `docker build -t ebpf-mcp:0.1.0 .`
# Base images are build arguments, so the image can be built without a registry from a
# locally made Debian image (docs/operations.md): `--build-arg BASE_IMAGE=...`, and
# `--target prebuilt` packages an already built binary (dist/ebpf-mcp in the build
# context) instead of compiling. The default build skips that stage with BuildKit (Docker
# 23 and later; set DOCKER_BUILDKIT=1 before): the classic builder builds every stage
# before its target, and can only make `--target prebuilt`.
ARG BASE_IMAGE=debian:bookworm-slim
ARG RUST_IMAGE=rust:1.95-bookworm

# What every variant runs: the default configuration, and how to start.
FROM ${BASE_IMAGE} AS runtime
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

# An already built release binary (`cargo build --release`, copied to dist/ebpf-mcp).
FROM runtime AS prebuilt
COPY dist/ebpf-mcp /usr/local/bin/ebpf-mcp

# Build stage: the same command as scripts/install.sh (the BPF objects are committed in
# bpf/obj, so no clang is needed).
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ebpf-mcp

# The default: built from source.
FROM runtime
COPY --from=build /src/target/release/ebpf-mcp /usr/local/bin/ebpf-mcp
