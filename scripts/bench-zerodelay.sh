#!/usr/bin/env bash
# Issue 19 item 3: can the floor go below itself at zero delay? Today's floor writer at
# `--merge-window-ms 0` (variant `today`) next to the zero-delay pass writers of bench/floor
# (`--zero-delay`, src/pass.rs): `pass` (the same sendmsg per player per due frame, from the
# new writer: a check that both are measured alike), `uring` (one io_uring submission per
# pass for all players), `coalesce` (wake only for video frames, the audio due since rides
# in the same send), `uring-coalesce` and `uring-cMS` (audio waits at most MS ms for video, as
# the node's `-cMS` below), `uring-dMS` (audio waits only for video due within MS ms, as the
# node's `-dMS` and its default). The node's own variants run Corecast itself at
# `merge_window_ms = 0` with `player.zero_delay_send` = `writer` (today's node), `pass` or
# `uring` (node/src/sendpass.rs): `node-writer`, `node-pass`, `node-uring`; a suffix `-cMS`
# sets `player.zero_delay_coalesce_ms` (audio held for the next video frame, e.g.
# `node-uring-c40`), `-dMS` `player.zero_delay_coalesce_due_ms` (audio held only for a video
# frame due within MS ms, e.g. `node-uring-d8`; `-d0` turns the default off) and `-bN`
# `player.zero_delay_uring_batch_sends` (`node-uring-b64`);
# `base-node-*` runs the node binary of BASE_BIN (a before/after check; it must know the
# options the variant sets, so `base-node-pass` against main's build). The node is fed
# by the harness's synthetic publisher (the same stream the floor prepares), so its CPU
# includes that ingest, alike for the three.
#
# Each run: a fresh floor, N players from one reader (the harness `corecast-loadtest play`,
# or `corecast-reader`), CPU-s per delivered GB = the floor's utime+stime from /proc over the
# run ÷ the bytes the reader counted. Variants are interleaved within each round (A B C A B C)
# so the load of a shared machine drifts over all alike; the summary gives each variant's
# mean, min–max and its ratio to `today` per round. A run counts only where the reader got
# ≥ 99 % of the stream's bitrate on ≥ 99 % of its players. With STRACE_SECS > 0, one more
# short run per variant is traced (`strace -c -f` for that many seconds) for syscall counts,
# which the machine's load does not change.
#
# With HOG=1 a busy loop holds one CPU (CPU 1, `taskset`) during each run, bounded by the run's
# time: a deliberately loaded machine, to show what a variant does to the latency tail when the
# node cannot run the moment a frame arrives (the coalescing tail, BENCHMARKS.md "zdtail").
#
# Environment: PLAYERS (500), KBPS (2600), DURATION (10 s), ROUNDS (3), READERS ("harness
# reader"), VARIANTS ("today pass uring coalesce uring-coalesce"), THREADS (floor writers,
# nproc), BASE (the variant the ratios divide by: today), OUT (target/bench-zerodelay), STRACE_SECS (3; 0 = no trace), STRACE_PLAYERS (50: strace stops the floor at every
# syscall, and with many players the traced floor falls behind and batches what it would not). Everything binds 127.0.0.1. Results:
# target/bench-zerodelay/ (results.jsonl, summary.md, strace-*.txt). Needs release builds of
# corecast-floor, corecast-loadtest and corecast-reader (built here when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

PLAYERS=${PLAYERS:-500}
KBPS=${KBPS:-2600}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
READERS=${READERS:-"harness reader"}
VARIANTS=${VARIANTS:-"today pass uring coalesce uring-coalesce"}
THREADS=${THREADS:-$(nproc)}
STRACE_SECS=${STRACE_SECS:-3}
STRACE_PLAYERS=${STRACE_PLAYERS:-50}
HOG=${HOG:-0}
BASE=${BASE:-today}
BASE_BIN=${BASE_BIN:-/work/bench-base}
BIN=target/release
OUT=${OUT:-target/bench-zerodelay}
mkdir -p "$OUT"
for b in corecast-floor corecast-loadtest corecast-reader corecast; do
  [ -x "$BIN/$b" ] || cargo build --release -p corecast-floor -p corecast-loadtest -p corecast-reader -p corecast-node
done

flags_of() { # variant
  case $1 in
    today) echo "--merge-window-ms 0" ;;
    pass) echo "--zero-delay" ;;
    uring) echo "--zero-delay --send uring" ;;
    coalesce) echo "--zero-delay --coalesce-av" ;;
    uring-coalesce) echo "--zero-delay --send uring --coalesce-av" ;;
    uring-c[0-9]*) echo "--zero-delay --send uring --coalesce-av --coalesce-ms ${1#uring-c}" ;;
    uring-d[0-9]*) echo "--zero-delay --send uring --coalesce-av --coalesce-ms ${1#uring-d} --coalesce-due" ;;
    *) echo "bench-zerodelay: unknown variant $1" >&2; return 1 ;;
  esac
}

# Context switches (voluntary + involuntary) of a process, summed over its threads.
zd_ctxsw_of() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {t += $2} END {print t + 0}'; }

# utime+stime (s) of the ksoftirqd threads: loopback receive work the kernel defers from the
# sender's context to them is billed to no server, so a variant must not merely move it there.
zd_softirqd() { for p in $(pgrep -x 'ksoftirqd/[0-9]+'); do cat "/proc/$p/stat"; done | awk -v t="$(getconf CLK_TCK)" '{s += $14 + $15} END {print s / t}'; }

# Major page faults of a process (a page read back from disk: a stall of the faulting thread
# that a loaded disk can make last hundreds of ms).
zd_majflt_of() { awk '{print $12}' "/proc/$1/stat"; }

# utime+stime (s) of a process, all its threads included.
zd_cpu_of() { awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$1/stat"; }

start_floor() { # port variant
  case $2 in
    node-*) start_node "$1" "${2#node-}"; return ;;
    base-node-*) NODE_BIN=$BASE_BIN start_node "$1" "${2#base-node-}"; return ;;
  esac
  # shellcheck disable=SC2046
  "$BIN/corecast-floor" --listen "127.0.0.1:$1" --seconds $((DURATION + 30)) --threads "$THREADS" \
    --bitrate-kbps "$KBPS" --audio-kbps 64 $(flags_of "$2") >/dev/null 2>>"$OUT/floor.log" &
  echo $!
}

start_node() { # port mode[-cMS][-bN]
  local mode=${2%%-*} extra="" opt
  # Only the options a variant sets are written: an older build (BASE_BIN) refuses unknown ones.
  for opt in $(echo "${2#"$mode"}" | tr '-' ' '); do
    case $opt in
      c*) extra+="zero_delay_coalesce_ms = ${opt#c}"$'\n' ;;
      d*) extra+="zero_delay_coalesce_due_ms = ${opt#d}"$'\n' ;;
      b*) extra+="zero_delay_uring_batch_sends = ${opt#b}"$'\n' ;;
      *) echo "bench-zerodelay: unknown node option $opt" >&2; return 1 ;;
    esac
  done
  printf '[player]\nmerge_window_ms = 0\nzero_delay_send = "%s"\n%s[http]\nenabled = false\n[log]\nlevel = "info"\n' \
    "$mode" "$extra" >"$OUT/node-$2.toml"
  "${NODE_BIN:-$BIN}/corecast" --config "$OUT/node-$2.toml" --rtmp-listen "127.0.0.1:$1" --cores "$THREADS" \
    >/dev/null 2>>"$OUT/node.log" &
  echo $!
}

# The harness's synthetic publisher alone (the node's runs with the plain reader).
start_publisher() { # port
  "$BIN/corecast-loadtest" publish "rtmp://127.0.0.1:$1/live/bench" --bitrate-kbps "$KBPS" \
    --audio-kbps 64 --duration $((DURATION + 40)) --cores 1 --quiet >/dev/null 2>>"$OUT/publisher.err" &
  echo $!
}

run_reader() { # reader port json [variant]
  local publisher=""
  case ${4:-} in
    node-* | base-node-*)
      if [ "$1" = harness ]; then
        # Publisher and players in one harness process, as bench-compare runs the node.
        timeout $((DURATION + 40)) "$BIN/corecast-loadtest" e2e "rtmp://127.0.0.1:$2/live/bench" \
          --bitrate-kbps "$KBPS" --audio-kbps 64 -n "$PLAYERS" --duration "$DURATION" --ramp 500 \
          --max-connections 5000 --quiet --json "$3" >/dev/null 2>>"$OUT/harness.err" || true
        return
      fi
      publisher=$(start_publisher "$2")
      sleep 1 ;;
  esac
  if [ "$1" = harness ]; then
    timeout $((DURATION + 40)) "$BIN/corecast-loadtest" play "rtmp://127.0.0.1:$2/live/bench" \
      -n "$PLAYERS" --duration "$DURATION" --ramp 500 --max-connections 5000 --quiet \
      --json "$3" >/dev/null 2>>"$OUT/harness.err" || true
  else
    timeout $((DURATION + 40)) "$BIN/corecast-reader" "rtmp://127.0.0.1:$2/live/bench" \
      -n "$PLAYERS" --duration-secs "$DURATION" --ramp 500 --json "$3" \
      >/dev/null 2>>"$OUT/reader.err" || true
  fi
  if [ -n "$publisher" ]; then
    kill "$publisher" 2>/dev/null || true
    wait "$publisher" 2>/dev/null || true
  fi
}

run_one() { # variant reader round
  local port pid json="$OUT/$1-$2-r$3.json" cpu0 cpu1 cs0 cs1 sq0 sq1
  port=$(free_port)
  echo "== run $1 $2 r$3" >>"$OUT/node.log"
  pid=$(start_floor "$port" "$1")
  trap 'kill '"$pid"' 2>/dev/null || true' EXIT
  wait_port "$port"
  rm -f "$json"
  cpu0=$(zd_cpu_of "$pid")
  cs0=$(zd_ctxsw_of "$pid")
  sq0=$(zd_softirqd)
  local hog=""
  if [ "$HOG" = 1 ]; then
    timeout $((DURATION + 40)) taskset -c 1 sh -c 'while :; do :; done' &
    hog=$!
  fi
  run_reader "$2" "$port" "$json" "$1"
  if [ -n "$hog" ]; then
    kill "$hog" 2>/dev/null || true
    wait "$hog" 2>/dev/null || true
  fi
  cpu1=$(zd_cpu_of "$pid")
  cs1=$(zd_ctxsw_of "$pid")
  majflt=$(zd_majflt_of "$pid")
  sq1=$(zd_softirqd)
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  trap - EXIT
  python3 - "$json" "$1" "$2" "$3" "$cpu0" "$cpu1" "$PLAYERS" "$KBPS" $((cs1 - cs0)) "$sq0" "$sq1" "$majflt" >>"$OUT/results.jsonl" <<'PY'
import json, sys
path, variant, reader, rnd, cpu0, cpu1, n, kbps, ctxsw, sq0, sq1, majflt = sys.argv[1:]
n, kbps = int(n), int(kbps)
row = {"variant": variant, "reader": reader, "round": int(rnd), "players": n, "kbps": kbps,
       "major_faults": int(majflt)}
try:
    r = json.load(open(path))
except Exception as e:
    row["error"] = str(e); print(json.dumps(row)); sys.exit(0)
cpu = float(cpu1) - float(cpu0)
if reader == "reader":
    gb, ok, mbps = r["bytes"] / 1e9, r["players"] - r["failed"], r["mbps"]
    p50 = p90 = p99 = None
else:
    p = r["players"]
    gb, mbps = r["throughput"]["bytes_in"] / 1e9, r["throughput"]["aggregate_mbps"]
    ok = p["with_keyframe"] - p["gaps"]["players_with_gaps"] - r["connections"]["dropped"]
    lat = r.get("latency") or {}
    p50, p90, p99 = lat.get("p50_ms"), lat.get("p90_ms"), lat.get("p99_ms")
    # Video samples that took 20 ms or more (the tail), and the publisher's worst lag behind
    # its schedule (a lagging harness makes every downstream number look worse).
    slow = sum(b["count"] for b in lat.get("histogram", []) if b["from_ms"] >= 20)
    row["over_20ms"] = round(slow / lat["samples"], 4) if lat.get("samples") else None
    row["publisher_lag_ms"] = (r.get("publishers") or {}).get("max_lag_ms")
received = mbps / (n * kbps / 1000)
row.update({"cpu_s": round(cpu, 3), "gb": round(gb, 3), "players_ok": ok, "mbps": round(mbps, 1),
            "received": round(received, 3), "latency_p50_ms": p50, "latency_p90_ms": p90,
            "latency_p99_ms": p99, "load1": float(open("/proc/loadavg").read().split()[0]), "ctxsw": int(ctxsw),
            "ksoftirqd_s": round(float(sq1) - float(sq0), 3),
            "counts": ok >= 0.99 * n and received >= 0.99,
            "cpu_s_per_gb": round(cpu / gb, 3) if gb > 0 else None})
print(json.dumps(row))
PY
  tail -n 1 "$OUT/results.jsonl"
}

strace_one() { # variant
  local port pid
  port=$(free_port)
  pid=$(start_floor "$port" "$1")
  wait_port "$port"
  PLAYERS=$STRACE_PLAYERS run_reader harness "$port" "$OUT/strace-$1.json" "$1" &
  local reader=$!
  sleep $((DURATION / 2))
  timeout $((STRACE_SECS + 5)) strace -c -f -p "$pid" -o "$OUT/strace-$1.txt" &
  local tracer=$!
  sleep "$STRACE_SECS"
  kill -INT "$tracer" 2>/dev/null || true
  wait "$tracer" 2>/dev/null || true
  wait "$reader" 2>/dev/null || true
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  echo "strace $1: $(grep -E ' total$' "$OUT/strace-$1.txt" || echo none)"
}

: >"$OUT/results.jsonl"
: >"$OUT/floor.log"
for round in $(seq 1 "$ROUNDS"); do
  for reader in $READERS; do
    for variant in $VARIANTS; do
      run_one "$variant" "$reader" "$round"
    done
  done
done
if [ "$STRACE_SECS" -gt 0 ] && command -v strace >/dev/null; then
  for variant in $VARIANTS; do strace_one "$variant"; done
fi

python3 - "$OUT" "$STRACE_SECS" "$DURATION" "$STRACE_PLAYERS" "$BASE" >"$OUT/summary.md" <<'PY'
import json, os, re, sys
out, secs, DURATION, splayers, BASE = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
rows = [json.loads(l) for l in open(f"{out}/results.jsonl") if l.strip()]
variants = list(dict.fromkeys(r["variant"] for r in rows))
readers = list(dict.fromkeys(r["reader"] for r in rows))
rounds = sorted({r["round"] for r in rows})
def get(v, rd, rnd):
    return next((r for r in rows if (r["variant"], r["reader"], r["round"]) == (v, rd, rnd)), None)
n = rows[0]["players"] if rows else 0
print(f"{n} players, {rows[0]['kbps'] if rows else 0} kbit/s, {len(rounds)} round(s), variants interleaved per round. "
      "CPU-s/GB: floor utime+stime over the run ÷ bytes the reader counted; only runs with ≥ 99 % received on ≥ 99 % of players count.\n")
print(f"| reader | variant | runs counted | CPU-s/GB mean | min–max | ÷ {BASE} (mean) | ÷ {BASE} per round | received min | e2e p99 ms max | ctx switches/s | ksoftirqd CPU-s/GB |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for rd in readers:
    base = [get(BASE, rd, x) for x in rounds]
    bvals = [b["cpu_s_per_gb"] for b in base if b and b.get("counts")]
    bmean = sum(bvals) / len(bvals) if bvals else None
    for v in variants:
        rs = [get(v, rd, x) for x in rounds]
        ok = [r for r in rs if r and r.get("counts")]
        vals = [r["cpu_s_per_gb"] for r in ok]
        mean = sum(vals) / len(vals) if vals else None
        per = []
        for x in rounds:
            a, b = get(v, rd, x), get(BASE, rd, x)
            if a and b and a.get("counts") and b.get("counts"):
                per.append(f"{a['cpu_s_per_gb'] / b['cpu_s_per_gb']:.2f}")
        rec = [r["received"] for r in rs if r and "received" in r]
        p99 = [r["latency_p99_ms"] for r in rs if r and r.get("latency_p99_ms") is not None]
        f = lambda x, d=2: "-" if x is None else f"{x:.{d}f}"
        cs = [r["ctxsw"] / DURATION for r in rs if r and "ctxsw" in r]
        sq = [r["ksoftirqd_s"] / r["gb"] for r in ok if "ksoftirqd_s" in r and r["gb"] > 0]
        print(f"| {rd} | {v} | {len(ok)}/{len(rounds)} | {f(mean)} | {f(min(vals) if vals else None)}–{f(max(vals) if vals else None)} | "
              f"{f(mean / bmean) if mean and bmean else '-'} | {' '.join(per) or '-'} | {f(min(rec) if rec else None, 3)} | {f(max(p99) if p99 else None, 1)} | {f(sum(cs) / len(cs) if cs else None, 0)} | {f(sum(sq) / len(sq) if sq else None)} |")
lat = [r for r in rows if r.get("latency_p50_ms") is not None]
if lat:
    print("\nHarness e2e latency of video frames per run, ms (p50/p90/p99), the share of samples at 20 ms or more, "
          "the publisher's worst lag behind its schedule and the 1-minute load average at the run's end:\n")
    print("| variant | " + " | ".join(f"round {x}" for x in rounds) + " |")
    print("|---|" + "---|" * len(rounds))
    for v in variants:
        cells = []
        for x in rounds:
            r = get(v, "harness", x)
            if not r or r.get("latency_p50_ms") is None:
                cells.append("-")
                continue
            cells.append(f"{r['latency_p50_ms']:.1f}/{r['latency_p90_ms']:.1f}/{r['latency_p99_ms']:.1f}, "
                         f"{100 * (r.get('over_20ms') or 0):.1f} %, lag {r.get('publisher_lag_ms') or 0:.0f}, load {r.get('load1', 0):.1f}")
        print(f"| {v} | " + " | ".join(cells) + " |")
if secs > 0:
    print(f"\nSyscalls of the floor in {secs} s of `strace -c -f` ({splayers} harness players, mid-run; strace slows the floor, so compare counts, not times):\n")
    print("| variant | total calls | calls/s | top calls |")
    print("|---|---|---|---|")
    for v in variants:
        p = f"{out}/strace-{v}.txt"
        if not os.path.exists(p):
            continue
        lines = open(p).read().splitlines()
        calls = []
        total = None
        for l in lines:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\S+)$", l)
            if m:
                if m.group(2) == "total":
                    total = int(m.group(1))
                else:
                    calls.append((int(m.group(1)), m.group(2)))
        calls.sort(reverse=True)
        top = ", ".join(f"{name} {c}" for c, name in calls[:3])
        print(f"| {v} | {total if total is not None else '-'} | {total // secs if total else '-'} | {top} |")
PY
cat "$OUT/summary.md"
echo "bench-zerodelay: $OUT/summary.md, raw rows in $OUT/results.jsonl"
