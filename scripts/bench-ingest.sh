#!/usr/bin/env bash
# What one published stream costs the node with no players, [hls] on and off: the share of a
# node's CPU per delivered GB that the floor (which ingests nothing) does not pay. Never
# asserted; figures for BENCHMARKS.md ("The session-6 merges re-checked").
#
# Each round and setting: a fresh release node on 127.0.0.1, the harness's synthetic publisher
# (KBPS kbit/s), and the node's utime+stime over SECONDS of steady publishing (after 5 s).
# Environment: ROUNDS (2), SECONDS_COUNTED (20), KBPS (1000), BIN (target/release).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
SECONDS_COUNTED=${SECONDS_COUNTED:-20}
KBPS=${KBPS:-1000}
BIN=${BIN:-target/release}
RTMP=19360
HTTP=18090
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
for r in $(seq "$ROUNDS"); do
  for hls in true false; do
    d=$(mktemp -d)
    printf '[rtmp]\nlisten = "127.0.0.1:%s"\n[http]\nlisten = "127.0.0.1:%s"\n[hls]\nenabled = %s\n' \
      "$RTMP" "$HTTP" "$hls" >"$d/c.toml"
    "$BIN/corecast" --config "$d/c.toml" >"$d/log" 2>&1 &
    node=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$RTMP") 2>/dev/null && break; sleep 0.1; done
    timeout $((SECONDS_COUNTED + 20)) "$BIN/corecast-loadtest" publish "rtmp://127.0.0.1:$RTMP/live/bench" \
      --bitrate-kbps "$KBPS" --audio-kbps 64 --duration $((SECONDS_COUNTED + 10)) --cores 1 --quiet \
      >/dev/null 2>&1 &
    pub=$!
    sleep 5
    t0=$(ticks "$node")
    sleep "$SECONDS_COUNTED"
    t1=$(ticks "$node")
    echo "round $r hls=$hls node CPU-s over ${SECONDS_COUNTED}s: $(awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }') (load $(cut -d' ' -f1 /proc/loadavg))"
    kill "$pub" "$node" 2>/dev/null || true
    wait "$pub" "$node" 2>/dev/null || true
    rm -rf "$d"
  done
done
