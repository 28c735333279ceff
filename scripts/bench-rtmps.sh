#!/usr/bin/env bash
# RTMPS vs plain RTMP: the node's CPU-seconds per delivered GB at the same load.
#
# One ffmpeg publisher (plain RTMP, the same in both runs) loops a generated H.264/AAC file at
# about BITRATE_KBPS; PLAYERS rtmpdump players then play it for SECONDS, over rtmp:// in one
# run and rtmps:// in the other, each writing to `wc -c`. The node's user+system CPU time
# (/proc/PID/stat) is read just before the players start and just after they end; the
# publisher-only CPU rate, measured for 5 s before, is reported and subtracted too.
#
# Usage: scripts/bench-rtmps.sh [PLAYERS] [SECONDS] [BITRATE_KBPS] [CORES]
# MERGE_MS=100 sets player.merge_window_ms (default 0: write each frame as it comes).
# Needs: a release build (cargo build --release -p corecast-node), ffmpeg, rtmpdump, openssl,
# python3 (to find free ports). Loopback only; every process it starts is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

PLAYERS=${1:-40}
SECONDS_RUN=${2:-20}
KBPS=${3:-4000}
CORES=${4:-2}
MERGE_MS=${MERGE_MS:-0}
BIN=${CORECAST_BIN:-target/release/corecast}
[ -x "$BIN" ] || { echo "bench-rtmps: build first: cargo build --release -p corecast-node" >&2; exit 1; }

bench_workspace

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

echo "bench-rtmps: making ${KBPS} kbit/s test media" >&2
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i "testsrc2=size=1280x720:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=44100" \
  -t 10 -c:v libx264 -preset ultrafast -tune zerolatency -g 60 \
  -b:v "${KBPS}k" -minrate "${KBPS}k" -maxrate "${KBPS}k" -bufsize "$((KBPS / 2))k" \
  -pix_fmt yuv420p -c:a aac -b:a 128k -f flv "$work/src.flv"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=localhost -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

run() {
  local mode=$1
  local rtmp_port rtmps_port
  rtmp_port=$(free_port)
  rtmps_port=$(free_port)
  cat >"$work/node.toml" <<EOF
[rtmp]
listen = "127.0.0.1:$rtmp_port"
[rtmps]
enabled = true
listen = "127.0.0.1:$rtmps_port"
cert_chain_path = "$work/cert.pem"
private_key_path = "$work/key.pem"
[player]
merge_window_ms = $MERGE_MS
[http]
enabled = false
[log]
level = "warn"
EOF
  "$BIN" --config "$work/node.toml" --cores "$CORES" 2>"$work/node-$mode.log" &
  local node=$!
  pids+=("$node")
  sleep 1
  ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i "$work/src.flv" -c copy \
    -f flv "rtmp://127.0.0.1:$rtmp_port/live/bench" </dev/null &
  local publisher=$!
  pids+=("$publisher")
  sleep 3
  local url
  if [ "$mode" = rtmps ]; then url="rtmps://127.0.0.1:$rtmps_port/live/bench"; else url="rtmp://127.0.0.1:$rtmp_port/live/bench"; fi

  local c0 c1 c2 t1 t2
  c0=$(cpu_ticks "$node")
  sleep 5
  c1=$(cpu_ticks "$node")
  t1=$(date +%s.%N)
  local players=()
  for i in $(seq 1 "$PLAYERS"); do
    ( timeout -s INT "$SECONDS_RUN" rtmpdump --live -q -r "$url" -o - 2>/dev/null | wc -c >"$work/$mode.$i" ) &
    players+=($!)
  done
  wait "${players[@]}" || true
  t2=$(date +%s.%N)
  c2=$(cpu_ticks "$node")
  kill "$publisher" "$node" 2>/dev/null || true
  wait "$publisher" "$node" 2>/dev/null || true

  local bytes
  bytes=$(cat "$work/$mode".* | awk '{s += $1} END {print s}')
  awk -v mode="$mode" -v bytes="$bytes" -v c0="$c0" -v c1="$c1" -v c2="$c2" -v hz="$hz" \
      -v t1="$t1" -v t2="$t2" -v players="$PLAYERS" 'BEGIN {
    wall = t2 - t1; base_rate = (c1 - c0) / hz / 5; cpu = (c2 - c1) / hz;
    net = cpu - base_rate * wall; gb = bytes / 1e9;
    printf "%-5s players=%d wall=%.1fs delivered=%.3f GB (%.1f MB/s) node_cpu=%.2fs publish_only=%.3f cpu-s/s cpu_per_GB=%.2f net_cpu_per_GB=%.2f\n",
      mode, players, wall, gb, bytes / wall / 1e6, cpu, base_rate, cpu / gb, net / gb }'
}

echo "bench-rtmps: ${PLAYERS} players x ${SECONDS_RUN} s, ${CORES} cores, $(nproc) CPUs, merge window ${MERGE_MS} ms" >&2
run rtmp
run rtmps
