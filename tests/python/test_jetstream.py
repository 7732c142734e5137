"""JetStream through the official Python client (nats-py): streams, publishing, limits,
messages, consumers (pull, push, ordered, acks), retention, key-value and the object store,
against nats-server 2.9.10 `-js` (the reference) and, feature by feature, against midge.

Which servers run: the MIDGE_JS gate (the same as tests/e2e/jetstream.rs)
- unset: midge too for MIDGE_DEFAULT (the features midge's JetStream passes today; CI runs so);
- empty or "0": nats-server only;
- "1" or "all": midge too, for every feature;
- "streams,publish,kv": midge too, for those features; "all,-objects": all but objects.
Feature tags: account, streams, publish, limits, messages, consumers, pull, push, acks,
ordered, retention, kv, objects. An unknown tag fails collection. MIDGE_TESTS_REFERENCE_ONLY=1
wins over MIDGE_JS. Each test is marked with its tag (`@feature("kv")`), so
`pytest tests/python/test_jetstream.py -k kv` runs one area.

Servers start with `-js -sd <fresh dir>` like the other Python tests start theirs (see
test_nats_py.py). Expected values (error codes and descriptions, PubAck fields) are
nats-server 2.9.10's; midge is held to them. Every test runs under a deadline, and every wait
inside it has its own.
"""

import asyncio
import base64
import functools
import hashlib
import os
import time

import nats.errors
import nats.js.errors
import pytest
from nats.js import api

from test_nats_py import WAIT, ServerProcess, connect, midge_bin, nats_server_bin

FEATURES = [
    "account",
    "streams",
    "publish",
    "limits",
    "messages",
    "consumers",
    "pull",
    "push",
    "acks",
    "ordered",
    "retention",
    "kv",
    "objects",
]
TEST_DEADLINE = 30.0  # seconds for a whole test, on top of each wait's own deadline


def midge_features(value):
    """The feature tags a MIDGE_JS value enables on midge."""
    enabled = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        remove = item.startswith("-")
        name = item[1:] if remove else item
        if name in ("0", "false"):
            named = []
        elif name in ("1", "all", "true"):
            named = list(FEATURES)
        elif name in FEATURES:
            named = [name]
        else:
            known = ", ".join(FEATURES)
            raise ValueError(f"MIDGE_JS: unknown feature {name!r}; known: all, {known}")
        if remove:
            enabled = [f for f in enabled if f not in named]
        else:
            enabled += [f for f in named if f not in enabled]
    return enabled


MIDGE_DEFAULT = "all"


def kinds(tag):
    """nats-server, plus midge when MIDGE_JS enables `tag`."""
    reference_only = os.environ.get("MIDGE_TESTS_REFERENCE_ONLY", "") not in ("", "0", "false")
    if tag in midge_features(os.environ.get("MIDGE_JS", MIDGE_DEFAULT)) and not reference_only:
        return ["nats-server", "midge"]
    return ["nats-server"]


def feature(tag):
    """Runs the test once per server kind `tag` allows, under TEST_DEADLINE."""
    assert tag in FEATURES, tag

    def decorate(test):
        @functools.wraps(test)
        async def bounded(*args, **kwargs):
            await asyncio.wait_for(test(*args, **kwargs), TEST_DEADLINE)

        return pytest.mark.parametrize("kind", kinds(tag))(bounded)

    return decorate


def test_midge_js_values():
    assert midge_features("") == []
    assert midge_features("1") == FEATURES
    assert midge_features("streams, kv") == ["streams", "kv"]
    assert "objects" not in midge_features("all,-objects")
    with pytest.raises(ValueError):
        midge_features("stream")


@pytest.fixture
def server(kind, tmp_path):
    """A JetStream server of `kind` with a fresh store directory."""
    store = tmp_path / "store"
    store.mkdir()
    binary = midge_bin() if kind == "midge" else nats_server_bin()
    process = ServerProcess(binary, ["-js", "-sd", str(store)], tmp_path)
    yield process
    process.stop()


@pytest.fixture
async def js(server):
    nc = await connect(server.url)
    yield nc.jetstream(timeout=WAIT)
    await nc.close()


def assert_api_error(err, code, err_code, description):
    assert (err.code, err.err_code, err.description) == (code, err_code, description), repr(err)


async def until(check, what):
    """Polls the async `check` until it is true, for at most WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not await check():
        assert time.monotonic() < deadline, f"{what}: not within {WAIT}s"
        await asyncio.sleep(0.05)


async def waiting_requests(sub):
    return (await sub.consumer_info()).num_waiting > 0


async def seqs(msgs):
    return [m.metadata.sequence.stream for m in msgs]


@feature("account")
async def test_account_info_counts(js):
    info = await js.account_info()
    assert (info.streams, info.consumers, info.memory, info.storage) == (0, 0, 0, 0)
    assert info.limits.max_streams == -1
    await js.add_stream(name="A", subjects=["a.>"])
    await js.add_stream(name="M", subjects=["m.>"], storage=api.StorageType.MEMORY)
    await js.publish("a.1", b"on disk")
    await js.publish("m.1", b"in memory")
    await js.pull_subscribe("a.>", durable="C")
    info = await js.account_info()
    assert (info.streams, info.consumers) == (2, 1)
    assert info.storage == (await js.stream_info("A")).state.bytes > 0
    assert info.memory == (await js.stream_info("M")).state.bytes > 0


@feature("streams")
async def test_stream_crud_and_errors(js):
    info = await js.add_stream(name="ORDERS", subjects=["orders.*", "events.>"])
    config = info.config
    assert config.subjects == ["orders.*", "events.>"]
    assert (config.retention, config.storage, config.discard) == (
        api.RetentionPolicy.LIMITS,
        api.StorageType.FILE,
        api.DiscardPolicy.OLD,
    )
    assert (config.max_msgs, config.max_bytes, config.duplicate_window) == (-1, -1, 120.0)

    with pytest.raises(nats.js.errors.BadRequestError) as err:
        await js.add_stream(name="OTHER", subjects=["orders.new"])
    assert_api_error(err.value, 400, 10065, "subjects overlap with an existing stream")
    with pytest.raises(nats.js.errors.BadRequestError) as err:
        await js.add_stream(name="ORDERS", subjects=["orders.*"])
    assert_api_error(
        err.value, 400, 10058, "stream name already in use with a different configuration"
    )

    updated = await js.update_stream(
        name="ORDERS", subjects=["orders.*", "events.>", "audit"], max_msgs=10
    )
    assert updated.config.max_msgs == 10
    assert await js.find_stream_name_by_subject("audit") == "ORDERS"
    await js.add_stream(name="SECOND", subjects=["second"])
    names = sorted(s.config.name for s in await js.streams_info())
    assert names == ["ORDERS", "SECOND"]

    assert await js.delete_stream("ORDERS")
    with pytest.raises(nats.js.errors.NotFoundError) as err:
        await js.stream_info("ORDERS")
    assert_api_error(err.value, 404, 10059, "stream not found")


@feature("publish")
async def test_publish_acks_dedup_and_expectations(js):
    await js.add_stream(name="P", subjects=["p.*"], duplicate_window=1.0)
    ack = await js.publish("p.a", b"1", headers={"Nats-Msg-Id": "one"})
    assert (ack.stream, ack.seq, ack.duplicate) == ("P", 1, None)
    again = await js.publish("p.a", b"1 again", headers={"Nats-Msg-Id": "one"})
    assert (again.seq, again.duplicate) == (1, True)

    await js.publish("p.b", b"2", headers={"Nats-Expected-Last-Sequence": "1"})
    await js.publish("p.a", b"3", headers={"Nats-Expected-Last-Subject-Sequence": "1"})
    with pytest.raises(nats.js.errors.BadRequestError) as err:
        await js.publish("p.a", b"x", headers={"Nats-Expected-Last-Sequence": "1"})
    assert_api_error(err.value, 400, 10071, "wrong last sequence: 3")
    with pytest.raises(nats.js.errors.BadRequestError) as err:
        await js.publish("p.a", b"x", stream="OTHER")
    assert_api_error(err.value, 400, 10060, "expected stream does not match")
    with pytest.raises(nats.js.errors.NoStreamResponseError):
        await js.publish("nowhere", b"x")

    # After the window the id is new again.
    deadline = time.monotonic() + WAIT
    while True:
        ack = await js.publish("p.a", b"later", headers={"Nats-Msg-Id": "one"})
        if not ack.duplicate:
            break
        assert time.monotonic() < deadline, "id never left the duplicate window"
        await asyncio.sleep(0.05)
    assert ack.seq == 4


@feature("limits")
async def test_limits_and_discard_policies(js):
    await js.add_stream(name="OLD", subjects=["old"], max_msgs=3)
    for i in range(5):
        await js.publish("old", str(i).encode())
    state = (await js.stream_info("OLD")).state
    assert (state.messages, state.first_seq, state.last_seq) == (3, 3, 5)

    await js.add_stream(name="NEW", subjects=["new"], max_msgs=1, discard=api.DiscardPolicy.NEW)
    await js.publish("new", b"first")
    with pytest.raises(nats.js.errors.APIError) as err:
        await js.publish("new", b"second")
    assert_api_error(err.value, 503, 10077, "maximum messages exceeded")

    await js.add_stream(name="SMALL", subjects=["small"], max_msg_size=10)
    with pytest.raises(nats.js.errors.BadRequestError) as err:
        await js.publish("small", b"x" * 11)
    assert_api_error(err.value, 400, 10054, "message size exceeds maximum allowed")

    await js.add_stream(name="AGED", subjects=["aged"], max_age=1.0)
    await js.publish("aged", b"short-lived")
    published = time.monotonic()
    while (await js.stream_info("AGED")).state.messages:
        assert time.monotonic() - published < WAIT, "never expired"
        await asyncio.sleep(0.05)
    assert time.monotonic() - published >= 0.9


@feature("messages")
async def test_get_direct_get_delete_and_purge(js):
    await js.add_stream(name="M", subjects=["m.*"], allow_direct=True)
    await js.publish("m.a", b"first", headers={"X-H": "one"})
    await js.publish("m.b", b"second")
    await js.publish("m.a", b"third")
    msg = await js.get_msg("M", 1)
    assert (msg.subject, msg.seq, msg.data, msg.headers["X-H"]) == ("m.a", 1, b"first", "one")
    last = await js.get_last_msg("M", "m.a")
    assert (last.seq, last.data) == (3, b"third")
    direct = await js.get_msg("M", 2, direct=True)
    assert (direct.subject, direct.seq, direct.data) == ("m.b", 2, b"second")
    with pytest.raises(nats.js.errors.NotFoundError) as err:
        await js.get_msg("M", 99)
    assert_api_error(err.value, 404, 10037, "no message found")

    assert await js.delete_msg("M", 2)
    state = (await js.stream_info("M")).state
    assert (state.messages, state.num_deleted) == (2, 1)
    info = await js.stream_info("M", subjects_filter=">")
    assert info.state.subjects == {"m.a": 2}

    await js.purge_stream("M", subject="m.a", keep=1)
    assert (await js.stream_info("M")).state.messages == 1
    await js.purge_stream("M")
    state = (await js.stream_info("M")).state
    assert (state.messages, state.first_seq, state.last_seq) == (0, 4, 3)


@feature("consumers")
async def test_consumers_and_deliver_policies(js):
    await js.add_stream(name="D", subjects=["d.*"])
    for i in range(1, 7):
        await js.publish("d.a" if i % 2 else "d.b", str(i).encode())
    # nats-py makes the subscribed subject the consumer's filter.
    cases = [
        ("ALL", "d.*", dict(deliver_policy=api.DeliverPolicy.ALL), [1, 2, 3, 4, 5, 6]),
        ("LAST", "d.*", dict(deliver_policy=api.DeliverPolicy.LAST), [6]),
        (
            "START",
            "d.*",
            dict(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=4),
            [4, 5, 6],
        ),
        ("PERSUBJ", "d.*", dict(deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT), [5, 6]),
        ("FILTER", "d.b", {}, [2, 4, 6]),
    ]
    for name, subject, config, want in cases:
        sub = await js.pull_subscribe(subject, durable=name, config=api.ConsumerConfig(**config))
        got = await seqs(await sub.fetch(len(want), timeout=WAIT))
        assert got == want, name
        info = await sub.consumer_info()
        assert info.num_pending == 0, name

    jsm_names = sorted(c.name for c in await js.consumers_info("D"))
    assert jsm_names == sorted(case[0] for case in cases)
    assert await js.delete_consumer("D", "ALL")
    with pytest.raises(nats.js.errors.NotFoundError) as err:
        await js.consumer_info("D", "ALL")
    assert_api_error(err.value, 404, 10014, "consumer not found")

    # An ephemeral consumer starting with deliver new sees only later messages.
    new_only = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.NEW)
    sub = await js.pull_subscribe("d.*", config=new_only)
    await js.publish("d.a", b"7")
    assert await seqs(await sub.fetch(1, timeout=WAIT)) == [7]


@feature("pull")
async def test_pull_fetch_batches_and_timeouts(js):
    await js.add_stream(name="P", subjects=["p"])
    for i in range(5):
        await js.publish("p", str(i).encode())
    sub = await js.pull_subscribe("p", durable="C")
    first = await sub.fetch(3, timeout=WAIT)
    assert await seqs(first) == [1, 2, 3]
    for msg in first:
        await msg.ack_sync()
    rest = await sub.fetch(10, timeout=1.0)
    assert await seqs(rest) == [4, 5]
    for msg in rest:
        await msg.ack_sync()
    started = time.monotonic()
    with pytest.raises(nats.errors.TimeoutError):
        await sub.fetch(1, timeout=0.5)
    assert time.monotonic() - started >= 0.4
    # A waiting fetch gets a message published while it waits.
    fetching = asyncio.ensure_future(sub.fetch(1, timeout=WAIT))
    await until(lambda: waiting_requests(sub), "the fetch is waiting")
    await js.publish("p", b"late")
    assert (await fetching)[0].data == b"late"


@feature("acks")
async def test_redelivery_nak_progress_and_term(js):
    await js.add_stream(name="A", subjects=["a.*"])
    for subject in ["a.wait", "a.nak", "a.wpi", "a.term"]:
        await js.publish(subject, subject.encode())
    sub = await js.pull_subscribe("a.*", durable="C", config=api.ConsumerConfig(ack_wait=1.0))
    msgs = {m.subject: m for m in await sub.fetch(4, timeout=WAIT)}
    assert len(msgs) == 4
    started = time.monotonic()
    await msgs["a.nak"].nak(delay=0.5)
    await msgs["a.term"].term()
    await asyncio.sleep(0.6)  # working on a.wpi; reporting progress moves its deadline to ~1.6 s
    await msgs["a.wpi"].in_progress()

    # Back come the NAK'd message (after its delay) and the unacked one (after the ack wait).
    again = []
    while len(again) < 2:
        for msg in await sub.fetch(1, timeout=WAIT):
            again.append((msg.subject, msg.metadata.num_delivered, time.monotonic() - started))
            await msg.ack_sync()
    assert [(s, n) for s, n, _ in again] == [("a.nak", 2), ("a.wait", 2)], again
    assert again[0][2] >= 0.4 and again[1][2] >= 0.9, again
    # a.wpi is acked inside its extended deadline, a.term is never redelivered.
    await msgs["a.wpi"].ack_sync()
    with pytest.raises(nats.errors.TimeoutError):
        await sub.fetch(1, timeout=1.5)
    info = await sub.consumer_info()
    assert info.num_ack_pending == 0
    assert info.ack_floor.stream_seq == 4


@feature("push")
async def test_push_subscription_with_flow_control(js):
    await js.add_stream(name="PUSH", subjects=["push"])
    body = b"x" * (64 * 1024)
    for _ in range(40):
        await js.publish("push", body)
    sub = await js.subscribe(
        "push", durable="C", manual_ack=True, flow_control=True, idle_heartbeat=0.5
    )
    for seq in range(1, 41):
        msg = await sub.next_msg(timeout=WAIT)
        assert msg.metadata.sequence.stream == seq
        assert len(msg.data) == len(body)
        await msg.ack()
    info = await sub.consumer_info()
    assert info.config.flow_control and info.config.idle_heartbeat == 0.5


@feature("ordered")
async def test_ordered_push_consumer(js):
    await js.add_stream(name="O", subjects=["o.*"])
    for i in range(1, 31):
        await js.publish("o.x", str(i).encode())
    sub = await js.subscribe("o.x", ordered_consumer=True)
    for i in range(1, 31):
        msg = await sub.next_msg(timeout=WAIT)
        assert msg.data == str(i).encode()
    await js.publish("o.x", b"31")
    assert (await sub.next_msg(timeout=WAIT)).data == b"31"


@feature("retention")
async def test_work_queue_loses_nothing_when_a_worker_leaves(js, server):
    await js.add_stream(name="JOBS", subjects=["jobs"], retention=api.RetentionPolicy.WORK_QUEUE)
    for i in range(10):
        await js.publish("jobs", f"job-{i}".encode())
    config = api.ConsumerConfig(ack_wait=1.0)
    leaving = await connect(server.url)
    worker_a = await leaving.jetstream().pull_subscribe("jobs", durable="W", config=config)
    taken = await worker_a.fetch(3, timeout=WAIT)
    assert len(taken) == 3
    await leaving.close()  # scaled down without acking

    worker_b = await js.pull_subscribe("jobs", durable="W", config=config)
    done = set()
    deadline = time.monotonic() + WAIT
    while len(done) < 10:
        assert time.monotonic() < deadline, sorted(done)
        try:
            batch = await worker_b.fetch(5, timeout=3.0)
        except nats.errors.TimeoutError:
            continue
        for msg in batch:
            done.add(msg.data)
            await msg.ack_sync()
    assert done == {f"job-{i}".encode() for i in range(10)}
    assert (await js.stream_info("JOBS")).state.messages == 0
    # nats-py filters on the subscribed subject: a second consumer on it overlaps the first.
    with pytest.raises(nats.js.errors.BadRequestError) as err:
        await js.pull_subscribe("jobs", durable="SECOND")
    assert_api_error(err.value, 400, 10100, "filtered consumer not unique on workqueue stream")


@feature("kv")
async def test_kv_revisions_markers_and_history(js):
    kv = await js.create_key_value(bucket="CFG", history=3)
    assert await kv.put("a", b"1") == 1
    assert (await kv.get("a")).value == b"1"
    assert await kv.update("a", b"2", last=1) == 2
    with pytest.raises(nats.js.errors.KeyWrongLastSequenceError) as err:
        await kv.update("a", b"stale", last=1)
    assert err.value.description == "wrong last sequence: 2"  # nats-py maps err_code 10071 here
    assert await kv.create("b", b"x") == 3
    with pytest.raises(nats.js.errors.KeyWrongLastSequenceError):
        await kv.create("b", b"again")

    for v in (b"3", b"4"):
        await kv.put("a", v)
    history = await kv.history("a")
    assert [e.value for e in history] == [b"2", b"3", b"4"]
    # nats-py reports a deleted or purged key as not found.
    await kv.delete("a")
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await kv.get("a")
    assert (await kv.history("a"))[-1].operation == "DEL"
    await kv.purge("b")
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await kv.get("b")
    assert [e.operation for e in await kv.history("b")] == ["PURGE"]
    await kv.put("c", b"live")
    assert await kv.keys() == ["c"]
    status = await kv.status()
    assert (status.bucket, status.history) == ("CFG", 3)


@feature("kv")
async def test_kv_ttl_and_watchers(js):
    kv = await js.create_key_value(bucket="W", history=5, ttl=1.0)
    await kv.put("a.1", b"current")
    watcher = await kv.watch("a.*")
    first = await watcher.updates(timeout=WAIT)
    assert (first.key, first.value) == ("a.1", b"current")
    assert await watcher.updates(timeout=WAIT) is None, "end of the initial values"
    everything = await kv.watchall()
    assert (await everything.updates(timeout=WAIT)).key == "a.1"
    assert await everything.updates(timeout=WAIT) is None

    await kv.put("a.2", b"new")
    await kv.put("b.1", b"elsewhere")
    update = await watcher.updates(timeout=WAIT)
    assert (update.key, update.value, update.revision) == ("a.2", b"new", 2)
    assert [(await everything.updates(timeout=WAIT)).key for _ in range(2)] == ["a.2", "b.1"]
    await watcher.stop()
    await everything.stop()

    put_at = time.monotonic()
    await kv.put("short", b"lived")
    while True:
        try:
            await kv.get("short")
        except nats.js.errors.KeyNotFoundError:
            break
        assert time.monotonic() - put_at < WAIT, "never expired"
        await asyncio.sleep(0.05)
    assert time.monotonic() - put_at >= 0.9


@feature("objects")
async def test_object_store_chunks_digest_and_meta(js):
    obs = await js.create_object_store("FILES")
    data = os.urandom(300 * 1024)
    info = await obs.put("blob.bin", data)
    assert (info.size, info.chunks) == (len(data), 3)
    digest = hashlib.sha256(data).digest()
    assert info.digest == "SHA-256=" + base64.urlsafe_b64encode(digest).decode()
    result = await obs.get("blob.bin")
    assert result.data == data
    assert result.info.digest == info.digest

    await obs.put("small.txt", b"hello")
    names = sorted(i.name for i in await obs.list())
    assert names == ["blob.bin", "small.txt"]
    # (nats-py 2.16 cannot rename: it checks the old name for a clash.)
    await obs.update_meta("small.txt", api.ObjectMeta(name="small.txt", description="greeting"))
    described = await obs.get_info("small.txt")
    assert (described.description, described.size) == ("greeting", 5)
    await obs.delete("blob.bin")
    with pytest.raises(nats.js.errors.ObjectNotFoundError):
        await obs.get("blob.bin")
    assert (await obs.get_info("blob.bin", show_deleted=True)).deleted
    names = sorted(i.name for i in await obs.list(ignore_deletes=True))
    assert names == ["small.txt"]
    # blob's chunks are purged; left are its delete marker, small.txt's chunk and its meta
    # (rolled up to the latest by update_meta).
    assert (await js.stream_info("OBJ_FILES")).state.messages == 3
