#!/usr/bin/env python3
"""Drives issue 13's attacks against a running node on loopback and prints a Markdown table:
per attack, the node's RSS growth (total and per connection) and the time for a publish and a
play to start, during the attack and with the node idle.

Used by scripts/bench-attacks.sh (which starts and stops the node); stdlib only. The RTMP
written here is the least the attacks need (handshake, raw chunks, a few AMF0 commands): the
node's own tests use corecast-common's encoders; this is a measuring tool, not a client.

Usage: bench_attacks.py ROW HOST PORT NODE_PID [CONNECTIONS]   (ROW: header, 1, 2, 3, 4, 10, many)
"""

import socket
import struct
import subprocess
import sys
import threading
import time

ROW = sys.argv[1]
HOST, PORT, PID = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
MANY = int(sys.argv[5]) if len(sys.argv) > 5 else 1000
DEADLINE = 10.0  # seconds any one socket operation may take


def rss_kib():
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# --- AMF0 and chunks: just what the commands below need --------------------------------------


def amf_str(s):
    b = s.encode()
    if len(b) > 0xFFFF:
        return b"\x0c" + struct.pack(">I", len(b)) + b  # long string
    return b"\x02" + struct.pack(">H", len(b)) + b


def amf_num(n):
    return b"\x00" + struct.pack(">d", n)


def amf_obj(pairs):
    out = b"\x03"
    for k, v in pairs:
        kb = k.encode()
        out += struct.pack(">H", len(kb)) + kb + v
    return out + b"\x00\x00\x09"


AMF_NULL = b"\x05"


def message(csid, type_id, stream_id, payload, chunk_size=128, timestamp=0):
    """One message as a type-0 chunk and type-3 continuations."""
    head = bytes([csid]) + struct.pack(">I", timestamp)[1:] + struct.pack(">I", len(payload))[1:]
    head += bytes([type_id]) + struct.pack("<I", stream_id)
    out = head + payload[:chunk_size]
    for i in range(chunk_size, len(payload), chunk_size):
        out += bytes([0xC0 | csid]) + payload[i:i + chunk_size]
    return out


def command(name, tx, *args, stream_id=0):
    payload = amf_str(name) + amf_num(tx) + b"".join(args)
    return message(3, 20, stream_id, payload)


def set_chunk_size(size):
    return message(2, 1, 0, struct.pack(">I", size))


def connect_cmd(app):
    tc_url = f"rtmp://{HOST}:{PORT}/{app}"
    return command("connect", 1, amf_obj([("app", amf_str(app)), ("tcUrl", amf_str(tc_url))]))


# --- connections ------------------------------------------------------------------------------


def handshaken():
    s = socket.create_connection((HOST, PORT), timeout=DEADLINE)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(b"\x03" + bytes(1536))
    got = b""
    while len(got) < 3073:
        chunk = s.recv(3073 - len(got))
        if not chunk:
            raise ConnectionError("closed during the handshake")
        got += chunk
    s.sendall(got[1:1537])  # C2 echoes S1
    return s


def wait_for(s, needle, limit=DEADLINE):
    """Reads until `needle` shows in what the node sent."""
    end = time.monotonic() + limit
    seen = b""
    while needle not in seen:
        s.settimeout(max(0.01, end - time.monotonic()))
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before {needle!r}")
        seen = seen[-4096:] + chunk
    return seen


def connected(app="live"):
    s = handshaken()
    s.sendall(connect_cmd(app))
    wait_for(s, b"NetConnection.Connect.Success")
    return s


def publish_and_play(name):
    """Seconds from the first byte of a publisher's connection to its Publish.Start, plus a
    player's connection to its Play.Start; both connections are closed after."""
    start = time.monotonic()
    pub = connected()
    pub.sendall(command("createStream", 2, AMF_NULL))
    wait_for(pub, b"_result")
    pub.sendall(command("publish", 3, AMF_NULL, amf_str(name), amf_str("live"), stream_id=1))
    wait_for(pub, b"NetStream.Publish.Start")
    play = connected()
    play.sendall(command("createStream", 2, AMF_NULL))
    wait_for(play, b"_result")
    play.sendall(command("play", 3, AMF_NULL, amf_str(name), stream_id=1))
    wait_for(play, b"NetStream.Play.Start")
    took = time.monotonic() - start
    pub.close()
    play.close()
    return took


def start_time(tag):
    """The median of 5 publish+play starts, in ms."""
    times = sorted(publish_and_play(f"{tag}-{i}-{time.monotonic_ns()}") for i in range(5))
    return times[2] * 1000


# --- the attacks: each returns (connections, sockets to keep until measured) ------------------


def row1_unread_replies():
    """After connect, pipelined unknown commands whose replies are never read, for 5 s."""
    s = connected()
    batch = b"".join(command("noSuchCommand", 2 + i, AMF_NULL) for i in range(2000))
    s.settimeout(0.5)
    end = time.monotonic() + 5
    while time.monotonic() < end:
        try:
            s.sendall(batch)
        except OSError:
            break
    return 1, [s]


def row2_half_messages():
    """50 connections: chunk size 1 MiB, then 7/8 of an 8 MiB message on chunk streams 3..63."""
    data = set_chunk_size(1 << 20)
    for csid in range(3, 64):
        head = bytes([csid, 0, 0, 0]) + struct.pack(">I", 8 << 20)[1:] + b"\x09\x01\x00\x00\x00"
        data += head + bytes(7 << 17)
    keep = []
    for _ in range(50):
        s = handshaken()
        keep.append(s)
        try:
            s.settimeout(2)
            s.sendall(data)
        except OSError:
            pass  # refused part way: what the node should do
    return 50, keep


def row3_long_app():
    """20 connections with a 4 MiB app in connect."""
    connect = connect_cmd("a" * (4 << 20))
    keep = []
    for _ in range(20):
        s = handshaken()
        keep.append(s)
        try:
            s.settimeout(2)
            s.sendall(connect)
        except OSError:
            pass
    return 20, keep


def row4_trickle(n):
    """n connections: the handshake, then one byte, never connect."""
    keep = []
    for _ in range(n):
        s = handshaken()
        s.sendall(b"\x03")
        keep.append(s)
    return n, keep


def worst_before_connect(n):
    """n connections: the handshake, a chunk size of 59 KiB and two 60 KiB messages whose last
    KiB never comes (just under the 128 KiB pre-publish partial budget)."""
    keep = []
    for _ in range(n):
        try:
            s = handshaken()
            data = set_chunk_size(59 << 10)
            for csid in (3, 4):
                head = bytes([csid, 0, 0, 0]) + struct.pack(">I", 60 << 10)[1:] + b"\x09\x01\x00\x00\x00"
                data += head + bytes(59 << 10)
            s.sendall(data)
            keep.append(s)
        except OSError:
            break  # refused: the core is at its memory budget
    return len(keep), keep


def row10_tiny_frames():
    """20 publishers: an 80 KiB keyframe in one chunk, then a 6-byte frame every 100 ms for 4 s."""
    pubs = []
    for i in range(20):
        s = connected()
        s.sendall(command("createStream", 2, AMF_NULL))
        wait_for(s, b"_result")
        s.sendall(command("publish", 3, AMF_NULL, amf_str(f"tiny{i}"), amf_str("live"), stream_id=1))
        wait_for(s, b"NetStream.Publish.Start")
        s.sendall(set_chunk_size(128 << 10))
        s.sendall(message(6, 9, 1, b"\x17\x01" + bytes((80 << 10) - 2), chunk_size=128 << 10))
        pubs.append(s)
    for tick in range(1, 41):
        for s in pubs:
            s.sendall(message(6, 9, 1, b"\x27\x01\x00\x00\x00\x07", timestamp=tick * 100))
        time.sleep(0.1)
    return 20, pubs


def timed_apart(tag):
    """start_time() in a process of its own, so the attacking threads here (and Python's
    interpreter lock) do not slow the timing client down."""
    out = subprocess.check_output(
        [sys.executable, __file__, "time:" + tag, HOST, str(PORT), str(PID)], timeout=120)
    return float(out)


def measure(name, attack):
    """Runs `attack` in a thread; meanwhile samples the node's RSS and, 2 s in, times a
    publish+play. Prints one table row: peak and held RSS growth, per connection, the start
    time during the attack and with the node idle just before."""
    idle = timed_apart("idle")
    before = rss_kib()
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    result = {}
    attacker = threading.Thread(target=lambda: result.update(r=attack()))
    attacker.start()
    time.sleep(2.0)
    during = timed_apart("during")
    attacker.join()
    time.sleep(1.0)  # what the node read is held by now
    held = rss_kib() - before
    done.set()
    sampler.join()
    count, keep = result["r"]
    for s in keep:
        s.close()
    grown = max(peak[0] - before, held)
    print(f"| {name} | {count} | {grown / 1024:.1f} MiB | {held / 1024:.1f} MiB "
          f"| {grown / max(count, 1):.0f} KiB | {idle:.1f} ms | {during:.1f} ms |", flush=True)


ROWS = {
    "1": ("1: unread command replies (5 s)", row1_unread_replies),
    "2": ("2: half-sent 8 MiB messages before connect", row2_half_messages),
    "3": ("3: 4 MiB app in connect", row3_long_app),
    "4": (f"4: handshake then 1 byte, never connect", lambda: row4_trickle(MANY)),
    "10": ("10: keyframe then 6-byte frames, 20 publishers (4 s)", row10_tiny_frames),
    "many": ("118 KiB half-sent before connect, each", lambda: worst_before_connect(MANY)),
}


def main():
    if ROW.startswith("time:"):
        print(f"{start_time(ROW[5:]):.3f}")
        return
    if ROW == "header":
        print("| attack | connections | RSS peak growth | RSS held | peak per connection "
              "| publish+play idle | publish+play during |")
        print("|---|---|---|---|---|---|---|")
        return
    name, attack = ROWS[ROW]
    measure(name, attack)


if __name__ == "__main__":
    main()
