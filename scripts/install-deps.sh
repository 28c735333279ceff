#!/usr/bin/env bash
# Installs the real clients and peers the tests drive: ffmpeg/ffprobe, rtmpdump, curl (the
# README's commands), nginx with the RTMP module (the comparison peer), and Prometheus (the
# dashboard test), PostgreSQL (the livestream registry's shared-database tests), chromium and
# playwright-core (the console page's browser test). Installs with apt-get when missing and allowed,
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
# The console page's browser test: Debian's chromium, driven by playwright-core (npm, below).
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
for extra in "$@"; do need+=("$extra"); done

# playwright-core for node/tests/console.rs, at the version package-lock.json pins.
console_deps() {
  local dir
  dir="$(cd "$(dirname "$0")/.." && pwd)/node/tests/console"
  if [ ! -d "$dir/node_modules/playwright-core" ] && command -v npm >/dev/null 2>&1; then
    echo "install-deps: npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund >/dev/null)
  fi
}

if [ ${#need[@]} -eq 0 ]; then
  console_deps
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
  console_deps
else
  echo "install-deps: missing: ${need[*]}" >&2
  echo "install-deps: run: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
