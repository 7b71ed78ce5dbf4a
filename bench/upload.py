#!/usr/bin/env python3
"""One streamed upload for `make bench`: POST /upload of SIZE bytes (a 1 MiB
block sent again and again) to 127.0.0.1:PORT, while the resident memory of
the worker WORKER_PID is sampled between blocks.

Prints one tab-separated line: seconds, MiB/s, the worker's VmRSS before
(KiB), its peak during the upload (KiB), and the server's answer. Exits
non-zero when the answer is not a 200 with the expected length and CRC-32.
"""

import socket
import sys
import time
import zlib


def vm_rss(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    port, worker, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    block = bytes((i * 7 + (i >> 8)) & 0xFF for i in range(1 << 20))
    blocks, rest = divmod(size, len(block))
    before = vm_rss(worker)
    peak = before
    crc = 0
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(b"POST /upload HTTP/1.1\r\nHost: bench\r\nContent-Length: %d\r\n\r\n" % size)
    start = time.monotonic()
    for i in range(blocks):
        s.sendall(block)
        if i % 16 == 0:
            peak = max(peak, vm_rss(worker))
    if rest:
        s.sendall(block[:rest])
    answer = b""
    while b"}" not in answer:
        more = s.recv(4096)
        if not more:
            break
        answer += more
    took = time.monotonic() - start
    peak = max(peak, vm_rss(worker))
    s.close()
    for _ in range(blocks):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(block[:rest], crc)
    expected = b'{"length": %d, "crc32": "%08x"}' % (size, crc)
    body = answer.split(b"\r\n\r\n", 1)[-1].strip()
    print(f"{took:.2f}\t{size / took / (1 << 20):.0f}\t{before}\t{peak}\t{body.decode(errors='replace')}")
    if not answer.startswith(b"HTTP/1.1 200") or body != expected:
        print(f"upload: expected {expected!r}, got {answer!r}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
