#!/usr/bin/env bash
# Installs the real clients and peers the tests drive: ffmpeg/ffprobe, rtmpdump, curl (the
# README's commands), nginx with the RTMP module (the comparison peer), and Prometheus (the
# dashboard test), PostgreSQL (the livestream registry's shared-database tests). Installs with apt-get when missing and allowed,
# otherwise says exactly what to install.
set -euo pipefail

need=()
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
command -v ffprobe >/dev/null 2>&1 || need+=(ffmpeg)
command -v rtmpdump >/dev/null 2>&1 || need+=(rtmpdump)
command -v curl >/dev/null 2>&1 || need+=(curl)
[ -x /usr/sbin/nginx ] || need+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ] || need+=(libnginx-mod-rtmp)
[ -x /usr/bin/prometheus ] || need+=(prometheus)
# The livestream registry's PostgreSQL tests (scripts/pg-test-cluster.sh runs its own cluster).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
for extra in "$@"; do need+=("$extra"); done

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
# Deduplicate.
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  # Debian starts nginx and prometheus on install; the tests start their own on loopback ports.
  if command -v systemctl >/dev/null 2>&1; then
    systemctl stop nginx prometheus postgresql >/dev/null 2>&1 || true
  fi
  pkill -x nginx >/dev/null 2>&1 || true
  pkill -x prometheus >/dev/null 2>&1 || true
else
  echo "install-deps: missing: ${need[*]}" >&2
  echo "install-deps: run: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
