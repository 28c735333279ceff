#!/usr/bin/env bash
# What one published stream costs the node with no players (the fixed cost of a live stream,
# issue 19 item 2): the share of a node's CPU per delivered GB that the floor (which ingests
# nothing) does not pay. Never asserted; figures for BENCHMARKS.md ("The fixed cost of a live
# stream").
#
# Each round and setting: a fresh release node on 127.0.0.1 (CORES cores, merge window W ms,
# [hls] on or off), the harness's synthetic publisher (KBPS kbit/s) or none (STREAM=0: the
# idle node), and over SECONDS_COUNTED seconds of steady publishing (after 5 s):
# - MODE=cpu (default): the node's CPU-ms per second (the threads' on-CPU nanoseconds from
#   /proc/PID/task/*/schedstat, not the 10 ms utime ticks), its context switches per second
#   (voluntary + involuntary, all threads) and `corecast_tick_wakeups_total` per second;
# - MODE=strace: `strace -c -f` attached for the same seconds: syscalls per second by name;
# - MODE=callgrind: the node runs under callgrind, zeroed after the 5 s and dumped after the
#   counted seconds: instructions per second, and the profile in OUT for callgrind_annotate.
# Environment: ROUNDS (1), SECONDS_COUNTED (20), KBPS (1000), BIN (target/release), CORES
# ("1 2"), WINDOWS ("333 100 0"), HLS ("true"), STREAM ("1 0"), MODE (cpu), OUT
# (target/bench-ingest).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
ROUNDS=${ROUNDS:-1}
SECONDS_COUNTED=${SECONDS_COUNTED:-20}
KBPS=${KBPS:-1000}
BIN=${BIN:-target/release}
CORES=${CORES:-"1 2"}
WINDOWS=${WINDOWS:-"333 100 0"}
HLS=${HLS:-true}
STREAM=${STREAM:-"1 0"}
MODE=${MODE:-cpu}
OUT=${OUT:-target/bench-ingest}
LOADTEST=${LOADTEST:-$BIN/corecast-loadtest}
mkdir -p "$OUT"

# The node's threads' on-CPU nanoseconds and context switches so far.
on_cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
switches() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s + 0}'; }
wakeups() { curl -fsS "http://127.0.0.1:$2/metrics" 2>/dev/null | awk '/^corecast_tick_wakeups_total/ {s += $2} END {print s + 0}'; }

for r in $(seq "$ROUNDS"); do
  for cores in $CORES; do
    for window in $WINDOWS; do
      for hls in $HLS; do
        for stream in $STREAM; do
          label="c$cores-w$window-hls$hls-s$stream-r$r"
          rtmp=$(free_port)
          http=$(free_port)
          printf '[rtmp]\nlisten = "127.0.0.1:%s"\n[http]\nlisten = "127.0.0.1:%s"\n[hls]\nenabled = %s\n[player]\nmerge_window_ms = %s\n[log]\nlevel = "warn"\n' \
            "$rtmp" "$http" "$hls" "$window" >"$OUT/$label.toml"
          wrap=()
          [ "$MODE" = callgrind ] && wrap=(valgrind --tool=callgrind --callgrind-out-file="$OUT/$label.cg" --dump-instr=no)
          "${wrap[@]}" "$BIN/corecast" --config "$OUT/$label.toml" --cores "$cores" >"$OUT/$label.log" 2>&1 &
          node=$!
          for _ in $(seq 300); do (exec 3<>"/dev/tcp/127.0.0.1/$rtmp") 2>/dev/null && break; sleep 0.1; done
          pub=""
          if [ "$stream" = 1 ]; then
            timeout $((SECONDS_COUNTED + 30)) "$LOADTEST" publish "rtmp://127.0.0.1:$rtmp/live/bench" \
              --bitrate-kbps "$KBPS" --audio-kbps 64 --duration $((SECONDS_COUNTED + 20)) --cores 1 --quiet \
              >/dev/null 2>&1 &
            pub=$!
          fi
          sleep 5
          case $MODE in
            cpu)
              t0=$(on_cpu_ns "$node") s0=$(switches "$node") w0=$(wakeups "$node" "$http")
              sleep "$SECONDS_COUNTED"
              t1=$(on_cpu_ns "$node") s1=$(switches "$node") w1=$(wakeups "$node" "$http")
              echo "$label CPU-ms/s $(awk -v a="$t0" -v b="$t1" -v s="$SECONDS_COUNTED" 'BEGIN {printf "%.2f", (b - a) / 1e6 / s}')" \
                "switches/s $(awk -v a="$s0" -v b="$s1" -v s="$SECONDS_COUNTED" 'BEGIN {printf "%.1f", (b - a) / s}')" \
                "tick-wakeups/s $(awk -v a="$w0" -v b="$w1" -v s="$SECONDS_COUNTED" 'BEGIN {printf "%.1f", (b - a) / s}')" \
                "(load $(cut -d' ' -f1 /proc/loadavg))"
              ;;
            strace)
              timeout -s INT "$SECONDS_COUNTED" strace -f -c -o "$OUT/$label.strace" -p "$node" >/dev/null 2>&1 || true
              echo "$label syscalls/s: $(awk -v s="$SECONDS_COUNTED" 'NF >= 5 && $NF != "syscall" && $NF != "total" && $4 ~ /^[0-9]+$/ {printf "%s %.1f  ", $NF, $4 / s} $NF == "total" {t = $4} END {printf "| all %.1f", t / s}' "$OUT/$label.strace")"
              ;;
            callgrind)
              callgrind_control --zero "$node" >/dev/null
              sleep "$SECONDS_COUNTED"
              callgrind_control --dump "$node" >/dev/null
              last=$(ls -v "$OUT/$label".cg* | tail -n 1)
              ir=$(awk '/^(summary|totals):/ {print $2}' "$last" | tail -n 1)
              echo "$label Ir/s $(awk -v i="$ir" -v s="$SECONDS_COUNTED" 'BEGIN {printf "%.0f", i / s}') ($last)"
              ;;
            *) echo "bench-ingest: unknown MODE $MODE" >&2; exit 1 ;;
          esac
          [ -n "$pub" ] && kill "$pub" 2>/dev/null || true
          kill "$node" 2>/dev/null || true
          wait 2>/dev/null || true
        done
      done
    done
  done
done
