"""nats-py over WebSocket, and aiohttp's permessage-deflate, against midge's and nats-server's
`websocket {}` listener (same config, both servers). Needs aiohttp (nats-py's WebSocket
transport uses it).
"""

import asyncio
import socket

import aiohttp
import pytest

from test_nats_py import WAIT, connect, start_server  # noqa: F401 (fixture)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ws_server(start_server, block=""):
    port = free_port()
    server = start_server(
        config=f"websocket {{ port: {port}, host: 127.0.0.1, no_tls: true {block} }}\n"
    )
    return server, f"ws://127.0.0.1:{port}"


async def test_websocket_and_tcp_clients_exchange_both_ways(start_server):
    server, ws_url = ws_server(start_server)
    ws = await connect(ws_url)
    tcp = await connect(server.url)
    to_ws = await ws.subscribe("to.ws")
    to_tcp = await tcp.subscribe("to.tcp")
    await ws.flush(WAIT)
    await tcp.flush(WAIT)
    for i in range(20):
        await tcp.publish("to.ws", f"t{i}".encode())
        await ws.publish("to.tcp", f"w{i}".encode())
    await tcp.flush(WAIT)
    await ws.flush(WAIT)
    for i in range(20):
        assert (await to_ws.next_msg(timeout=WAIT)).data == f"t{i}".encode()
        assert (await to_tcp.next_msg(timeout=WAIT)).data == f"w{i}".encode()
    big = b"z" * 300_000
    await tcp.publish("to.ws", big)
    assert (await to_ws.next_msg(timeout=WAIT)).data == big
    await ws.close()
    await tcp.close()


async def test_websocket_token_applies_to_websocket_clients(start_server):
    server, ws_url = ws_server(start_server, ", authorization { token: s3cret }")
    tcp = await connect(server.url)
    await tcp.flush(WAIT)
    with pytest.raises(Exception):
        await connect(ws_url)
    ws = await connect(ws_url, token="s3cret")
    await ws.flush(WAIT)
    await ws.close()
    await tcp.close()


@pytest.mark.parametrize("compression", [True, False])
async def test_permessage_deflate(start_server, compression):
    _, ws_url = ws_server(start_server, f", compression: {str(compression).lower()}")
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(ws_url, compress=15) as ws:
            assert bool(ws.compress) == compression
            info = await asyncio.wait_for(ws.receive(), WAIT)
            assert info.data.startswith(b"INFO ")
            payload = "squeeze me " * 1000
            ops = f"CONNECT {{}}\r\nSUB s 1\r\nPUB s {len(payload)}\r\n{payload}\r\nPING\r\n"
            await ws.send_bytes(ops.encode(), compress=15 if compression else None)
            got = b""
            while b"PONG\r\n" not in got:
                got += (await asyncio.wait_for(ws.receive(), WAIT)).data
            assert f"MSG s 1 {len(payload)}\r\n{payload}\r\n".encode() in got
