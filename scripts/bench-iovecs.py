#!/usr/bin/env python3
"""What an iovec costs the kernel's TCP send path over loopback (issue 19 item 2, next round).

Corecast's writer hands `sendmsg` about 25 slices per player per merge window (chunk headers
and payload parts); the floor hands it one contiguous buffer. This sends the same window of
W bytes N times as 1 slice and as K slices, from this process to a forked reader that
only drains, interleaved per round, and prints the sender's system CPU for each and the
ratio. Never asserted: a figure for BENCHMARKS.md. Binds 127.0.0.1 only; bounded by N.

Usage: scripts/bench-iovecs.py [W bytes=12500] [K slices=25] [N windows=200000] [ROUNDS=3]
"""
import os
import resource
import socket
import sys


def run(window: int, slices: int, count: int) -> float:
    """Sender system CPU-seconds for `count` windows of `window` bytes in `slices` slices."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    pid = os.fork()
    if pid == 0:
        reader = socket.create_connection(srv.getsockname(), timeout=60)
        buf = bytearray(1 << 20)
        while reader.recv_into(buf):
            pass
        os._exit(0)
    conn, _ = srv.accept()
    conn.settimeout(60)
    payload = memoryview(os.urandom(window))
    step = window // slices
    parts = [payload[i * step:(i + 1) * step if i < slices - 1 else window] for i in range(slices)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_stime
    for _ in range(count):
        sent = conn.sendmsg(parts)
        while sent < window:  # a partial write: the rest in one piece, as the writer would
            sent += conn.send(payload[sent:])
    spent = resource.getrusage(resource.RUSAGE_SELF).ru_stime - before
    conn.close()
    srv.close()
    os.waitpid(pid, 0)
    return spent


def main() -> None:
    args = [int(a) for a in sys.argv[1:]]
    window, slices, count, rounds = (args + [12500, 25, 200000, 3][len(args):])[:4]
    print(f"window {window} B, {count} windows a run, sender system CPU-s")
    print(f"| round | 1 slice | {slices} slices | ratio |\n|---|---|---|---|")
    for r in range(1, rounds + 1):
        one = run(window, 1, count)
        many = run(window, slices, count)
        print(f"| {r} | {one:.3f} | {many:.3f} | {many / one:.2f} |")


if __name__ == "__main__":
    main()
