#!/usr/bin/env python3
"""Sends forged link handshake initiations (random 65-byte signatures) to a node's UDP port at a steady rate,
as an attacker without any key would (docs/links.md, "Before any signature work").

Usage: Tools/flood-handshakes.py HOST:PORT NODE_ADDRESS RATE SECONDS [--format v1|v2] [--junk]
  v2 (default): the current 163-byte init naming NODE_ADDRESS, with mac1 keyed by it (an attacker who
                looked the address up); v1: the 111-byte init of links version 1 (before issue 8).
  --junk:       random 200-byte datagrams instead (socket buffer tests).
Prints the number of datagrams sent."""
import hashlib
import os
import socket
import struct
import sys
import time


def forged_init(fmt, node, ts_ms):
    sig = bytearray(os.urandom(65))
    sig[64] &= 1
    index = os.urandom(4)
    eph = os.urandom(32)
    ts = struct.pack(">Q", ts_ms)
    if fmt == "v1":
        return bytes([0xE1, 1]) + index + eph + ts + bytes(sig)
    signed = bytes([0xE1, 2]) + index + node + eph + ts
    key = hashlib.blake2b(b"meshlink/v2/mac1" + node, digest_size=32).digest()
    mac1 = hashlib.blake2b(signed + bytes(sig), digest_size=16, key=key).digest()
    return signed + bytes(sig) + mac1 + bytes(16)


def main():
    argv = sys.argv[1:]
    fmt = "v2"
    if "--format" in argv:
        i = argv.index("--format")
        fmt = argv[i + 1] if i + 1 < len(argv) else ""
        del argv[i:i + 2]
    if fmt not in ("v1", "v2"):
        sys.exit("--format: expected v1 or v2")
    junk = "--junk" in argv
    args = [a for a in argv if a != "--junk"]
    if len(args) != 4:
        sys.exit(__doc__)
    host, port = args[0].rsplit(":", 1)
    node = bytes.fromhex(args[1].removeprefix("0x"))
    rate, seconds = float(args[2]), float(args[3])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    target = (host, int(port))
    # Every forgery is new (a new key each time); junk comes from a pool, for high rates.
    pool = [os.urandom(200) for _ in range(1000)] if junk else []
    start = time.monotonic()
    sent = 0
    while True:
        now = time.monotonic()
        if now - start >= seconds:
            break
        due = int((now - start) * rate) - sent
        ts = int(time.time() * 1000)
        for _ in range(min(due, 5000)):
            try:
                sock.sendto(pool[sent % len(pool)] if junk else forged_init(fmt, node, ts), target)
            except BlockingIOError:
                pass
            sent += 1
        time.sleep(0.001)
    print(sent)


if __name__ == "__main__":
    main()
