#!/usr/bin/env python3
"""What one RTMP connection holds on the node that its buffers do not account for.

Sets `CONNECTION_BASE_BYTES` (node/src/budget.rs). Usage:

    scripts/measure-connection-base.py BIN [N] [MODE]

BIN is a directory with a release `corecast` (and `corecast-loadtest` for MODE=players).
A fresh node on one core, its /metrics on loopback, is warmed up (one handshake; for MODE=players
the publisher and one player); then N connections join: MODE=handshaken (default) does the plain handshake and goes quiet (the
attack tests' connections stuck before `connect`, without their half messages); MODE=players
has `corecast-loadtest play --lite` play a 1 Mbit/s synthetic stream. Once they settle, the
node's RSS (median of three reads) and `corecast_memory_accounted_bytes` are read. The node
accounts each connection at CONNECTION_BASE_BYTES plus its buffers, so

    buffers = accounted / N - BASE   (BASE: the measured binary's CONNECTION_BASE_BYTES,
                                      from the environment; 32768, main's before 8 KiB)
    base    = RSS growth / N - buffers

is what a connection holds beyond what it reports: its task, session and queue state, and the
allocator's share. Everything binds 127.0.0.1 and every wait is bounded.
"""
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"^VmRSS:\s+(\d+)", f.read(), re.M).group(1))


def accounted(http):
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(m.group(1)) for m in
               re.finditer(r"^corecast_memory_accounted_bytes(?:\{[^}]*\})? (\S+)$", text, re.M))


def wait_port(port, limit=10):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def handshaken(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    c1 = bytes(8) + os.urandom(1528)
    s.sendall(b"\x03" + c1)
    got = b""
    while len(got) < 1 + 2 * 1536:
        chunk = s.recv(8192)
        if not chunk:
            raise RuntimeError("closed during the handshake")
        got += chunk
    s.sendall(got[1:1537])  # C2 echoes S1
    return s


def settled(pid, http, limit=30):
    """RSS (median of three, a second apart) and accounted bytes once accounted is steady."""
    deadline = time.time() + limit
    last = -1.0
    while time.time() < deadline:
        now = accounted(http)
        if now == last:
            break
        last = now
        time.sleep(1)
    reads = []
    for _ in range(3):
        reads.append(rss_kib(pid))
        time.sleep(1)
    return statistics.median(reads), accounted(http)


def main():
    bin_dir = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    mode = sys.argv[3] if len(sys.argv) > 3 else "handshaken"
    base = int(os.environ.get("BASE", 32 * 1024))
    rtmp, http = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "corecast.toml")
        with open(cfg, "w") as f:
            f.write("[node]\nmemory_budget_bytes = 4294967296\n"
                    "[rtmp]\nhandshake_timeout_secs = 300\n"
                    "[limits]\nmax_connections_per_address = 100000\n"
                    "new_connections_burst_per_address = 100000\n"
                    "[log]\nlevel = \"warn\"\n")
        node = subprocess.Popen(
            [f"{bin_dir}/corecast", "--config", cfg, "--rtmp-listen", f"127.0.0.1:{rtmp}",
             "--http-listen", f"127.0.0.1:{http}", "--cores", "1"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "node.err"), "w"))
        others = []
        try:
            wait_port(rtmp)
            wait_port(http)
            url = f"rtmp://127.0.0.1:{rtmp}/live/base"
            if mode == "players":
                others.append(subprocess.Popen(
                    [f"{bin_dir}/corecast-loadtest", "publish", url, "--bitrate-kbps", "1000",
                     "--audio-kbps", "64", "--duration", "120", "--cores", "1", "--quiet"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                time.sleep(3)
                warm = subprocess.run(
                    [f"{bin_dir}/corecast-loadtest", "play", url, "-n", "1", "--lite",
                     "--duration", "2", "--quiet"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
                del warm
            else:
                handshaken(rtmp).close()
            time.sleep(2)
            rss0, acc0 = settled(node.pid, http)
            held = []
            if mode == "players":
                others.append(subprocess.Popen(
                    [f"{bin_dir}/corecast-loadtest", "play", url, "-n", str(n), "--lite",
                     "--duration", "60", "--ramp", "500", "--quiet"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                time.sleep(n / 500 + 5)
            else:
                held = [handshaken(rtmp) for _ in range(n)]
            rss1, acc1 = settled(node.pid, http)
            grown = (rss1 - rss0) * 1024 / n
            acc = (acc1 - acc0) / n
            buffers = acc - base
            print(f"mode={mode} n={n} rss0={rss0:.0f}KiB rss1={rss1:.0f}KiB "
                  f"accounted0={acc0:.0f} accounted1={acc1:.0f}")
            print(f"per connection: RSS +{grown:.0f} B, accounted {acc:.0f} B "
                  f"(buffers {buffers:.0f} B), held beyond buffers {grown - buffers:.0f} B")
            del held
        finally:
            for p in others:
                p.terminate()
            node.terminate()
            node.wait(timeout=10)


if __name__ == "__main__":
    main()
