# Helpers shared by the benchmark scripts (sourced, not run). Everything stays on loopback.

# A loopback port nobody listens on right now, taken from the kernel.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits up to 10 s for something to accept connections on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$(basename "$0"): nothing listens on $1" >&2
  return 1
}

# A process and its children (nginx's workers).
pids_of() { echo "$1 $(pgrep -P "$1" | tr '\n' ' ')"; }

# Sum of utime+stime (seconds) over a process and its children.
cpu_of() {
  local total=0 tck; tck=$(getconf CLK_TCK)
  for p in $(pids_of "$1"); do
    [ -r "/proc/$p/stat" ] || continue
    total=$(awk -v t="$total" '{print t + $14 + $15}' "/proc/$p/stat")
  done
  python3 -c "print($total / $tck)"
}

# Waits up to 15 s for the HLS playlist at $1 to list a segment; fails (with a line) if not.
wait_segment() {
  python3 - "$1" <<'PY' && return 0
import sys, time, urllib.request
for _ in range(150):
    try:
        if b"#EXTINF" in urllib.request.urlopen(sys.argv[1], timeout=1).read(): sys.exit(0)
    except Exception: pass
    time.sleep(0.1)
sys.exit(1)
PY
  echo "$(basename "$0"): no segment at $1 in 15 s" >&2
  return 1
}

# Sum of RSS (KiB) over a process and its children.
rss_of() {
  local total=0
  for p in $(pids_of "$1"); do
    [ -r "/proc/$p/status" ] || continue
    total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status")))
  done
  echo "$total"
}

# nginx-rtmp with $2 workers (rtmp_auto_push with more than one) on 127.0.0.1:$1, its files
# under $OUT/nginx-$2; prints the master's pid.
start_nginx() { # port workers
  local port=$1 workers=$2 dir="$OUT/nginx-$2"
  mkdir -p "$dir/logs"
  local push=""
  [ "$workers" -gt 1 ] && push="rtmp_auto_push on;"
  cat >"$dir/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process on;
worker_processes $workers;
worker_rlimit_nofile 20000;
error_log $PWD/$dir/logs/error.log warn;
pid $PWD/$dir/nginx.pid;
events { worker_connections 10000; }
$push
rtmp {
  server {
    listen 127.0.0.1:$port;
    application live { live on; }
  }
}
CONF
  /usr/sbin/nginx -c "$PWD/$dir/nginx.conf" -p "$PWD/$dir" >/dev/null 2>&1 &
  echo $!
}

# Makes the run's temporary folder `$work` and the list `$pids` of what the script starts in
# the background; at exit every one of them is killed and the folder removed.
bench_workspace() {
  work=$(mktemp -d)
  pids=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

# Corecast's `[limits]` for a benchmark: off. Every benchmark player connects from 127.0.0.1,
# and the per-address limits are per core (`max_connections_per_address` 1000): SO_REUSEPORT
# splits 2,000 players over 2 cores unevenly (1,000 +- ~22), so the core that drew more than
# 1,000 refused the rest (reason `address_connections`, seen by the players as resets during
# the ramp). Real viewers come from many addresses, and the floor has no such limit.
BENCH_LIMITS='[limits]
max_connections_per_address = 0
new_connections_per_second_per_address = 0
'
