#!/usr/bin/env bash
# `make bench-callgrind`: user-space instructions and syscalls per delivered MB, Corecast vs
# the floor, with the same plain readers (issue 19 item 2). Timings on a shared machine drift
# by tens of percent; instruction and syscall counts repeat.
#
# For each server (Corecast with one core and merge window WINDOW_MS, the floor with one
# thread and the same window) and each window in WINDOWS: the server runs under valgrind's
# callgrind (or, with MODE=strace, is counted by `strace -c -f`), N players (`corecast-reader`, epoll)
# read it for DURATION seconds, Corecast's stream comes from `corecast-loadtest publish` at
# KBPS (its own process, not measured). The counters are zeroed once the players have
# joined (JOIN seconds after the first connect, 4) and dumped 2 s before the readers end, so
# both servers are counted over the same steady delivery (the handshakes' SHA-256 runs in
# software under valgrind and would swamp it). The MB of that window are the readers' steady
# rate times its length. Prints instructions (Ir) per MB, or with MODE=strace (attached for
# the same window) the syscalls by name per MB, or with MODE=iovecs (strace of `sendmsg`
# alone, for the same window) the iovecs per `sendmsg` (mean, median, max) and bytes per call.
#
# Needs valgrind (apt-get install valgrind) for MODE=callgrind. Everything binds 127.0.0.1.
# Results: target/bench-callgrind/. Environment: PLAYERS (100), DURATION (10), KBPS (1000),
# WINDOWS ("100 333"), SERVERS ("corecast floor"), MODE (callgrind | strace | iovecs), CARGO, BIN,
# PLAYER_EXTRA (lines added to Corecast's [player] section, e.g. 'window_send = "uring"\n').
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

PLAYERS=${PLAYERS:-100}
DURATION=${DURATION:-10}
KBPS=${KBPS:-1000}
WINDOWS=${WINDOWS:-"100 333"}
SERVERS=${SERVERS:-"corecast floor"}
MODE=${MODE:-callgrind}
JOIN=${JOIN:-4}
WINDOW=$((DURATION - JOIN - 2))
CARGO=${CARGO:-cargo}
OUT=target/bench-callgrind
mkdir -p "$OUT"
if [ "$MODE" = callgrind ]; then
  command -v valgrind >/dev/null || { echo "bench-callgrind: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
else
  command -v strace >/dev/null || { echo "bench-callgrind: needs strace (apt-get install strace)" >&2; exit 1; }
fi
if [ -z "${BIN:-}" ]; then
  "$CARGO" build --release -p corecast-node -p corecast-loadtest -p corecast-reader -p corecast-floor
  BIN=target/release
fi

under() { # label: the measuring wrapper's command line (strace attaches later, for the window)
  if [ "$MODE" = callgrind ]; then
    echo valgrind --tool=callgrind --callgrind-out-file="$OUT/$1.cg" --dump-instr=no
  fi
}

: >"$OUT/results.jsonl"
for window in $WINDOWS; do
  for server in $SERVERS; do
    label="$server-$window-$PLAYERS"
    rm -f "$OUT/$label".*
    port=$(free_port)
    url="rtmp://127.0.0.1:$port/live/bench"
    publisher=""
    case $server in
      corecast)
        printf '[player]\nmerge_window_ms = %s\n%b[http]\nenabled = false\n[log]\nlevel = "warn"\n%s' "$window" "${PLAYER_EXTRA:-}" "$BENCH_LIMITS" >"$OUT/corecast.toml"
        # shellcheck disable=SC2046
        $(under "$label") "$BIN/corecast" --config "$OUT/corecast.toml" --rtmp-listen "127.0.0.1:$port" \
          --cores 1 >/dev/null 2>"$OUT/$label.log" &
        ;;
      floor)
        # shellcheck disable=SC2046
        $(under "$label") "$BIN/corecast-floor" --listen "127.0.0.1:$port" --seconds $((DURATION + 300)) \
          --threads 1 --bitrate-kbps "$KBPS" --audio-kbps 64 --merge-window-ms "$window" >/dev/null 2>"$OUT/$label.log" &
        ;;
      *) echo "bench-callgrind: unknown server $server" >&2; exit 1 ;;
    esac
    wrapper=$!
    trap 'kill '"$wrapper"' 2>/dev/null || true' EXIT
    for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
    if [ "$server" = corecast ]; then
      "$BIN/corecast-loadtest" publish "$url" --bitrate-kbps "$KBPS" --audio-kbps 64 \
        --duration $((DURATION + 120)) --cores 1 --quiet >/dev/null 2>"$OUT/publisher.err" &
      publisher=$!
      sleep 3
    fi
    json="$OUT/$label.json"
    timeout $((DURATION + 120)) "$BIN/corecast-reader" "$url" -n "$PLAYERS" --duration-secs "$DURATION" \
      --ramp 500 --setup-timeout-secs 60 --json "$json" >/dev/null 2>"$OUT/$label-reader.err" &
    reader=$!
    # Steady state only: from JOIN seconds after the first connect (every player joined and
    # playing) for WINDOW seconds; the bytes of that window are the readers' rate times it.
    sleep "$JOIN"
    if [ "$MODE" = callgrind ]; then
      callgrind_control --zero "$wrapper" >/dev/null
      sleep "$WINDOW"
      callgrind_control --dump "$wrapper" >/dev/null
    elif [ "$MODE" = iovecs ]; then
      timeout -s INT "$WINDOW" strace -f -e trace=sendmsg -o "$OUT/$label.iov" -p "$wrapper" || true
    else
      # SIGINT detaches strace, which then writes its counts; the server runs on.
      timeout -s INT "$WINDOW" strace -f -c -o "$OUT/$label.strace" -p "$wrapper" || true
    fi
    wait "$reader" || true
    [ -n "$publisher" ] && { kill "$publisher" 2>/dev/null || true; wait "$publisher" 2>/dev/null || true; }
    kill "$wrapper" 2>/dev/null || true
    wait "$wrapper" 2>/dev/null || true
    trap - EXIT
    python3 - "$OUT" "$label" "$server" "$window" "$PLAYERS" "$MODE" "$WINDOW" >>"$OUT/results.jsonl" <<'PY'
import glob, json, re, sys
out, label, server, window, players, mode, secs = sys.argv[1:]
row = {"server": server, "window_ms": int(window), "players": int(players), "mode": mode}
try:
    r = json.load(open(f"{out}/{label}.json"))
    row["bytes"], row["failed"] = r["bytes"], r["failed"]
    # The readers' steady rate (bytes after the first key frame over the time since) over the
    # counted window.
    playing = r["duration_secs"] - r["ttff_ms"]["p50"] / 1000
    mb = r["bytes"] / playing * float(secs) / 1e6
    row["mb_counted"] = round(mb, 1)
    if mode == "callgrind":
        # The dump made after the players ended (callgrind_control --dump): the last one.
        files = sorted(glob.glob(f"{out}/{label}.cg*"), key=lambda p: (len(p), p))
        ir = 0
        for line in open(files[-1]):
            if line.startswith("summary:") or line.startswith("totals:"):
                ir = int(line.split()[1])
        row["ir"] = ir
        row["ir_per_mb"] = round(ir / mb)
    elif mode == "iovecs":
        import statistics
        iov, sent = [], []
        for line in open(f"{out}/{label}.iov"):
            m = re.search(r"msg_iovlen=(\d+).*\) = (\d+)", line)
            if m:
                iov.append(int(m.group(1)))
                sent.append(int(m.group(2)))
        row["sendmsg"] = len(iov)
        row["iovecs_mean"] = round(statistics.mean(iov), 2)
        row["iovecs_p50"] = statistics.median(iov)
        row["iovecs_max"] = max(iov)
        row["bytes_per_sendmsg"] = round(statistics.mean(sent))
    else:
        calls = {}
        for line in open(f"{out}/{label}.strace"):
            f = line.split()
            if len(f) >= 5 and f[-1] not in ("syscall", "total") and f[3].isdigit():
                calls[f[-1]] = int(f[3])
            elif len(f) >= 4 and f[-1] not in ("syscall", "total") and f[2].isdigit():
                calls[f[-1]] = int(f[2])
        row["syscalls_per_mb"] = {k: round(v / mb, 2) for k, v in sorted(calls.items(), key=lambda kv: -kv[1])}
        row["syscalls_total_per_mb"] = round(sum(calls.values()) / mb, 2)
except Exception as e:
    row["error"] = repr(e)
print(json.dumps(row))
PY
    tail -n 1 "$OUT/results.jsonl"
  done
done
