#!/bin/sh
# stdio: Claude Code starts the server (sudo must not prompt; or setcap the binary, README.md).
claude mcp add ebpf -- sudo /usr/local/bin/ebpf-mcp serve

# HTTP: a running server; the secret comes from `ebpf-mcp token new`.
claude mcp add --transport http ebpf-http https://HOST:8080/mcp \
  --header "Authorization: Bearer $EBPF_MCP_TOKEN"
