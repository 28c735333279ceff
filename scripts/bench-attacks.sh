#!/usr/bin/env bash
# Issue 13's attacks against the release node on loopback, side by side with the node idle:
# per attack, RSS growth (total and per connection) and the time for a publish and a play to
# start during it. Bounded: each attack runs a few seconds, the whole run under 5 minutes.
#
#   cargo build --release -p corecast-node
#   scripts/bench-attacks.sh [CONNECTIONS] [CORES]     # defaults: 1000 connections, 2 cores
#
# Prints a Markdown table (also written to target/bench-attacks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh

connections=${1:-1000}
cores=${2:-2}
bin=${CORECAST_BIN:-target/release/corecast}
[ -x "$bin" ] || { echo "build it first: cargo build --release -p corecast-node" >&2; exit 1; }
# Each attacking connection needs an fd here and one in the node.
ulimit -n "$(( connections * 2 + 1000 > $(ulimit -Hn) ? $(ulimit -Hn) : connections * 2 + 1000 ))"

dir=$(mktemp -d)
port=$(free_port)
http=$(free_port)
# The handshake deadline is raised so the stuck connections stay while they are measured;
# everything else is the default configuration.
cat > "$dir/corecast.toml" <<TOML
[rtmp]
handshake_timeout_secs = 60
TOML
"$bin" --config "$dir/corecast.toml" --rtmp-listen "127.0.0.1:$port" \
  --http-listen "127.0.0.1:$http" --cores "$cores" 2> "$dir/node.log" &
node=$!
trap 'kill $node 2>/dev/null || true; wait $node 2>/dev/null || true; rm -rf "$dir"' EXIT
wait_port "$port"

{
  echo "$bin, $cores cores, default config (handshake deadline 60 s); $(nproc) CPUs: $(lscpu | sed -n 's/^Model name: *//p')"
  echo
  timeout 300 python3 scripts/bench_attacks.py 127.0.0.1 "$port" "$node" "$connections"
  echo
  echo "Log: $(wc -l < "$dir/node.log") lines, $(( $(wc -c < "$dir/node.log") / 1024 )) KiB; $(grep -c 'similar lines' "$dir/node.log" || true) 'suppressed' summaries."
} | tee target/bench-attacks.md
