#!/usr/bin/env bash
# Browser delivery benchmarks (issue 16), side by side in one run, on this machine. Never
# asserted: figures for BENCHMARKS.md. Everything binds 127.0.0.1 (NETNS=1: see below) and every
# run is bounded by DURATION (plus fixed set-up limits); each run gets a fresh server.
#
# One synthetic H.264/AAC-shaped stream (the harness's e2e publisher: SEI clock in every video
# frame, KBPS kbit/s, a key frame every GOP_FRAMES at 30 fps) and N viewers, read by the
# harness (corecast-loadtest) with --viewer:
#   1. latency:  Corecast LL-HLS (parts of PART_MS, viewers at the live edge with blocking
#                reloads)  vs  nginx-rtmp's HLS (MPEG-TS, hls_fragment = one GOP, served by
#                nginx with sendfile), LAT_VIEWERS viewers each: glass-to-glass p50/p99 from
#                the SEI clock, time to first frame, stalls.
#   2. plain:    plain HLS to PLAIN_VIEWERS viewers (--lite: bytes after the first frame):
#                Corecast's plain.m3u8  vs  nginx (sendfile) serving nginx-rtmp's .ts files:
#                server CPU-s per delivered GB and the ratio. With READER=1 also with
#                bench/reader's epoll HLS viewers (corecast-reader, the harness publishing),
#                each reader with its own ratio.
#   3. ll-vs-plain: Corecast LL-HLS to PLAIN_VIEWERS viewers against run 2's Corecast plain
#                HLS: CPU-s per GB and requests per second per viewer.
#   4. flv-vs-rtmp: Corecast HTTP-FLV to FLV_VIEWERS viewers  vs  Corecast RTMP to as many
#                players (the harness; with READER=1 also bench/reader's epoll players, for
#                FLV and for RTMP): CPU-s per GB and each reader's own ratio.
# Server CPU is utime+stime of the server's processes (nginx: master and workers) from /proc
# over the reader's run (and, as a second figure, the whole machine's busy CPU from /proc/stat
# over the same window: clients and kernel included, whoever the kernel billed it to); bytes
# are what the viewers received (harness: HTTP bodies, RTMP socket bytes; bench/reader: HLS
# bodies from the first segment on, FLV and RTMP bytes after the first key frame).
# bench/reader runs publish first and start once the stream's playlist lists a segment;
# harness runs publish and view at once, so their window includes the viewers' wait for a
# first playlist (404s, retried every 100 ms) and segment.
#
# Environment: DURATION (15 s per run), KBPS (1000), GOP_FRAMES (60), PART_MS (200),
# LAT_VIEWERS (20), PLAIN_VIEWERS (1000), FLV_VIEWERS (500), CORES (Corecast executors, 0 =
# all CPUs), NGINX_WORKERS (1; Debian's own nginx.conf has `auto`, one per CPU), RUNS
# ("latency plain ll-vs-plain flv-vs-rtmp"), READER (0), READ_BATCH_MS
# (unset: the node's default; set, it goes in [http] as read_batch_ms: 0 turns the busy
# core's read hub off, for an A/B on one build; older builds refuse it), FAST_LANE (unset:
# the default; true|false goes in [http] as fast_lane: an A/B of the plain-HLS fast lane on
# one build; builds before session 8 refuse it), PROFILE (release;
# "debug" only checks the script), CARGO, CORECAST (the node binary; default the profile's
# build: set it to compare two builds, A B A B), OUT (results folder, default target/bench-hls/:
# summary.md, rows.jsonl), NETNS (0; 1, as root: the publisher and the viewers run in a network
# namespace of their own, joined to the servers by a veth pair, so their traffic crosses a
# network device and a second TCP/IP stack instead of loopback; the namespace is removed at exit),
# SPLIT (0; N, with NETNS=1: the servers on CPUs 0..N-1, the clients on the others, each
# side's receive work on its own CPUs, and a third CPU figure: the busy time of the servers'
# CPUs, see bench-lib.sh's `split_up`; give Corecast CORES=N and nginx NGINX_WORKERS=N).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh

DURATION=${DURATION:-15}
KBPS=${KBPS:-1000}
GOP_FRAMES=${GOP_FRAMES:-60}
PART_MS=${PART_MS:-200}
LAT_VIEWERS=${LAT_VIEWERS:-20}
PLAIN_VIEWERS=${PLAIN_VIEWERS:-1000}
FLV_VIEWERS=${FLV_VIEWERS:-500}
CORES=${CORES:-0}
RUNS=${RUNS:-"latency plain ll-vs-plain flv-vs-rtmp"}
READER=${READER:-0}
PROFILE=${PROFILE:-release}
CARGO=${CARGO:-cargo}
OUT=${OUT:-target/bench-hls}
mkdir -p "$OUT"

command -v python3 >/dev/null || { echo "bench-hls: needs python3" >&2; exit 1; }
for f in /usr/sbin/nginx /usr/lib/nginx/modules/ngx_rtmp_module.so; do
  [ -e "$f" ] || { echo "bench-hls: needs $f (apt-get install nginx libnginx-mod-rtmp)" >&2; exit 1; }
done
PACKAGES=(-p corecast-node -p corecast-loadtest)
if [ "$READER" = 1 ]; then PACKAGES+=(-p corecast-reader); fi
if [ "$PROFILE" = release ]; then
  "$CARGO" build --release "${PACKAGES[@]}"
  BIN=target/release
else
  "$CARGO" build "${PACKAGES[@]}"
  BIN=target/debug
fi
CORECAST=${CORECAST:-$BIN/corecast}
# 1000 viewers plus the servers' files: raise the open-file limit as far as allowed.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
trap netns_down EXIT
netns_up
split_up

start_corecast() { # rtmp-port http-port
  cat >"$OUT/corecast.toml" <<CONF
${PIN_CORES:+[node]
pin_cores = $PIN_CORES}
[http]
max_connections_per_core = 2048
${READ_BATCH_MS:+read_batch_ms = $READ_BATCH_MS}
${FAST_LANE:+fast_lane = $FAST_LANE}
[hls]
part_target_ms = $PART_MS
[log]
level = "warn"
$BENCH_LIMITS
CONF
  "${SERVER[@]}" "$CORECAST" --config "$OUT/corecast.toml" --rtmp-listen "$BENCH_HOST:$1" \
    --http-listen "$BENCH_HOST:$2" --cores "$CORES" >/dev/null 2>"$OUT/corecast.log" &
  echo $!
}

start_nginx() { # rtmp-port http-port
  local dir="$OUT/nginx"
  case $dir in /*) ;; *) dir="$PWD/$dir" ;; esac
  rm -rf "$dir"; mkdir -p "$dir/logs" "$dir/hls"
  # NGINX_WORKERS workers (1: one for RTMP and HTTP) serving the files from disk with
  # sendfile; HLS fragments of one GOP (what Corecast cuts too). With more than one, the
  # publisher lands on one worker, which writes the files, and every worker serves them.
  local fragment_ms=$((GOP_FRAMES * 1000 / 30))
  cat >"$dir/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process on;
worker_processes ${NGINX_WORKERS:-1};
worker_rlimit_nofile 20000;
error_log $dir/logs/error.log warn;
pid $dir/nginx.pid;
events { worker_connections 10000; }
rtmp {
  server {
    listen $BENCH_HOST:$1;
    application live {
      live on;
      hls on;
      hls_path $dir/hls;
      hls_fragment ${fragment_ms}ms;
      hls_playlist_length $((4 * fragment_ms))ms;
    }
  }
}
http {
  sendfile on;
  tcp_nopush on;
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
  server {
    listen $BENCH_HOST:$2;
    location /hls/ { root $dir; add_header Cache-Control no-cache; }
  }
}
CONF
  "${SERVER[@]}" /usr/sbin/nginx -c "$dir/nginx.conf" -p "$dir" >/dev/null 2>&1 &
  echo $!
}

# One harness run against a fresh server; appends a row to rows.jsonl.
# run_one LABEL SERVER(corecast|nginx) VIEWER N LITE(0|1) [URL-TEMPLATE]
run_one() {
  local label=$1 server=$2 viewer=$3 n=$4 lite=$5 template=${6:-}
  local rtmp http pid json="$OUT/$1.json" cpu0 cpu1 m0 m1 s0 s1 args
  rtmp=$(free_port); http=$(free_port)
  pid=$("start_$server" "$rtmp" "$http")
  trap 'kill '"$pid"' 2>/dev/null || true; netns_down' EXIT
  wait_port "$rtmp"; wait_port "$http"
  args=(e2e "rtmp://$BENCH_HOST:$rtmp/live/bench" -n "$n" --duration "$DURATION" --ramp 200
        --bitrate-kbps "$KBPS" --audio-kbps 64 --gop-frames "$GOP_FRAMES"
        --max-connections 5000 --connect-timeout 15 --viewer "$viewer" --allow-failed 100%)
  [ "$lite" = 1 ] && args+=(--lite)
  [ -n "$template" ] && args+=(--viewer-url "${template//PORT/$http}")
  [ "$viewer" != rtmp ] && [ -z "$template" ] && \
    args+=(--viewer-url "http://$BENCH_HOST:$http$(corecast_path "$viewer")")
  rm -f "$json"
  cpu0=$(cpu_of "$pid"); m0=$(machine_busy); s0=$(servers_busy)
  timeout $((DURATION + 60)) "${CLIENT[@]}" "$BIN/corecast-loadtest" "${args[@]}" --quiet --json "$json" \
    >/dev/null 2>"$OUT/$label.err" || true
  cpu1=$(cpu_of "$pid"); m1=$(machine_busy); s1=$(servers_busy)
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  trap netns_down EXIT
  row "$label" "$server" "$viewer" "$n" "$cpu0" "$cpu1" "$json" "harness" "$m0" "$m1" "$s0" "$s1"
}

corecast_path() {
  case $1 in
    hls) echo "/hls/{app}/{stream}/index.m3u8" ;;
    hls-plain) echo "/hls/{app}/{stream}/plain.m3u8" ;;
    flv) echo "/{app}/{stream}.flv" ;;
  esac
}

# bench/reader's epoll players against a fresh server, the harness publishing; the URL
# template's RTMP and HTTP are the server's ports (rtmp://..., http://....m3u8 or .flv: the
# URL chooses the reader's mode).
run_reader() { # label server(corecast|nginx) url-template n
  local label=$1 server=$2 template=$3 n=$4 rtmp http pid pub url json="$OUT/$1.json" cpu0 cpu1 m0 m1
  local s0 s1
  rtmp=$(free_port); http=$(free_port)
  pid=$("start_$server" "$rtmp" "$http")
  trap 'kill '"$pid"' 2>/dev/null || true; netns_down' EXIT
  wait_port "$rtmp"; wait_port "$http"
  "${CLIENT[@]}" "$BIN/corecast-loadtest" publish "rtmp://$BENCH_HOST:$rtmp/live/bench" --bitrate-kbps "$KBPS" \
    --audio-kbps 64 --gop-frames "$GOP_FRAMES" --duration $((DURATION + 70)) --cores 1 --quiet \
    >/dev/null 2>"$OUT/$label-publisher.err" &
  pub=$!
  # Wait until the stream's playlist lists a segment (Corecast's exists from the first key
  # frame, empty until the first segment is cut; nginx-rtmp's from its first fragment): FLV
  # viewers are not answered 404, and no HLS viewer spends the measured window retrying 404s
  # or waiting for a first segment, on either server.
  # (A run without one goes on: its viewers' failures show in its row.)
  if [ "$server" = corecast ]; then wait_segment "http://$BENCH_HOST:$http/hls/live/bench/plain.m3u8" || true
  else wait_segment "http://$BENCH_HOST:$http/hls/bench.m3u8" || true; fi
  url=${template//RTMP/$rtmp}; url=${url//HTTP/$http}
  cpu0=$(cpu_of "$pid"); m0=$(machine_busy); s0=$(servers_busy)
  timeout $((DURATION + 60)) "${CLIENT[@]}" "$BIN/corecast-reader" "$url" -n "$n" --duration-secs "$DURATION" \
    --ramp 200 --setup-timeout-secs 15 --json "$json" >/dev/null 2>"$OUT/$label.err" || true
  cpu1=$(cpu_of "$pid"); m1=$(machine_busy); s1=$(servers_busy)
  kill "$pub" "$pid" 2>/dev/null || true
  wait "$pub" "$pid" 2>/dev/null || true
  trap netns_down EXIT
  local viewer=rtmp
  case $url in *.m3u8) viewer=hls-plain ;; *.flv) viewer=flv ;; esac
  row "$label" "$server" "$viewer" "$n" "$cpu0" "$cpu1" "$json" "reader" "$m0" "$m1" "$s0" "$s1"
}

row() { # label server viewer n cpu0 cpu1 json reader machine0 machine1 server-cpu0 server-cpu1
  python3 - "$@" >>"$OUT/rows.jsonl" <<'PY'
import json, sys
label, server, viewer, n, cpu0, cpu1, path, reader, m0, m1, s0, s1 = sys.argv[1:]
row = {"run": label, "server": server, "viewer": viewer, "viewers": int(n), "reader": reader,
       "cpu_s": round(float(cpu1) - float(cpu0), 3),
       "machine_cpu_s": round(float(m1) - float(m0), 3)}
# SPLIT: the busy time of the servers' own CPUs (bench-lib.sh's `split_up`).
if s0 != "-":
    row["server_cpu_busy_s"] = round(float(s1) - float(s0), 3)
try:
    r = json.load(open(path))
except Exception as e:
    row["error"] = str(e)
    print(json.dumps(row)); sys.exit(0)
if reader == "reader":
    gb = r["bytes"] / 1e9
    http = r.get("http") or {}
    row.update({"connected": r["connected"], "with_frame": r["players"] - r["failed"],
                "failures": r["failures"], "mbps": r["mbps"],
                "ttff_p50_ms": r["ttff_ms"]["p50"], "ttff_p99_ms": r["ttff_ms"]["p99"],
                "rps_per_viewer": http.get("requests_per_player_per_sec"),
                "segments": http.get("segments"), "requests": http.get("requests")})
else:
    p = r["players"]
    gb = r["throughput"]["bytes_in"] / 1e9
    lat = r.get("latency") or {}
    ttff = p.get("first_keyframe_ms") or {}
    http = p.get("http") or {}
    row.update({
        "connected": p["connected"], "with_frame": p["with_keyframe"],
        "dropped": r["connections"]["dropped"],
        "ttff_p50_ms": ttff.get("p50"), "ttff_p99_ms": ttff.get("p99"),
        "latency_p50_ms": lat.get("p50_ms"), "latency_p99_ms": lat.get("p99_ms"),
        "latency_samples": lat.get("samples"),
        "stalls": http.get("stalls"), "viewers_with_stalls": http.get("viewers_with_stalls"),
        "rps_per_viewer": http.get("requests_per_viewer_per_sec"),
        "mbps": r["throughput"]["aggregate_mbps"],
        "harness_cpu_s": r["harness"]["cpu_secs"],
    })
row["gb"] = round(gb, 4)
row["mb_per_viewer"] = round(gb * 1e3 / row["with_frame"], 3) if row["with_frame"] else None
row["cpu_s_per_gb"] = round(row["cpu_s"] / gb, 3) if gb > 0 else None
row["machine_cpu_s_per_gb"] = round(row["machine_cpu_s"] / gb, 3) if gb > 0 else None
if "server_cpu_busy_s" in row:
    row["server_cpu_busy_s_per_gb"] = round(row["server_cpu_busy_s"] / gb, 3) if gb > 0 else None
print(json.dumps(row))
PY
  tail -n 1 "$OUT/rows.jsonl"
}

NGINX_HLS="http://$BENCH_HOST:PORT/hls/{stream}.m3u8"
: >"$OUT/rows.jsonl"
for run in $RUNS; do
  case $run in
    latency)
      run_one latency-corecast-ll corecast hls "$LAT_VIEWERS" 0
      run_one latency-nginx-hls nginx hls-plain "$LAT_VIEWERS" 0 "$NGINX_HLS"
      run_one latency-corecast-plain corecast hls-plain "$LAT_VIEWERS" 0 ;;
    plain)
      run_one plain-corecast corecast hls-plain "$PLAIN_VIEWERS" 1
      run_one plain-nginx nginx hls-plain "$PLAIN_VIEWERS" 1 "$NGINX_HLS"
      if [ "$READER" = 1 ]; then
        run_reader plain-corecast-reader corecast "http://$BENCH_HOST:HTTP/hls/live/bench/plain.m3u8" "$PLAIN_VIEWERS"
        run_reader plain-nginx-reader nginx "http://$BENCH_HOST:HTTP/hls/bench.m3u8" "$PLAIN_VIEWERS"
      fi ;;
    ll-vs-plain)
      run_one ll-corecast corecast hls "$PLAIN_VIEWERS" 1 ;;
    flv-vs-rtmp)
      run_one flv-corecast corecast flv "$FLV_VIEWERS" 1
      run_one rtmp-corecast corecast rtmp "$FLV_VIEWERS" 1
      if [ "$READER" = 1 ]; then
        run_reader flv-corecast-reader corecast "http://$BENCH_HOST:HTTP/live/bench.flv" "$FLV_VIEWERS"
        run_reader rtmp-corecast-reader corecast "rtmp://$BENCH_HOST:RTMP/live/bench" "$FLV_VIEWERS"
      fi ;;
    *) echo "bench-hls: unknown run $run (RUNS: latency plain ll-vs-plain flv-vs-rtmp)" >&2; exit 1 ;;
  esac
done

python3 - "$OUT/rows.jsonl" "$DURATION" "$KBPS" "$PART_MS" "$GOP_FRAMES" "$CORES" \
  "${NGINX_WORKERS:-1}" "${NETNS:-0}" "${SPLIT:-0}" >"$OUT/summary.md" <<'PY'
import json, sys
rows = {r["run"]: r for r in (json.loads(l) for l in open(sys.argv[1]) if l.strip())}
duration, kbps, part, gop, cores, workers, netns, split = sys.argv[2:]
def f(v, d=1):
    return "-" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))
print(f"{duration} s per run, stream {kbps} kbit/s, key frame every {gop} frames at 30 fps, "
      f"LL-HLS parts {part} ms. Harness viewers, and bench/reader's epoll players where the "
      f"viewer says (reader); CPU = the server's utime+stime. MB per viewer: bytes counted over "
      f"the viewers that got a frame (harness: every body; reader: see bench/reader). Corecast "
      f"cores: {'all CPUs' if cores == '0' else cores}; nginx workers: {workers}; clients "
      f"{'in a network namespace, over a veth pair' if netns == '1' else 'on loopback'}"
      f"{f'; the servers on CPUs 0..{int(split) - 1}, the clients and their receive work on the others' if split != '0' else ''}.\n")
print("| run | server | viewer | viewers | connected | got a frame | TTFF p50/p99 ms | latency p50/p99 ms (samples) | stalls (viewers) | req/s per viewer | MB per viewer | Mbit/s | server CPU-s | CPU-s/GB |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows.values():
    if "error" in r:
        print(f"| {r['run']} | {r['server']} | {r['viewer']} | {r['viewers']} | error: {r['error']} ||||||||||"); continue
    print(f"| {r['run']} | {r['server']} | {r['viewer']}{' (reader)' if r['reader'] == 'reader' else ''} | {r['viewers']} | {r['connected']} | {r['with_frame']} "
          f"| {f(r.get('ttff_p50_ms'))}/{f(r.get('ttff_p99_ms'))} | {f(r.get('latency_p50_ms'))}/{f(r.get('latency_p99_ms'))} ({f(r.get('latency_samples'))}) "
          f"| {f(r.get('stalls'))} ({f(r.get('viewers_with_stalls'))}) | {f(r.get('rps_per_viewer'), 2)} | {f(r.get('mb_per_viewer'), 2)} | {f(r.get('mbps'), 0)} | {f(r['cpu_s'], 2)} | {f(r['cpu_s_per_gb'], 2)} |")
def ratio(a, b, key="cpu_s_per_gb"):
    x, y = rows.get(a, {}).get(key), rows.get(b, {}).get(key)
    return "-" if not x or not y else f"{x / y:.2f}"
print()
print("| ratio of CPU-s per GB | value | target |")
print("|---|---|---|")
print(f"| Corecast plain HLS ÷ nginx (sendfile) serving nginx-rtmp's HLS (harness) | {ratio('plain-corecast', 'plain-nginx')} | ≤ 1.0 |")
if "plain-corecast-reader" in rows:
    print(f"| Corecast plain HLS ÷ nginx (sendfile) serving nginx-rtmp's HLS (bench/reader) | {ratio('plain-corecast-reader', 'plain-nginx-reader')} | ≤ 1.0 |")
m = "machine_cpu_s_per_gb"
print(f"| the same, the whole machine's CPU (clients included) (harness) | {ratio('plain-corecast', 'plain-nginx', m)} | - |")
if "plain-corecast-reader" in rows:
    print(f"| the same, the whole machine's CPU (clients included) (bench/reader) | {ratio('plain-corecast-reader', 'plain-nginx-reader', m)} | - |")
if split != "0":
    s = "server_cpu_busy_s_per_gb"
    print(f"| the same, the servers' CPUs' busy time (harness) | {ratio('plain-corecast', 'plain-nginx', s)} | - |")
    if "plain-corecast-reader" in rows:
        print(f"| the same, the servers' CPUs' busy time (bench/reader) | {ratio('plain-corecast-reader', 'plain-nginx-reader', s)} | - |")
print(f"| Corecast LL-HLS ÷ Corecast plain HLS | {ratio('ll-corecast', 'plain-corecast')} | - |")
print(f"| Corecast HTTP-FLV ÷ Corecast RTMP (harness) | {ratio('flv-corecast', 'rtmp-corecast')} | ≤ 1.1 |")
if "rtmp-corecast-reader" in rows:
    print(f"| Corecast HTTP-FLV ÷ Corecast RTMP (bench/reader) | {ratio('flv-corecast-reader', 'rtmp-corecast-reader')} | ≤ 1.1 |")
PY
cat "$OUT/summary.md"
echo "bench-hls: $OUT/summary.md, raw rows in $OUT/rows.jsonl"
