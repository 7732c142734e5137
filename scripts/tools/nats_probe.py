#!/usr/bin/env python3
"""Tiny dependency-free NATS probe for scripts/partition-test.sh.

It runs inside a network namespace (`ip netns exec`), where no Python packages or test
binaries are needed: raw client protocol over a socket and /routez over HTTP.

  nats_probe.py routes HOST:MONPORT N SECONDS    wait until /routez num_routes == N
  nats_probe.py cross PUB:PORT SUB:PORT SECONDS  publish on PUB until a subscriber on SUB
                                                 gets it (interest crosses asynchronously)
  nats_probe.py steady PUB:PORT SUB:PORT COUNT   COUNT messages in a row arrive in order

Every wait has a deadline; exit status 1 with a reason when it passes.
"""

import json
import os
import socket
import sys
import time
import urllib.request


def fail(msg):
    print(f"nats_probe: {msg}", file=sys.stderr)
    sys.exit(1)


def addr(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


class Conn:
    def __init__(self, hostport, timeout=2.0):
        self.sock = socket.create_connection(addr(hostport), timeout=timeout)
        self.buf = b""
        line = self.line()
        if not line.startswith(b"INFO "):
            fail(f"{hostport}: expected INFO, got {line!r}")
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\n')
        self.flush()

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def flush(self):
        """PING/PONG: everything sent before has been processed by the server."""
        self.sock.sendall(b"PING\r\n")
        while True:
            line = self.line()
            if line == b"PONG":
                return
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                fail(f"server error: {line!r}")

    def next_msg(self, timeout):
        """The payload of the next MSG within `timeout`, or None."""
        self.sock.settimeout(timeout)
        try:
            while True:
                line = self.line()
                if line == b"PING":
                    self.sock.sendall(b"PONG\r\n")
                elif line.startswith(b"MSG "):
                    size = int(line.split()[-1])
                    while len(self.buf) < size + 2:
                        chunk = self.sock.recv(65536)
                        if not chunk:
                            raise ConnectionError("closed")
                        self.buf += chunk
                    payload, self.buf = self.buf[:size], self.buf[size + 2 :]
                    return payload
        except socket.timeout:
            return None
        finally:
            self.sock.settimeout(2.0)


def routes(mon, want, seconds):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{mon}/routez", timeout=2) as r:
                last = json.load(r).get("num_routes")
            if last == want:
                print(f"{mon}: {want} route(s)")
                return
        except OSError as e:
            last = e
        time.sleep(0.1)  # poll interval of a bounded wait
    fail(f"{mon}: wanted {want} routes within {seconds}s, last saw {last}")


def cross(pub, sub, seconds):
    deadline = time.monotonic() + seconds
    subject = f"probe.{os.getpid()}.{time.monotonic_ns()}"
    s = Conn(sub)
    s.sock.sendall(f"SUB {subject} 1\r\n".encode())
    s.flush()
    p = Conn(pub)
    while time.monotonic() < deadline:
        p.sock.sendall(f"PUB {subject} 1\r\nx\r\n".encode())
        p.flush()
        if s.next_msg(0.1) is not None:
            print(f"{pub} -> {sub}: delivered")
            return
    fail(f"{pub} -> {sub}: nothing arrived within {seconds}s")


def steady(pub, sub, count):
    subject = f"steady.{os.getpid()}.{time.monotonic_ns()}"
    s = Conn(sub)
    s.sock.sendall(f"SUB {subject} 1\r\n".encode())
    s.flush()
    p = Conn(pub)
    # Interest first: the subscription has to reach the publisher's server over the route.
    cross(pub, sub, 10)
    for n in range(count):
        body = str(n).encode()
        p.sock.sendall(b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(body), body))
        p.flush()
        got = s.next_msg(5)
        if got != body:
            fail(f"{pub} -> {sub}: message {n}: got {got!r}")
    print(f"{pub} -> {sub}: {count} in a row")


def main(argv):
    if len(argv) != 5:
        fail(__doc__)
    cmd, a, b, c = argv[1:]
    try:
        if cmd == "routes":
            routes(a, int(b), float(c))
        elif cmd == "cross":
            cross(a, b, float(c))
        elif cmd == "steady":
            steady(a, b, int(c))
        else:
            fail(f"unknown command {cmd}")
    except (OSError, ConnectionError, ValueError) as e:
        fail(f"{cmd}: {e}")


if __name__ == "__main__":
    main(sys.argv)
