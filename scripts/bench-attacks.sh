#!/usr/bin/env bash
# Issue 13's attacks against the release node on loopback: per attack (each on a fresh node),
# the node's RSS growth (peak, and held once the attack's input is read; per connection) and
# the time for a publish and a play to start, with the node idle and during the attack.
# Bounded: each attack runs seconds, each row at most 2 minutes.
#
#   cargo build --release -p corecast-node
#   scripts/bench-attacks.sh [CONNECTIONS] [CORES]     # defaults: 1000 connections, 2 cores
#
# Prints a Markdown table (also written to target/bench-attacks.md). CORECAST_BIN picks
# another binary (a debug build, say).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-lib.sh

connections=${1:-1000}
cores=${2:-2}
bin=${CORECAST_BIN:-target/release/corecast}
[ -x "$bin" ] || { echo "build it first: cargo build --release -p corecast-node" >&2; exit 1; }
# Each attacking connection needs an fd here and one in the node.
hard=$(ulimit -Hn)
want=$(( connections * 2 + 1000 ))
ulimit -n "$(( want > hard ? hard : want ))"

dir=$(mktemp -d)
node=
stop_node() {
  if [ -n "$node" ]; then kill "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true; fi
  node=
}
trap 'stop_node; rm -rf "$dir"' EXIT
# The handshake deadline is raised so the stuck connections stay while they are measured;
# everything else is the default configuration.
printf '[rtmp]\nhandshake_timeout_secs = 60\n' > "$dir/corecast.toml"

{
  echo "\`$bin\`, $cores cores, default config but a 60 s handshake deadline; a fresh node per row."
  echo "Machine: $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p')), load average $(cut -d' ' -f1-3 /proc/loadavg) at the start."
  echo
  python3 scripts/bench_attacks.py header 0 0 0
  for row in 1 2 3 4 10 many; do
    port=$(free_port)
    http=$(free_port)
    "$bin" --config "$dir/corecast.toml" --rtmp-listen "127.0.0.1:$port" \
      --http-listen "127.0.0.1:$http" --cores "$cores" 2> "$dir/node-$row.log" &
    node=$!
    wait_port "$port"
    timeout 120 python3 scripts/bench_attacks.py "$row" 127.0.0.1 "$port" "$node" "$connections" \
      || echo "| row $row | failed or timed out | | | | | |"
    stop_node
  done
  echo
  echo "Logs: $(cat "$dir"/node-*.log | wc -l) lines, $(( $(cat "$dir"/node-*.log | wc -c) / 1024 )) KiB in all; $(cat "$dir"/node-*.log | grep -c 'similar lines' || true) 'suppressed' summaries."
} | tee target/bench-attacks.md
