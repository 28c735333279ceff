#!/usr/bin/env bash
# `make bench-memory`: the memory a connected player costs the server (issue 19 item 4).
#
# For each server (Corecast with the default 100 ms window, nginx-rtmp with 1 worker), each
# reader (the harness's `corecast-loadtest play`, the plain epoll `corecast-reader`) and each
# N in PLAYERS, on a fresh server: one synthetic publisher at KBPS (`corecast-loadtest
# publish`, its own process) publishes for SETTLE seconds, the server's RSS is read (before),
# then N players join at 500/s and stay; HOLD seconds after the last one joined, the RSS is
# read again three times a second apart (after: the median). RSS per player = (after -
# before) / the players connected, while they are connected and receiving, so it is what
# they hold, not what the allocator kept after they left.
#
# Everything binds 127.0.0.1; every run is bounded. Results: target/bench-memory/.
# Environment: PLAYERS ("500 2000"), KBPS (1000), SERVERS ("corecast nginx-1"), READERS
# ("harness reader"), SETTLE (3), HOLD (5), WINDOW_MS (100), CORES (0 = all CPUs), CARGO,
# BIN (the directory of the binaries; set it to skip the release build).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

PLAYERS=${PLAYERS:-"500 2000"}
KBPS=${KBPS:-1000}
SERVERS=${SERVERS:-"corecast nginx-1"}
READERS=${READERS:-"harness reader"}
SETTLE=${SETTLE:-3}
HOLD=${HOLD:-5}
WINDOW_MS=${WINDOW_MS:-100}
CORES=${CORES:-0}
CARGO=${CARGO:-cargo}
OUT=target/bench-memory
mkdir -p "$OUT"
command -v python3 >/dev/null || { echo "bench-memory: needs python3" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then
  "$CARGO" build --release -p corecast-node -p corecast-loadtest -p corecast-reader
  BIN=target/release
fi
ulimit -n 65536 2>/dev/null || true

start_corecast() { # port
  printf '[player]\nmerge_window_ms = %s\n[http]\nenabled = false\n[log]\nlevel = "warn"\n%s' "$WINDOW_MS" "$BENCH_LIMITS" >"$OUT/corecast.toml"
  "$BIN/corecast" --config "$OUT/corecast.toml" --rtmp-listen "127.0.0.1:$1" --cores "$CORES" >/dev/null 2>"$OUT/corecast.log" &
  echo $!
}

median3() { printf '%s\n' "$@" | sort -n | sed -n 2p; }

: >"$OUT/results.jsonl"
for n in $PLAYERS; do
  for server in $SERVERS; do
    for reader in $READERS; do
      port=$(free_port)
      case $server in
        corecast) pid=$(start_corecast "$port") ;;
        nginx-1) pid=$(start_nginx "$port" 1) ;;
        *) echo "bench-memory: unknown server $server" >&2; exit 1 ;;
      esac
      trap 'kill '"$pid"' 2>/dev/null || true' EXIT
      wait_port "$port"
      join=$(( (n + 499) / 500 ))
      duration=$((join + HOLD + 5))
      url="rtmp://127.0.0.1:$port/live/bench"
      "$BIN/corecast-loadtest" publish "$url" --bitrate-kbps "$KBPS" --audio-kbps 64 \
        --duration $((SETTLE + duration + 10)) --cores 1 --quiet >/dev/null 2>"$OUT/publisher.err" &
      publisher=$!
      sleep "$SETTLE"
      before=$(rss_of "$pid")
      json="$OUT/$server-$reader-$n.json"
      rm -f "$json"
      case $reader in
        harness) timeout $((duration + 30)) "$BIN/corecast-loadtest" play "$url" -n "$n" --lite \
                   --duration "$duration" --ramp 500 --quiet --json "$json" >/dev/null 2>"$OUT/$server-$reader-$n.err" & ;;
        reader) timeout $((duration + 30)) "$BIN/corecast-reader" "$url" -n "$n" \
                  --duration-secs "$duration" --ramp 500 --json "$json" >/dev/null 2>"$OUT/$server-$reader-$n.err" & ;;
        *) echo "bench-memory: unknown reader $reader" >&2; exit 1 ;;
      esac
      players=$!
      sleep $((join + HOLD))
      a=$(rss_of "$pid"); sleep 1; b=$(rss_of "$pid"); sleep 1; c=$(rss_of "$pid")
      after=$(median3 "$a" "$b" "$c")
      wait "$players" || true
      kill "$publisher" 2>/dev/null || true
      wait "$publisher" 2>/dev/null || true
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      trap - EXIT
      python3 - "$json" "$server" "$reader" "$n" "$before" "$after" "$KBPS" >>"$OUT/results.jsonl" <<'PY'
import json, sys
path, server, reader, n, before, after, kbps = sys.argv[1:]
row = {"server": server, "reader": reader, "players": int(n), "kbps": int(kbps),
       "rss_before_kib": int(before), "rss_after_kib": int(after)}
connected = int(n)
try:
    r = json.load(open(path))
    if reader == "reader":
        row["connected"], row["ok"] = r["connected"], r["players"] - r["failed"]
    else:
        p = r["players"]
        row["connected"], row["ok"] = p["connected"], p["with_keyframe"] - r["connections"]["dropped"]
    connected = max(row["connected"], 1)
except Exception as e:
    row["error"] = str(e)
# Per player that the server held (a loaded machine may not connect them all).
row["rss_kib_per_player"] = round((int(after) - int(before)) / connected, 1)
print(json.dumps(row))
PY
      tail -n 1 "$OUT/results.jsonl"
    done
  done
done

python3 - "$OUT/results.jsonl" >"$OUT/summary.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| players | server | reader | connected | ok | RSS before MiB | RSS with players MiB | RSS KiB/player |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['players']} | {r['server']} | {r['reader']} | {r.get('connected', '-')} | {r.get('ok', '-')} | "
          f"{r['rss_before_kib'] / 1024:.1f} | {r['rss_after_kib'] / 1024:.1f} | {r['rss_kib_per_player']:.1f} |")
PY
cat "$OUT/summary.md"
echo "bench-memory: $OUT/summary.md, raw rows in $OUT/results.jsonl"
