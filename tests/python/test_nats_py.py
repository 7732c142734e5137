"""The official Python client (nats-py) against midge, with nats-server as the reference.

Every test runs twice: against a real `midge` process and against Debian's `nats-server`,
started the same way (`-a 127.0.0.1 -p -1`, port read from the log). A test that passes on
nats-server and fails on midge is a compatibility bug in midge. Covered: pub/sub, `*`/`>`
wildcards, queue groups, request/reply, headers, no responders, token auth (right and
wrong), max_payload (learned from INFO, default and configured), accounts with stream and
service imports.

MIDGE_BIN overrides the midge binary (default `${CARGO_TARGET_DIR:-target}/debug/midge`).
"""

import asyncio
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import nats
import nats.errors
import pytest

REPO = Path(__file__).resolve().parents[2]
WAIT = 5.0  # seconds; the deadline for every single wait
LISTEN_RE = re.compile(r"Listening for client connections on 127\.0\.0\.1:(\d+)")


def midge_bin():
    if os.environ.get("MIDGE_BIN"):
        return os.path.abspath(os.environ["MIDGE_BIN"])  # servers run in a temp dir
    target = Path(os.environ.get("CARGO_TARGET_DIR", "target"))
    if not target.is_absolute():
        target = REPO / target
    return str(target / "debug" / "midge")


def nats_server_bin():
    return shutil.which("nats-server") or "/usr/sbin/nats-server"


class ServerProcess:
    """A broker process on 127.0.0.1 with a free port; stderr is drained in a thread."""

    def __init__(self, binary, extra_args, tmp_path):
        if not os.access(binary, os.X_OK):
            pytest.fail(f"server binary {binary} is missing (build it, or set MIDGE_BIN)")
        self.log = []
        self.proc = subprocess.Popen(
            [binary, "-a", "127.0.0.1", "-p", "-1", *extra_args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        self._port = None
        self._ready = threading.Event()
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._ready.wait(WAIT) or self._port is None:
            self.stop()
            pytest.fail(f"{binary} did not report its port within {WAIT}s: {self.log}")
        self.url = f"nats://127.0.0.1:{self._port}"

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line.rstrip())
            m = LISTEN_RE.search(line)
            if m and self._port is None:
                self._port = int(m.group(1))
                self._ready.set()
        self._ready.set()  # exited before (or after) the line: stop waiting

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(WAIT)


@pytest.fixture(params=["midge", "nats-server"])
def start_server(request, tmp_path):
    """Returns a function starting the parametrized server with extra flags/config lines."""
    binary = midge_bin() if request.param == "midge" else nats_server_bin()
    started = []

    def start(*extra_args, config=None):
        args = list(extra_args)
        if config is not None:
            conf = tmp_path / f"server{len(started)}.conf"
            conf.write_text(config)
            args += ["-c", str(conf)]
        server = ServerProcess(binary, args, tmp_path)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


async def connect(url, **kwargs):
    errors = []

    async def on_error(e):
        errors.append(e)

    nc = await asyncio.wait_for(
        nats.connect(
            url,
            allow_reconnect=False,
            connect_timeout=WAIT,
            max_reconnect_attempts=0,
            error_cb=on_error,
            **kwargs,
        ),
        WAIT,
    )
    nc.test_errors = errors
    return nc


async def test_pub_sub(start_server):
    server = start_server()
    sub_nc = await connect(server.url)
    pub_nc = await connect(server.url)
    sub = await sub_nc.subscribe("greet.joe")
    await sub_nc.flush(WAIT)
    for i in range(10):
        await pub_nc.publish("greet.joe", f"hello {i}".encode())
    await pub_nc.flush(WAIT)
    for i in range(10):
        msg = await sub.next_msg(timeout=WAIT)
        assert msg.subject == "greet.joe"
        assert msg.data == f"hello {i}".encode()
        assert msg.reply == ""
    await pub_nc.publish("greet.joe", b"")
    assert (await sub.next_msg(timeout=WAIT)).data == b""
    await sub_nc.close()
    await pub_nc.close()


async def collect_until(sub, marker):
    got = []
    for _ in range(100):
        msg = await sub.next_msg(timeout=WAIT)
        if msg.subject == marker:
            return got
        got.append(msg.subject)
    pytest.fail(f"marker {marker} never came; got {got}")


async def test_wildcards(start_server):
    server = start_server()
    sub_nc = await connect(server.url)
    pub_nc = await connect(server.url)
    star = await sub_nc.subscribe("a.*.c")
    tail = await sub_nc.subscribe("a.>")
    await sub_nc.flush(WAIT)
    for s in ["a.b.c", "a.b", "a.b.c.d", "a", "b.b.c", "a.x.c", "A.b.c", "a.b.cc", "ab.c"]:
        await pub_nc.publish(s, s.encode())
    await pub_nc.publish("a.end.c", b"end")  # matches both: everything before it was routed
    assert await collect_until(star, "a.end.c") == ["a.b.c", "a.x.c"]
    assert await collect_until(tail, "a.end.c") == ["a.b.c", "a.b", "a.b.c.d", "a.x.c", "a.b.cc"]
    await sub_nc.close()
    await pub_nc.close()


async def test_queue_group(start_server):
    n = 300
    server = start_server()
    members_nc = await connect(server.url)
    plain_nc = await connect(server.url)
    pub_nc = await connect(server.url)
    members = [await members_nc.subscribe("work", queue="workers") for _ in range(3)]
    plain = await plain_nc.subscribe("work")
    await members_nc.flush(WAIT)
    await plain_nc.flush(WAIT)
    for i in range(n):
        await pub_nc.publish("work", str(i).encode())
    await pub_nc.flush(WAIT)

    for i in range(n):
        assert (await plain.next_msg(timeout=WAIT)).data == str(i).encode()

    # Everything for members_nc was written before the PONG of this flush.
    await members_nc.flush(WAIT)
    seen = []
    counts = []
    for m in members:
        got = 0
        while True:
            try:
                msg = await m.next_msg(timeout=0.2)
            except nats.errors.TimeoutError:
                break
            seen.append(msg.data)
            got += 1
            assert got <= n
        counts.append(got)
    assert sorted(seen, key=int) == [str(i).encode() for i in range(n)], "each message exactly once"
    assert all(c > 0 for c in counts), f"every member gets a share: {counts}"
    for nc in (members_nc, plain_nc, pub_nc):
        await nc.close()


async def test_request_reply(start_server):
    server = start_server()
    responder = await connect(server.url)

    async def echo(msg):
        await msg.respond(b"re:" + msg.data)

    await responder.subscribe("svc.echo", cb=echo)
    await responder.flush(WAIT)
    client = await connect(server.url)
    reply = await client.request("svc.echo", b"one", timeout=WAIT)
    assert reply.data == b"re:one"

    async def one(i):
        r = await client.request("svc.echo", str(i).encode(), timeout=WAIT)
        assert r.data == f"re:{i}".encode()

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(100))), WAIT)
    await client.close()
    await responder.close()


async def test_headers(start_server):
    server = start_server()
    nc = await connect(server.url)
    sub = await nc.subscribe("hdr")
    await nc.flush(WAIT)
    await nc.publish("hdr", b"body", headers={"X-Trace": "abc-123", "X-Other": "v"})
    msg = await sub.next_msg(timeout=WAIT)
    assert msg.data == b"body"
    assert msg.headers == {"X-Trace": "abc-123", "X-Other": "v"}
    await nc.publish("hdr", b"", headers={"Only": "headers"})
    msg = await sub.next_msg(timeout=WAIT)
    assert msg.data == b""
    assert msg.headers == {"Only": "headers"}
    await nc.close()


async def test_no_responders(start_server):
    server = start_server()
    nc = await connect(server.url)
    started = time.monotonic()
    with pytest.raises(nats.errors.NoRespondersError):
        await nc.request("nobody.home", b"hi", timeout=WAIT)
    assert time.monotonic() - started < 2, "no responders is immediate, not a timeout"
    await nc.close()


async def test_token_auth_ok(start_server):
    server = start_server("--auth", "s3cr3t")
    nc = await connect(server.url, token="s3cr3t")
    sub = await nc.subscribe("t")
    await nc.publish("t", b"ok")
    assert (await sub.next_msg(timeout=WAIT)).data == b"ok"
    await nc.close()


async def test_token_auth_bad(start_server):
    server = start_server("--auth", "s3cr3t")
    # nats-py reports the server's -ERR text verbatim (quotes and case included).
    for kwargs in ({"token": "wrong"}, {}):
        with pytest.raises(nats.errors.Error) as info:
            await connect(server.url, **kwargs)
        assert str(info.value) == "nats: 'Authorization Violation'", (kwargs, repr(info.value))


async def test_max_payload_default(start_server):
    server = start_server()
    nc = await connect(server.url)
    assert nc.max_payload == 1024 * 1024
    with pytest.raises(nats.errors.MaxPayloadError):
        await nc.publish("big", b"x" * (1024 * 1024 + 1))
    await nc.close()


async def test_max_payload_configured(start_server):
    server = start_server(config="max_payload: 1024\n")
    nc = await connect(server.url)
    assert nc.max_payload == 1024
    sub = await nc.subscribe("big")
    await nc.publish("big", b"x" * 1024)
    assert len((await sub.next_msg(timeout=WAIT)).data) == 1024
    with pytest.raises(nats.errors.MaxPayloadError):
        await nc.publish("big", b"x" * 1025)
    await nc.flush(WAIT)  # still connected and usable
    await nc.close()


ACCOUNTS = """
accounts {
  P: {
    users: [{user: p, password: p}]
    exports: [{stream: "feed.>"}, {service: "svc.echo"}]
  }
  C: {
    users: [{user: c, password: c}]
    imports: [
      {stream: {account: P, subject: "feed.>"}, prefix: "p"}
      {service: {account: P, subject: "svc.echo"}, to: "echo"}
    ]
  }
  Q: { users: [{user: q, password: q}] }
}
"""


async def test_accounts_isolate_and_imports_cross(start_server):
    server = start_server(config=ACCOUNTS)
    p = await connect(server.url, user="p", password="p")
    c = await connect(server.url, user="c", password="c")
    q = await connect(server.url, user="q", password="q")
    # Stream import: P's feed.x is C's p.feed.x; Q (no import) sees nothing.
    c_feed = await c.subscribe("p.feed.>")
    q_feed = await q.subscribe("feed.>")
    await c.flush(WAIT)
    await q.flush(WAIT)
    await p.publish("feed.x", b"one")
    await p.flush(WAIT)
    msg = await c_feed.next_msg(timeout=WAIT)
    assert (msg.subject, msg.data) == ("p.feed.x", b"one")
    await q.publish("feed.mark", b"q")  # Q's own message is the first Q sees
    assert (await q_feed.next_msg(timeout=WAIT)).data == b"q"

    # Service import: C's "echo" is answered by P's svc.echo responder.
    async def echo(msg):
        await p.publish(msg.reply, b"echo:" + msg.data)

    await p.subscribe("svc.echo", cb=echo)
    await p.flush(WAIT)
    answer = await c.request("echo", b"hi", timeout=WAIT)
    assert answer.data == b"echo:hi"
    with pytest.raises(nats.errors.NoRespondersError):
        await q.request("echo", b"hi", timeout=WAIT)
    for nc in (p, c, q):
        await nc.close()
