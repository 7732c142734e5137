"""nats-py logging in with nkey seeds and with .creds files (operator mode), against midge
and nats-server from the same config and the same JWTs (built here with the nkeys package).

The servers and helpers are those of test_nats_py.py (each test runs on both servers).
"""

import base64
import json
import os
import time

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


def new_key(prefix):
    """A fresh key pair of the given kind (seed bytes, public key text)."""
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return seed, nkeys.from_seed(seed).public_key.decode()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode_jwt(signer_seed, subject, nats_claims, **extra):
    """A NATS JWT (version 2) signed by `signer_seed`, as nsc writes them."""
    signer = nkeys.from_seed(signer_seed)
    claims = {
        "jti": b64url(os.urandom(16)),
        "iat": int(time.time()) - 5,
        "iss": signer.public_key.decode(),
        "sub": subject,
        "name": "t",
        "nats": {"version": 2, **nats_claims},
        **extra,
    }
    head = b64url(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = b64url(json.dumps(claims).encode())
    sig = signer.sign(f"{head}.{body}".encode())
    return f"{head}.{body}.{b64url(sig)}"


UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "conn": -1, "leaf": -1,
             "imports": -1, "exports": -1, "wildcards": True}


def operator_setup(tmp_path):
    """An operator, a system account and account A; returns (config text, A's seed)."""
    op_seed, op_pub = new_key(nkeys.PREFIX_BYTE_OPERATOR)
    sys_seed, sys_pub = new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    a_seed, a_pub = new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    op_jwt = encode_jwt(op_seed, op_pub, {"type": "operator", "system_account": sys_pub})
    (tmp_path / "op.jwt").write_text(op_jwt)
    sys_jwt = encode_jwt(op_seed, sys_pub, {"type": "account", "limits": UNLIMITED})
    a_jwt = encode_jwt(op_seed, a_pub, {"type": "account", "limits": UNLIMITED})
    config = (
        f'operator: "{tmp_path / "op.jwt"}"\nsystem_account: {sys_pub}\nresolver: MEMORY\n'
        f"resolver_preload: {{\n  {sys_pub}: {sys_jwt}\n  {a_pub}: {a_jwt}\n}}\n"
    )
    return config, a_seed, a_pub


def write_creds(path, account_seed, user_claims=None, **extra):
    user_seed, user_pub = new_key(nkeys.PREFIX_BYTE_USER)
    nats_claims = {"type": "user", "subs": -1, "data": -1, "payload": -1, **(user_claims or {})}
    jwt = encode_jwt(account_seed, user_pub, nats_claims, **extra)
    path.write_text(
        f"-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user_seed.decode()}\n------END USER NKEY SEED------\n"
    )
    return str(path)


async def test_creds_login_in_operator_mode(start_server, tmp_path):
    config, a_seed, _ = operator_setup(tmp_path)
    server = start_server(config=config)
    one = await connect(server.url, user_credentials=write_creds(tmp_path / "one.creds", a_seed))
    two = await connect(server.url, user_credentials=write_creds(tmp_path / "two.creds", a_seed))
    sub = await one.subscribe("x")
    await one.flush(WAIT)
    await two.publish("x", b"same account")
    assert (await sub.next_msg(timeout=WAIT)).data == b"same account"
    await one.close()
    await two.close()


async def test_expired_and_foreign_creds_are_refused(start_server, tmp_path):
    config, a_seed, _ = operator_setup(tmp_path)
    server = start_server(config=config)
    expired = write_creds(tmp_path / "expired.creds", a_seed, exp=int(time.time()) - 2)
    stranger_seed, _ = new_key(nkeys.PREFIX_BYTE_ACCOUNT)
    foreign = write_creds(tmp_path / "foreign.creds", stranger_seed)
    for creds in (expired, foreign):
        with pytest.raises(Exception) as err:
            await connect(server.url, user_credentials=creds)
        assert "authorization violation" in str(err.value).lower()
