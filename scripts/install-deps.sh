#!/usr/bin/env bash
# Installs the real clients and peers the tests drive: ffmpeg/ffprobe, rtmpdump, curl (the
# README's commands), nginx with the RTMP module (the comparison peer), and Prometheus (the
# dashboard test), systemd-analyze (the unit file test), iproute2 and nftables (the
# multi-host cluster test), HAProxy (the PROXY protocol tests), and a Python venv in .tools/
# with kubernetes-validate (the manifest test) and websockets (the WebSocket-FLV test), PostgreSQL (the livestream registry's
# shared-database tests), chromium and playwright-core (the console and player pages' browser tests), hls.js and mpegts.js (the player page, npm ci in player/). Installs with apt-get when missing and allowed,
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
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
[ -x /usr/sbin/nft ] || need+=(nftables)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v prlimit >/dev/null 2>&1 || need+=(util-linux)
# The load balancer in front of the node in the PROXY protocol tests.
[ -x /usr/sbin/haproxy ] || need+=(haproxy)
# The livestream registry's PostgreSQL tests (scripts/pg-test-cluster.sh runs its own cluster).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
# The console page's browser test: Debian's chromium, driven by playwright-core (npm, below).
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
for extra in "$@"; do need+=("$extra"); done

# The Python tools, pinned in scripts/tools-requirements.txt, in a venv of the project's own.
install_python_tools() {
  local root venv
  root="$(cd "$(dirname "$0")/.." && pwd)"
  venv="$root/.tools/venv"
  local installed=""
  if [ -x "$venv/bin/python" ]; then
    installed="$("$venv/bin/python" -m pip freeze 2>/dev/null || true)"
  fi
  # Every pinned line installed as pinned? (No pipes into grep -q: under pipefail an early
  # exit of grep fails the pipeline.)
  local missing
  missing="$(grep -vxF -f <(printf '%s\n' "$installed") "$root/scripts/tools-requirements.txt" || true)"
  if [ -n "$installed" ] && [ -z "$missing" ]; then
    return 0
  fi
  echo "install-deps: installing Python tools into .tools/venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$root/scripts/tools-requirements.txt"
}

# playwright-core for node/tests/console.rs, at the version package-lock.json pins.
console_deps() {
  local dir
  dir="$(cd "$(dirname "$0")/.." && pwd)/node/tests/console"
  if [ ! -d "$dir/node_modules/playwright-core" ] && command -v npm >/dev/null 2>&1; then
    echo "install-deps: npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund >/dev/null)
  fi
}

# hls.js and mpegts.js for the player page (/play/{app}/{name}) and node/tests/player.rs, at
# the versions player/package-lock.json pins.
player_deps() {
  local dir
  dir="$(cd "$(dirname "$0")/.." && pwd)/player"
  if { [ ! -f "$dir/node_modules/hls.js/dist/hls.min.js" ] || [ ! -f "$dir/node_modules/mpegts.js/dist/mpegts.js" ]; } \
    && command -v npm >/dev/null 2>&1; then
    echo "install-deps: npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund >/dev/null)
  fi
}

if [ ${#need[@]} -eq 0 ]; then
  install_python_tools
  console_deps
  player_deps
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
    systemctl stop nginx prometheus haproxy postgresql >/dev/null 2>&1 || true
  fi
  pkill -x nginx >/dev/null 2>&1 || true
  pkill -x prometheus >/dev/null 2>&1 || true
  install_python_tools
  console_deps
  player_deps
else
  echo "install-deps: missing: ${need[*]}" >&2
  echo "install-deps: run: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
