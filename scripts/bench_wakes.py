#!/usr/bin/env python3
"""Each core's reactor sleeps per window, and what ended each (scripts/bench-wakes.sh).

Reads `strace -ttt -T -f` of a node (io_uring_enter, read, write, membarrier, recvfrom). A
sleep is glommio's `io_uring_enter(fd, 0, 1, IORING_ENTER_GETEVENTS)`; what the core did
until its next sleep says what woke it: the publisher's paced read (`recvfrom` on the
lowest-numbered socket read at every tick) is the tick; an `io_uring_enter` of 64 or more
SQEs with no publisher read is the tick pass of another core's batch; `recvfrom` on other
sockets is players' input; nothing but glommio's own calls is "nothing visible".
Usage: bench_wakes.py STRACE WINDOW_MS [-v]
"""
import collections
import re
import sys

SLEEP = re.compile(r"io_uring_enter\(\d+, 0, 1, IORING_ENTER_GETEVENTS")
ENTER = re.compile(r"io_uring_enter\(\d+, (\d+)")
FD_CALL = re.compile(r"(recvfrom|write|read)\((\d+)")


def calls_by_thread(path):
    """Each thread's syscalls: (start, duration, text), an interrupted call joined up."""
    threads, pending = collections.defaultdict(list), {}
    for line in open(path, encoding="utf-8", errors="replace"):
        m = re.match(r"(\d+)\s+(\d+\.\d+) (.*)", line.rstrip())
        if not m:
            continue
        tid, ts, rest = m.group(1), float(m.group(2)), m.group(3)
        if rest.endswith("<unfinished ...>"):
            pending[tid] = (ts, rest[: -len("<unfinished ...>")])
            continue
        if rest.startswith("<... "):
            if tid not in pending:
                continue
            ts, head = pending.pop(tid)
            rest = head + " " + rest
        d = re.search(r"<(\d+\.\d+)>$", rest)
        threads[tid].append((ts, float(d.group(1)) if d else 0.0, rest))
    return threads


def publisher_fd(calls):
    """The socket read at most wake-ups: the publisher's (read at every tick)."""
    reads = collections.Counter()
    for _, _, text in calls:
        m = FD_CALL.match(text)
        if m and m.group(1) == "recvfrom":
            reads[m.group(2)] += 1
    return reads.most_common(1)[0][0] if reads and reads.most_common(1)[0][1] > 5 else None


def classify(between, publisher):
    fds = set()
    big_enter = False
    for _, _, text in between:
        m = FD_CALL.match(text)
        if m:
            fds.add((m.group(1), m.group(2)))
        m = ENTER.match(text)
        if m and int(m.group(1)) >= 64:
            big_enter = True
    pub = publisher is not None and ("recvfrom", publisher) in fds
    players = any(c == "recvfrom" and fd != publisher for c, fd in fds)
    if pub:
        kind = "tick (publisher read + pass)"
    elif big_enter:
        kind = "other core's batch (pass)"
    elif players:
        kind = "players' input only"
    else:
        kind = "nothing visible"
    if players and kind != "players' input only":
        kind += " + players' input"
    return kind


def main():
    path, window = sys.argv[1], float(sys.argv[2]) / 1000
    verbose = "-v" in sys.argv[3:]
    publisher = None
    threads = calls_by_thread(path)
    for calls in threads.values():
        publisher = publisher or publisher_fd(calls)
    for tid, calls in sorted(threads.items()):
        sleeps = [i for i, (_, _, text) in enumerate(calls) if SLEEP.match(text)]
        if len(sleeps) < 3:
            continue
        span = calls[-1][0] - calls[0][0]
        windows = span / window
        kinds, enters = collections.Counter(), collections.Counter()
        for a, b in zip(sleeps, sleeps[1:]):
            between = calls[a + 1 : b + 1]
            kind = classify(between, publisher)
            kinds[kind] += 1
            enters[kind] += sum(1 for _, _, t in between if t.startswith("io_uring_enter"))
            if verbose:
                ts, dur, _ = calls[a]
                print(f"  {tid} woke after {dur * 1000:7.1f} ms: {kind}")
        total_enters = sum(1 for _, _, t in calls if t.startswith("io_uring_enter"))
        barriers = sum(1 for _, _, t in calls if t.startswith("membarrier"))
        print(
            f"thread {tid}: {len(sleeps) / windows:.2f} sleeps/window, "
            f"{total_enters / windows:.1f} io_uring_enter/window, {barriers / windows:.2f} membarrier/window"
        )
        for kind, n in kinds.most_common():
            print(f"  {n / windows:5.2f}/window  {enters[kind] / n:4.1f} io_uring_enter each  {kind}")


if __name__ == "__main__":
    main()
