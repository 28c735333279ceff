# Helpers shared by the benchmark scripts (sourced, not run). Everything stays on loopback, or
# with NETNS=1 (scripts that call `netns_up`) on a veth pair into a network namespace the script
# makes and removes itself.

# A loopback port nobody listens on right now, taken from the kernel.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The address the servers listen on and the clients connect to, and the command prefix that
# runs a client: loopback and nothing, until `netns_up` moves the clients to their own host.
BENCH_HOST=127.0.0.1
CLIENT=()
BENCH_NETNS=
BENCH_VETH=()
# The command prefix that starts a server, and the CPUs the servers run on (0-K, for taskset and
# perf): nothing and none, until `split_up` gives the servers CPUs of their own.
SERVER=()
SERVER_CPUS=

# With NETNS=1: the clients (publishers and viewers) get a network host of their own, a
# namespace joined to this one by a veth pair (the servers listen on this side's address), so
# that what they send and receive crosses a network device and its own TCP/IP stack rather than
# loopback. No-op otherwise. Needs root and `ip`; `netns_down` (safe to call twice) removes it.
netns_up() {
  [ "${NETNS:-0}" = 1 ] || return 0
  command -v ip >/dev/null || { echo "$(basename "$0"): NETNS=1 needs ip (iproute2)" >&2; exit 1; }
  local ns="ccbench$$" host="ccb$$" peer="ccb$$p" net="10.213.$(($$ % 250 + 1))"
  ip netns add "$ns" || { echo "$(basename "$0"): NETNS=1 needs root" >&2; exit 1; }
  BENCH_NETNS=$ns
  ip link add "$host" type veth peer name "$peer" netns "$ns"
  ip addr add "$net.1/30" dev "$host" && ip link set "$host" up
  ip -n "$ns" addr add "$net.2/30" dev "$peer"
  ip -n "$ns" link set "$peer" up && ip -n "$ns" link set lo up
  BENCH_HOST=$net.1
  BENCH_VETH=("$host" "$peer")
  CLIENT=(ip netns exec "$ns")
}

# With SPLIT=N (needs NETNS=1 and more than N CPUs): the servers run on CPUs 0..N-1 and
# everything else (the clients, and this script with its helpers) on the other CPUs, and each end
# of the veth pair has its receive work done on its own side's CPUs (RPS: the servers' end on
# theirs, the clients' end on the others). So the servers' CPUs do what a server's machine does
# for remote viewers: its own sending, the ACKs and requests it receives, and none of its
# viewers' receiving, which loopback and an unsteered veth pair bill to whichever process sent.
# `servers_busy` reads those CPUs' busy time, everything the kernel did there included. Give
# the servers as many cores and workers as CPUs (CORES=N, NGINX_WORKERS=N). No-op otherwise.
split_up() {
  local n=${SPLIT:-0} me; me=$(basename "$0")
  [ "$n" = 0 ] && return 0
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "$me: SPLIT must be a number of CPUs" >&2; exit 1; }
  [ -n "$BENCH_NETNS" ] || { echo "$me: SPLIT needs NETNS=1" >&2; exit 1; }
  local cpus; cpus=$(nproc)
  [ "$cpus" -gt "$n" ] || { echo "$me: SPLIT=$n needs more than $n CPUs ($cpus here)" >&2; exit 1; }
  local servers="0-$((n - 1))" clients="$n-$((cpus - 1))"
  printf %x $(((1 << n) - 1)) >"/sys/class/net/${BENCH_VETH[0]}/queues/rx-0/rps_cpus"
  ip netns exec "$BENCH_NETNS" sh -c "printf %x $(((1 << cpus) - (1 << n))) \
    > /sys/class/net/${BENCH_VETH[1]}/queues/rx-0/rps_cpus"
  taskset -pc "$clients" $$ >/dev/null
  SERVER=(taskset -c "$servers")
  SERVER_CPUS=$servers
  CLIENT=(taskset -c "$clients" "${CLIENT[@]}")
}

netns_down() {
  # Deleting the namespace deletes its end of the veth pair, and with it this end.
  [ -n "$BENCH_NETNS" ] && ip netns del "$BENCH_NETNS" 2>/dev/null
  BENCH_NETNS=
  return 0
}

# Waits up to 10 s for something to accept connections on $BENCH_HOST:$1.
wait_port() {
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/$BENCH_HOST/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$(basename "$0"): nothing listens on $1" >&2
  return 1
}

# A process and its children (nginx's workers).
pids_of() { echo "$1 $(pgrep -P "$1" | tr '\n' ' ')"; }

# Sum of utime+stime (seconds) over a process and its children.
cpu_of() {
  local total=0 tck p; tck=$(getconf CLK_TCK)
  for p in $(pids_of "$1"); do
    [ -r "/proc/$p/stat" ] || continue
    # Fields after the ")" of the command name: utime and stime are the 12th and 13th.
    total=$(sed 's/.*) //' "/proc/$p/stat" | awk -v t="$total" '{print t + $12 + $13}')
  done
  python3 -c "print($total / $tck)"
}

# Busy CPU time (seconds) of the whole machine so far: every process and the kernel's interrupt
# work (user, nice, system, irq and softirq from /proc/stat; not idle, iowait or steal). Over a
# run it counts the clients too, and what the kernel did for a socket whichever process it
# billed that to (on loopback the sender pays for much of its receiver's TCP work).
machine_busy() {
  awk -v tck="$(getconf CLK_TCK)" '/^cpu / {printf "%.3f\n", ($2 + $3 + $4 + $7 + $8) / tck; exit}' /proc/stat
}

# Busy time (seconds) so far of the servers' CPUs (`split_up`): time since boot less each
# CPU's idle, iowait (glommio sleeping in io_uring_enter counts as iowait) and steal time. Unlike
# /proc/stat's busy fields, which this kernel samples at its tick, this counts the interrupt work
# done while a CPU was otherwise idle (idle time is measured, not sampled, on a tickless
# kernel). "-" when the servers have no CPUs of their own.
servers_busy() {
  [ -n "$SERVER_CPUS" ] || { echo -; return 0; }
  awk -v last="${SERVER_CPUS#0-}" -v tck="$(getconf CLK_TCK)" '
    NR == 1 {up = $1; next}
    /^cpu[0-9]/ && substr($1, 4) + 0 <= last + 0 {busy += up - ($5 + $6 + $9) / tck}
    END {printf "%.3f\n", busy}' /proc/uptime /proc/stat
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
