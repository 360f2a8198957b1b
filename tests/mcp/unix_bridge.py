"""stdin/stdout <-> a unix socket, so that a stdio MCP client (the official SDK) can talk to
`ebpf-mcp serve --unix`. Run as any user: the server sees this process's uid and groups."""

import os
import socket
import sys
import threading

sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    sock.connect(sys.argv[1])
except OSError as e:
    print(f"connect: {e}", file=sys.stderr)
    sys.exit(3)


def upstream() -> None:
    while data := os.read(0, 65536):
        sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)


threading.Thread(target=upstream, daemon=True).start()
while data := sock.recv(65536):
    os.write(1, data)
