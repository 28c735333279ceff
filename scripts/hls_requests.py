"""A fixed-count plain HLS client for scripts/bench-hls-requests.sh: C keep-alive connections,
each R rounds of (playlist, playlist, newest segment), as a plain HLS viewer asks (a playlist a
second, a segment every two). Prints `requests=N bytes=B`. Every socket has a timeout."""
import socket
import sys
import threading

host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
conns, rounds = int(sys.argv[4]), int(sys.argv[5])
totals = [0, 0]
lock = threading.Lock()


def get(sock, reader, target):
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    status = reader.readline()
    length = 0
    while True:
        line = reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = reader.read(length)
    if not status.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"{target}: {status!r}")
    return body


def viewer():
    sock = socket.create_connection((host, port), timeout=10)
    reader = sock.makefile("rb")
    base = path.rsplit("/", 1)[0]
    requests = received = 0
    for _ in range(rounds):
        for _ in range(2):
            playlist = get(sock, reader, path)
            requests += 1
            received += len(playlist)
        uris = [l for l in playlist.decode().splitlines() if l and not l.startswith("#")]
        received += len(get(sock, reader, f"{base}/{uris[-1]}"))
        requests += 1
    with lock:
        totals[0] += requests
        totals[1] += received


threads = [threading.Thread(target=viewer) for _ in range(conns)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"requests={totals[0]} bytes={totals[1]}")
