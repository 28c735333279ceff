#!/usr/bin/env bash
# Who wakes a node's cores, and what each wake-up costs (issue 19 item 2; BENCHMARKS.md
# "Wave 8"). Never asserted; figures for BENCHMARKS.md.
#
# One scenario per run: a release node on 127.0.0.1 (2 cores, `[player] merge_window_ms` W)
# or the floor (SERVER=floor: `corecast-floor --threads 2 --merge-window-ms W --send uring`),
# N players at 1000 kbit/s ramped at 500/s (READER=reader: the harness's publisher and
# `corecast-reader`; READER=harness: `corecast-loadtest e2e`, or `play` against the floor),
# and from 8 s after the first player, for SECONDS_COUNTED seconds:
# - MODE=strace: `strace -ttt -T -f` of io_uring_enter/read/write/membarrier/recvfrom on the
#   server, then `bench_wakes.py`: each core's reactor sleeps per window and what ended each
#   (the tick, another core's batch, players' input, nothing visible);
# - MODE=perf: `perf stat` of task-clock, context switches, wake-ups, io_uring_enter and
#   io_uring SQEs;
# - MODE=uring: `perf record -e io_uring:io_uring_submit_req`: SQEs per core by opcode.
# Environment: SERVER (corecast|floor), CORECAST (binary; default $BIN/corecast), BIN
# (target/release: the floor, the readers, the harness), W (100), N (500), READER (reader),
# MODE (strace), SECONDS_COUNTED (4), OUT (target/bench-wakes).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
SERVER=${SERVER:-corecast}
BIN=${BIN:-target/release}
CORECAST=${CORECAST:-$BIN/corecast}
W=${W:-100}
N=${N:-500}
READER=${READER:-reader}
MODE=${MODE:-strace}
SECONDS_COUNTED=${SECONDS_COUNTED:-4}
OUT=${OUT:-target/bench-wakes}
mkdir -p "$OUT"
label="$SERVER-$READER-w$W-n$N"
rtmp=$(free_port)
url="rtmp://127.0.0.1:$rtmp/live/bench"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

if [ "$SERVER" = floor ]; then
  timeout 90 "$BIN/corecast-floor" --listen "127.0.0.1:$rtmp" --seconds 80 --threads 2 \
    --bitrate-kbps 1000 --audio-kbps 64 --merge-window-ms "$W" --send uring >"$OUT/$label.log" 2>&1 &
else
  printf '[rtmp]\nlisten = "127.0.0.1:%s"\n[http]\nenabled = false\n[player]\nmerge_window_ms = %s\n[log]\nlevel = "warn"\n' \
    "$rtmp" "$W" >"$OUT/$label.toml"
  timeout 90 "$CORECAST" --config "$OUT/$label.toml" --cores 2 >"$OUT/$label.log" 2>&1 &
fi
pids+=($!)
wait_port "$rtmp"
server=$(pgrep -P "${pids[0]}")
if [ "$READER" = harness ]; then
  load=(e2e --bitrate-kbps 1000 --audio-kbps 64)
  [ "$SERVER" = floor ] && load=(play)
  timeout 80 "$BIN/corecast-loadtest" "${load[@]}" "$url" -n "$N" --duration 60 --ramp 500 \
    --max-connections 5000 --quiet >"$OUT/$label.players" 2>&1 &
  pids+=($!)
else
  if [ "$SERVER" != floor ]; then
    timeout 80 "$BIN/corecast-loadtest" publish "$url" --bitrate-kbps 1000 --audio-kbps 64 \
      --duration 70 --cores 1 --quiet >/dev/null 2>&1 &
    pids+=($!)
    sleep 2
  fi
  timeout 80 "$BIN/corecast-reader" "$url" -n "$N" --ramp 500 --duration-secs 60 >"$OUT/$label.players" 2>&1 &
  pids+=($!)
fi
sleep 8
echo "$label $MODE (load $(cut -d' ' -f1-3 /proc/loadavg))"
case $MODE in
  strace)
    timeout -s INT "$SECONDS_COUNTED" strace -ttt -T -f -o "$OUT/$label.strace" \
      -e trace=io_uring_enter,read,write,membarrier,recvfrom,recvmsg -p "$server" >/dev/null 2>&1 || true
    python3 scripts/bench_wakes.py "$OUT/$label.strace" "$W"
    ;;
  perf)
    perf stat -e task-clock,context-switches,sched:sched_wakeup,syscalls:sys_enter_io_uring_enter,io_uring:io_uring_submit_req \
      -p "$server" -- sleep "$SECONDS_COUNTED" 2>&1 | grep -E "task-clock|context|sched_wakeup|io_uring"
    ;;
  uring)
    perf record -q -e io_uring:io_uring_submit_req -o "$OUT/$label.perf" -p "$server" -- sleep "$SECONDS_COUNTED" >/dev/null 2>&1
    perf script -i "$OUT/$label.perf" 2>/dev/null |
      awk '{for (i = 1; i <= NF; i++) if ($i == "opcode") op = $(i + 1); sub(",", "", op); print $1, op}' |
      sort | uniq -c | sort -k2,2 -k1,1nr
    ;;
esac
