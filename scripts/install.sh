#!/usr/bin/env bash
# Installs ebpf-mcp as a system service, from a checkout (builds the release binary) or from
# an unpacked release tarball (takes the `ebpf-mcp` binary beside this script's directory).
# Idempotent: running it again updates the binary, the unit and the docs, and keeps the
# configuration you edited.
#
#   sudo scripts/install.sh                    install, create the user, enable the service
#   sudo scripts/install.sh --binary PATH      install this binary instead of building one
#   sudo scripts/install.sh --uninstall        remove all of it (the audit log stays)
#   sudo scripts/install.sh --uninstall --purge   ... and the audit log too
#   DESTDIR=/tmp/root scripts/install.sh       into a staging root: nothing on this system
#                                              changes (no systemctl, users in DESTDIR)
#
# What it installs (under $DESTDIR):
#   /usr/local/bin/ebpf-mcp
#   /etc/ebpf-mcp/config.yaml                  the documented defaults, if none is there
#   /etc/systemd/system/ebpf-mcp.service
#   /usr/lib/sysusers.d/ebpf-mcp.conf          the `ebpf-mcp` system user and group
#   /etc/logrotate.d/ebpf-mcp                  weekly rotation of the audit log
#   /usr/local/share/doc/ebpf-mcp/             README, docs/*.md
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
src="$(cd "$here/.." && pwd)"
DESTDIR="${DESTDIR:-}"
binary=""
action=install
purge=0
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --uninstall) action=uninstall; shift ;;
    --purge) purge=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

bin_dir="$DESTDIR/usr/local/bin"
conf_dir="$DESTDIR/etc/ebpf-mcp"
unit_dir="$DESTDIR/etc/systemd/system"
sysusers_dir="$DESTDIR/usr/lib/sysusers.d"
logrotate_dir="$DESTDIR/etc/logrotate.d"
doc_dir="$DESTDIR/usr/local/share/doc/ebpf-mcp"
log_dir="$DESTDIR/var/log/ebpf-mcp"
live=0
if [ -z "$DESTDIR" ]; then
  live=1
  if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: installing a system service needs root: sudo $0 $*" >&2
    exit 1
  fi
fi
have_systemd=0
if [ "$live" = 1 ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  have_systemd=1
fi

say() { echo "install.sh: $*"; }

if [ "$action" = uninstall ]; then
  if [ "$have_systemd" = 1 ]; then
    systemctl disable --now ebpf-mcp.service 2>/dev/null || true
  fi
  rm -f "$bin_dir/ebpf-mcp" "$unit_dir/ebpf-mcp.service" "$sysusers_dir/ebpf-mcp.conf" \
    "$logrotate_dir/ebpf-mcp"
  rm -rf "$conf_dir" "$doc_dir"
  if [ "$have_systemd" = 1 ]; then
    systemctl daemon-reload
  fi
  if [ "$live" = 1 ]; then
    if getent passwd ebpf-mcp >/dev/null; then userdel ebpf-mcp 2>/dev/null || true; fi
    if getent group ebpf-mcp >/dev/null; then groupdel ebpf-mcp 2>/dev/null || true; fi
  else
    # The staging root's user database, as systemd-sysusers wrote it.
    for f in passwd group shadow gshadow; do
      [ -f "$DESTDIR/etc/$f" ] && sed -i '/^ebpf-mcp:/d' "$DESTDIR/etc/$f"
    done
  fi
  if [ "$purge" = 1 ]; then
    rm -rf "$log_dir"
    say "removed, with the audit log"
  else
    say "removed; the audit log stays in ${log_dir:-/var/log/ebpf-mcp} (--purge removes it)"
  fi
  exit 0
fi

# The binary: given, beside a release tarball's script, or built from this checkout.
if [ -z "$binary" ]; then
  if [ -x "$src/ebpf-mcp" ]; then
    binary="$src/ebpf-mcp"
  elif [ -f "$src/Cargo.toml" ]; then
    say "building the release binary (cargo build --release --locked)"
    (cd "$src" && cargo build --release --locked --bin ebpf-mcp)
    binary="$src/target/release/ebpf-mcp"
  else
    echo "install.sh: no binary: pass --binary PATH, or run from a checkout or release tarball" >&2
    exit 1
  fi
fi
"$binary" --version >/dev/null || { echo "install.sh: $binary does not run" >&2; exit 1; }

install -d -m 0755 "$bin_dir" "$unit_dir" "$sysusers_dir" "$doc_dir" "$logrotate_dir"
install -m 0644 "$src/deploy/logrotate/ebpf-mcp" "$logrotate_dir/ebpf-mcp"
install -m 0755 "$binary" "$bin_dir/ebpf-mcp"
install -m 0644 "$src/deploy/systemd/ebpf-mcp.service" "$unit_dir/ebpf-mcp.service"
echo 'u ebpf-mcp - "ebpf-mcp MCP server" /nonexistent /usr/sbin/nologin' > "$sysusers_dir/ebpf-mcp.conf"
chmod 0644 "$sysusers_dir/ebpf-mcp.conf"
for doc in "$src/README.md" "$src"/docs/*.md; do
  install -m 0644 "$doc" "$doc_dir/"
done

# The user and group: systemd-sysusers (into the staging root too), or useradd.
if command -v systemd-sysusers >/dev/null; then
  if [ "$live" = 1 ]; then
    systemd-sysusers "$sysusers_dir/ebpf-mcp.conf"
  else
    install -d "$DESTDIR/etc"
    for f in passwd group; do [ -f "$DESTDIR/etc/$f" ] || : > "$DESTDIR/etc/$f"; done
    systemd-sysusers --root="$DESTDIR" "$sysusers_dir/ebpf-mcp.conf"
  fi
elif [ "$live" = 1 ] && ! getent passwd ebpf-mcp >/dev/null; then
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin ebpf-mcp
fi

# The configuration: the documented defaults the first time; an edited one is kept.
install -d -m 0755 "$conf_dir"
if [ -f "$conf_dir/config.yaml" ]; then
  say "keeping $conf_dir/config.yaml (the defaults are: ebpf-mcp config default)"
else
  "$binary" config default > "$conf_dir/config.yaml"
  chmod 0644 "$conf_dir/config.yaml"
fi
"$binary" config check "$conf_dir/config.yaml" >/dev/null

if [ "$have_systemd" = 1 ]; then
  systemctl daemon-reload
  systemctl enable --now ebpf-mcp.service
  say "installed and started: systemctl status ebpf-mcp; logs: journalctl -u ebpf-mcp"
else
  say "installed under ${DESTDIR:-/}; start it with: systemctl enable --now ebpf-mcp"
fi
