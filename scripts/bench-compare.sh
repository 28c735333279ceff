#!/usr/bin/env bash
# `make bench-compare`: Corecast next to nginx-rtmp, in one run, on this machine.
#
# For each server — Corecast (all cores), nginx-rtmp with 1 worker, nginx-rtmp with 2 workers
# and rtmp_auto_push — one publisher of the same deterministic synthetic H.264/AAC-shaped
# stream (the load-test harness's e2e source, real time) and N players, for N in PLAYERS.
# Measured per run: delivered Mbit/s, server CPU-seconds per delivered GB (utime+stime of all
# the server's processes from /proc), players that got a keyframe and saw no gap, bitrate
# ratio, RSS growth per player, time to first keyframe p50/p99, e2e latency. Then the floor
# (bench/floor: the same stream prepared once, written to the same players once per merge
# window, as Corecast's `window_send` writes them: one sendmsg per player for "writer", one
# io_uring submission per window for "uring", the node's default; at WINDOW_MS=0 its best
# zero-delay writer, io_uring sends, with audio coalesced where Corecast coalesces), measured
# the same way, and the ratios.
#
# Every server is read by two kinds of players, each run on a fresh server: the harness
# (`corecast-loadtest`, io_uring-polled glommio players that decode everything) and the plain
# reader (`corecast-reader`, bench/reader: epoll players that count the bytes after the first
# key frame). For the reader, the harness publishes (`corecast-loadtest publish`) and the
# reader only plays; the CPU per GB is the server's CPU over the bytes that reader counted.
#
# Everything binds 127.0.0.1; every run is bounded by DURATION. Results: $OUT (target/bench-compare/).
# Corecast runs with its per-address limits off (BENCH_LIMITS in bench-lib.sh: every player is 127.0.0.1).
# Environment: PLAYERS ("100 500 1000 2000"), DURATION (20), BITRATES (kbit/s, "1000 2600";
# KBPS=N is the same as BITRATES=N), WINDOW_MS (Corecast's merge window, 100), CORES (Corecast
# executors, 0 = all CPUs), ZERO_DELAY_SEND and COALESCE_MS (at WINDOW_MS=0 only: Corecast's
# `player.zero_delay_send`, "uring", and `player.zero_delay_coalesce_ms`, 0), WINDOW_SEND (at a
# window: `player.window_send`, unset = the node's default), CORECAST_EXTRA (config sections
# appended to Corecast's, printf %b escapes, e.g. '[node]\npin_cores = false\n'), CORECAST (the node binary, default
# the profile's build: to compare two builds A B A B), SERVERS ("corecast nginx-1 nginx-2 floor"), READERS ("harness
# reader"), FLOOR_JOIN_AT_ONCE (non-empty: at a window with uring, the floor writes a joining player's
# first frames at once, as Corecast does, so its time to first frame compares; unset: at the
# next window), ROUNDS (1; more repeats everything and the ratios use the means), CARGO, PROFILE
# (release; "debug" only to check the script quickly: its figures mean nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

PLAYERS=${PLAYERS:-"100 500 1000 2000"}
DURATION=${DURATION:-20}
BITRATES=${KBPS:-${BITRATES:-"1000 2600"}}
WINDOW_MS=${WINDOW_MS:-100}
ZERO_DELAY_SEND=${ZERO_DELAY_SEND:-uring}
COALESCE_MS=${COALESCE_MS:-0}
WINDOW_SEND=${WINDOW_SEND:-}
FLOOR_JOIN_AT_ONCE=${FLOOR_JOIN_AT_ONCE:-}
CORECAST_EXTRA=${CORECAST_EXTRA:-}
CORES=${CORES:-0}
SERVERS=${SERVERS:-"corecast nginx-1 nginx-2 floor"}
READERS=${READERS:-"harness reader"}
PROFILE=${PROFILE:-release}
ROUNDS=${ROUNDS:-1}
CARGO=${CARGO:-cargo}
OUT=${OUT:-target/bench-compare}
mkdir -p "$OUT"

./scripts/install-deps.sh
command -v python3 >/dev/null || { echo "bench-compare: needs python3 (apt-get install python3)" >&2; exit 1; }
PACKAGES=(-p corecast-node -p corecast-loadtest -p corecast-floor -p corecast-reader)
if [ "$PROFILE" = release ]; then
  "$CARGO" build --release "${PACKAGES[@]}"
  BIN=target/release
else
  "$CARGO" build "${PACKAGES[@]}"
  BIN=target/debug
fi


# At zero delay each server writes as well as it can (issue 19 item 3): Corecast with its send
# pass, the floor with its best zero-delay writer (io_uring, BENCHMARKS.md "Zero delay"), and
# both hold audio for video only where COALESCE_MS asks Corecast to (it changes audio timing).
zero_delay_player() {
  if [ "$WINDOW_MS" != 0 ]; then
    [ -z "$WINDOW_SEND" ] || printf 'window_send = "%s"\n' "$WINDOW_SEND"
    return 0
  fi
  printf 'zero_delay_send = "%s"\nzero_delay_coalesce_ms = %s\n' "$ZERO_DELAY_SEND" "$COALESCE_MS"
}

floor_writer_flags() {
  if [ "$WINDOW_MS" != 0 ]; then
    # At a window the floor sends as Corecast's window_send does: one sendmsg per player
    # ("writer"), or one io_uring submission per window for all a thread's players ("uring",
    # the node's default).
    if [ "${WINDOW_SEND:-uring}" = writer ]; then
      echo "--merge-window-ms $WINDOW_MS"
    elif [ -n "$FLOOR_JOIN_AT_ONCE" ]; then
      # A joining player gets its first frames at once, as Corecast's (TTFF comparable).
      echo "--merge-window-ms $WINDOW_MS --send uring --join-at-once"
    else
      echo "--merge-window-ms $WINDOW_MS --send uring"
    fi
  elif [ "$COALESCE_MS" -gt 0 ]; then
    # The same bound as Corecast's (audio waits at most COALESCE_MS for video).
    echo "--zero-delay --send uring --coalesce-av --coalesce-ms $COALESCE_MS"
  else
    echo "--zero-delay --send uring"
  fi
}

start_corecast() {
  local port=$1
  printf '[player]\nmerge_window_ms = %s\n%s\n[http]\nenabled = false\n[log]\nlevel = "warn"\n%s' "$WINDOW_MS" "$(zero_delay_player)" "$BENCH_LIMITS" >"$OUT/corecast.toml"
  # CORECAST_EXTRA: more sections for the node's config (e.g. '[node]\npin_cores = false\n').
  printf '%b' "$CORECAST_EXTRA" >>"$OUT/corecast.toml"
  "${CORECAST:-$BIN/corecast}" --config "$OUT/corecast.toml" --rtmp-listen "127.0.0.1:$port" --cores "$CORES" >/dev/null 2>"$OUT/corecast.log" &
  echo $!
}

start_floor() { # port kbps
  local port=$1 kbps=$2 threads=$CORES
  [ "$threads" -gt 0 ] || threads=$(nproc)
  # shellcheck disable=SC2046
  "$BIN/corecast-floor" --listen "127.0.0.1:$port" --seconds $((DURATION + 40)) --threads "$threads" \
    --bitrate-kbps "$kbps" --audio-kbps 64 $(floor_writer_flags) >/dev/null 2>"$OUT/floor.log" &
  echo $!
}

# The harness's players (and, but for the floor, its publisher) in one process.
run_harness() { # label port players json
  local load
  # The floor serves its own copy of the stream: its players only play.
  if [ "$1" = floor ]; then
    load=(play)
  else
    load=(e2e --bitrate-kbps "$KBPS" --audio-kbps 64)
  fi
  timeout $((DURATION + 60)) "$BIN/corecast-loadtest" "${load[@]}" "rtmp://127.0.0.1:$2/live/bench" \
    -n "$3" --duration "$DURATION" --ramp 500 \
    --max-connections 5000 --quiet --json "$4" >/dev/null 2>"$OUT/$1-harness-$KBPS-$3.err" || true
}

# The plain reader's players. Its exit status says whether every player counted; the summary
# says which did not, so a failure here is recorded, not fatal.
run_reader() { # label port players json
  timeout $((DURATION + 60)) "$BIN/corecast-reader" "rtmp://127.0.0.1:$2/live/bench" \
    -n "$3" --duration-secs "$DURATION" --ramp 500 --json "$4" \
    >/dev/null 2>"$OUT/$1-reader-$KBPS-$3.err" || true
}

# The harness's synthetic publisher on its own, for the reader's runs (not the floor's).
start_publisher() { # port
  "$BIN/corecast-loadtest" publish "rtmp://127.0.0.1:$1/live/bench" --bitrate-kbps "$KBPS" \
    --audio-kbps 64 --duration $((DURATION + 70)) --cores 1 --quiet >/dev/null 2>"$OUT/publisher.err" &
  echo $!
}

run_one() { # server-label pid port players round reader
  local label=$1 pid=$2 port=$3 n=$4 round=$5 reader=$6
  local json="$OUT/$1-$6-$KBPS-$4-r$5.json" rss0 cpu0 cpu1 rss1 publisher=""
  rm -f "$json"
  if [ "$reader" = reader ] && [ "$label" != floor ]; then
    publisher=$(start_publisher "$port")
    # Let it get to publishing, so the reader's players find a stream, as the harness's do.
    sleep 1
  fi
  rss0=$(rss_of "$pid")
  cpu0=$(cpu_of "$pid")
  "run_$reader" "$label" "$port" "$n" "$json"
  cpu1=$(cpu_of "$pid")
  rss1=$(rss_of "$pid")
  if [ -n "$publisher" ]; then
    kill "$publisher" 2>/dev/null || true
    wait "$publisher" 2>/dev/null || true
  fi
  python3 - "$json" "$label" "$n" "$cpu0" "$cpu1" "$rss0" "$rss1" "$round" "$reader" "$KBPS" >>"$OUT/results.jsonl" <<'PY'
import json, sys
path, label, n, cpu0, cpu1, rss0, rss1, rnd, reader, kbps = sys.argv[1:]
row = {"server": label, "reader": reader, "kbps": int(kbps), "players": int(n), "round": int(rnd)}
try:
    r = json.load(open(path))
except Exception as e:
    row["error"] = str(e)
    print(json.dumps(row))
    sys.exit(0)
cpu = float(cpu1) - float(cpu0)
row["cpu_s"] = round(cpu, 3)
row["rss_kib_per_player"] = round((int(rss1) - int(rss0)) / int(n), 1)
if reader == "reader":
    # corecast-reader's summary: bytes counted after each player's first key frame.
    gb = r["bytes"] / 1e9
    row.update({
        "connected": r["connected"], "failed": r["failed"], "failures": r["failures"],
        "players_ok": r["players"] - r["failed"],
        "bitrate_ratio_min": None, "bitrate_ratio_p50": None,
        "player_mbps_min": r["per_player"]["mbps_min"], "player_mbps_max": r["per_player"]["mbps_max"],
        "mbps": r["mbps"],
        "ttff_p50_ms": r["ttff_ms"]["p50"], "ttff_p99_ms": r["ttff_ms"]["p99"],
        "latency_p50_ms": None, "latency_p99_ms": None, "gaps": None,
    })
else:
    p = r["players"]
    gb = r["throughput"]["bytes_in"] / 1e9
    ok = p["with_keyframe"] - p["gaps"]["players_with_gaps"] - r["connections"]["dropped"]
    ratio = p.get("bitrate_ratio") or {}
    row.update({
        "connected": p["connected"], "failed": r["connections"]["failed"],
        "players_ok": ok,
        "bitrate_ratio_min": ratio.get("min"), "bitrate_ratio_p50": ratio.get("p50"),
        "mbps": r["throughput"]["aggregate_mbps"],
        # None when no player got a key frame (nginx-2's players on the other worker).
        "ttff_p50_ms": (p.get("first_keyframe_ms") or {}).get("p50"),
        "ttff_p99_ms": (p.get("first_keyframe_ms") or {}).get("p99"),
        "latency_p50_ms": (r.get("latency") or {}).get("p50_ms"), "latency_p99_ms": (r.get("latency") or {}).get("p99_ms"),
        "gaps": p["gaps"]["total"],
    })
row["cpu_s_per_gb"] = round(cpu / gb, 3) if gb > 0 else None
print(json.dumps(row))
PY
  tail -n 1 "$OUT/results.jsonl"
}

: >"$OUT/results.jsonl"
# Every run gets a fresh server, so its RSS growth and CPU belong to that run alone; the
# servers take turns at each N, so a drift in the machine's load hits all of them alike.
for reader in $READERS; do
  case $reader in
    harness|reader) ;;
    *) echo "bench-compare: unknown reader $reader (READERS: harness reader)" >&2; exit 1 ;;
  esac
done
for round in $(seq 1 "$ROUNDS"); do
for KBPS in $BITRATES; do
for n in $PLAYERS; do
  for server in $SERVERS; do
  for reader in $READERS; do
    port=$(free_port)
    case $server in
      corecast) pid=$(start_corecast "$port") ;;
      nginx-1) pid=$(start_nginx "$port" 1) ;;
      nginx-2) pid=$(start_nginx "$port" 2) ;;
      floor) pid=$(start_floor "$port" "$KBPS") ;;
      *) echo "bench-compare: unknown server $server" >&2; exit 1 ;;
    esac
    trap 'kill '"$pid"' 2>/dev/null || true' EXIT
    wait_port "$port"
    run_one "$server" "$pid" "$port" "$n" "$round" "$reader"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    trap - EXIT
  done
  done
done
done
done

python3 - "$OUT/results.jsonl" "$WINDOW_MS" "$DURATION" "$ZERO_DELAY_SEND" "$COALESCE_MS" "$(floor_writer_flags)" >"$OUT/summary.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
window, duration, zd_send, coalesce, floor_flags = sys.argv[2:]
for r in rows:
    r.setdefault("reader", "harness")
rounds = sorted({r.get("round", 1) for r in rows})
bitrates = sorted({r.get("kbps") for r in rows}, key=lambda k: k or 0)
players = sorted({r["players"] for r in rows})
servers = [x for x in ["corecast", "nginx-1", "nginx-2", "floor"] if any(r["server"] == x for r in rows)]
readers = [x for x in ["harness", "reader"] if any(r["reader"] == x for r in rows)]
def f(v, d=2):
    return "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
def get(s, rd, k, n, rnd):
    return next((r for r in rows if (r["server"], r["reader"], r.get("kbps"), r["players"], r.get("round", 1)) == (s, rd, k, n, rnd)), None)
def mean_cpu(s, rd, k, n):
    v = [r["cpu_s_per_gb"] for r in rows if (r["server"], r["reader"], r.get("kbps"), r["players"]) == (s, rd, k, n) and r.get("cpu_s_per_gb")]
    return sum(v) / len(v) if v else None
zero_delay = f" (zero_delay_send = {zd_send}, zero_delay_coalesce_ms = {coalesce})" if window == "0" else ""
print(f"{duration} s per run, Corecast merge window {window} ms{zero_delay}, floor `{floor_flags}`, {len(rounds)} round(s). "
      "Readers: harness = corecast-loadtest (io_uring), reader = corecast-reader (epoll, counts after the first key frame).\n")
for k in bitrates:
    print(f"### Stream {k} kbit/s\n")
    print("| players | server | reader | round | connected | ok | bitrate ratio min/p50 | Mbit/s | CPU-s/GB | RSS KiB/player | TTFF p50/p99 ms | latency p50/p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in players:
        for s in servers:
            for rd in readers:
                for rnd in rounds:
                    r = get(s, rd, k, n, rnd)
                    if not r:
                        continue
                    if "error" in r:
                        print(f"| {n} | {s} | {rd} | {rnd} | error | | | | | | | |"); continue
                    print(f"| {n} | {s} | {rd} | {rnd} | {r['connected']} | {r['players_ok']} | {f(r['bitrate_ratio_min'],3)}/{f(r['bitrate_ratio_p50'],3)} | {f(r['mbps'],0)} | {f(r['cpu_s_per_gb'])} | {f(r['rss_kib_per_player'],1)} | {f(r['ttff_p50_ms'],1)}/{f(r['ttff_p99_ms'],1)} | {f(r['latency_p50_ms'],1)}/{f(r['latency_p99_ms'],1)} |")
    print()
    print(f"CPU-s per GB at {k} kbit/s: the mean over the rounds; the ratios divide those means.\n")
    print("| players | reader | Corecast CPU-s/GB | ÷ nginx 1 worker | ÷ nginx 2 workers | ÷ floor | floor CPU-s/GB | ÷ floor per round |")
    print("|---|---|---|---|---|---|---|---|")
    for n in players:
        for rd in readers:
            c = mean_cpu("corecast", rd, k, n)
            def ratio(s):
                o = mean_cpu(s, rd, k, n)
                return "-" if not c or not o else f"{c / o:.2f}"
            per_round = []
            for rnd in rounds:
                a, b = get("corecast", rd, k, n, rnd), get("floor", rd, k, n, rnd)
                if a and b and a.get("cpu_s_per_gb") and b.get("cpu_s_per_gb"):
                    per_round.append(f"{a['cpu_s_per_gb'] / b['cpu_s_per_gb']:.2f}")
            print(f"| {n} | {rd} | {f(c)} | {ratio('nginx-1')} | {ratio('nginx-2')} | {ratio('floor')} | {f(mean_cpu('floor', rd, k, n))} | {' '.join(per_round) or '-'} |")
    print()
PY
cat "$OUT/summary.md"
echo "bench-compare: $OUT/summary.md, raw rows in $OUT/results.jsonl"
