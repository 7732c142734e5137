"""nats-py logging in with nkey seeds, against midge and nats-server from the same config.

The servers and helpers are those of test_nats_py.py (each test runs on both servers).
"""

import os

import nats.errors
import nkeys
import pytest

from test_nats_py import WAIT, connect, start_server  # noqa: F401  (start_server: fixture)


def new_user_seed():
    """A fresh user seed (`SU...`) and its public key (`U...`)."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode(), nkeys.from_seed(seed).public_key.decode()


async def test_nkey_seed_login_and_account_isolation(start_server):
    seed_a, pub_a = new_user_seed()
    seed_b, pub_b = new_user_seed()
    server = start_server(
        config=f"accounts {{\n  A: {{ users: [{{nkey: {pub_a}}}] }}\n"
        f"  B: {{ users: [{{nkey: {pub_b}}}] }}\n}}\n"
    )
    a = await connect(server.url, nkeys_seed_str=seed_a)
    b = await connect(server.url, nkeys_seed_str=seed_b)
    sub = await a.subscribe("x")
    await a.flush(WAIT)
    await b.publish("x", b"from b")
    await b.flush(WAIT)
    await a.publish("x", b"from a")
    # B's message stays in account B: A's own later message arrives first.
    assert (await sub.next_msg(timeout=WAIT)).data == b"from a"
    await a.close()
    await b.close()


async def test_unknown_nkey_is_refused(start_server):
    _, known = new_user_seed()
    stranger, _ = new_user_seed()
    server = start_server(config=f"authorization {{ users: [{{nkey: {known}}}] }}\n")
    with pytest.raises(Exception) as err:
        await connect(server.url, nkeys_seed_str=stranger)
    assert "authorization violation" in str(err.value).lower()
