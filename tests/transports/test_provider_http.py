"""The provider's HTTP client on real sockets: kept-alive connections reused, connections
the server closed or answered `Connection: close` on not reused, TLS, and which side of
the wire a failure fell on (`NotSent`: never left; `NoAnswer`: may have arrived)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import h11
import pytest
import trio
import trustme

from tidings.bench.chaos import _read_request as read_request
from tidings.transports.provider_http import NoAnswer, NotSent, ProviderHttp, Request

# what the server does with each request, in turn: "ok", "close" (answers with
# `Connection: close`), "chunked", "hang" (never answers), "cut" (closes mid-answer),
# "drop" (answers, then closes the connection)
Behaviour = str


@dataclass
class Server:
    """A local HTTP/1.1 server following `script`; it counts connections and keeps each
    request's (method, target, headers, body)."""

    script: list[Behaviour]
    connections: int = 0
    requests: list[tuple[bytes, bytes, dict[bytes, bytes], bytes]] = field(default_factory=list)
    port: int = 0

    async def serve(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            while (got := await read_request(conn, stream))[0] is not None:
                await self.answer(conn, stream, *got)
        except (trio.BrokenResourceError, h11.RemoteProtocolError, Closed):
            return
        finally:
            await trio.aclose_forcefully(stream)

    async def answer(
        self, conn: h11.Connection, stream: trio.SocketStream, request: h11.Request | None, body: bytes
    ) -> None:
        """Answer `request` as the script says; `Closed` when the connection is done."""
        assert request is not None
        self.requests.append((request.method, request.target, dict(request.headers), body))
        behaviour = self.script.pop(0) if self.script else "ok"
        if behaviour == "hang":
            await trio.sleep_forever()
        if behaviour == "cut":
            head = h11.Response(status_code=201, headers=[(b"Content-Length", b"100")])
            await stream.send_all(conn.send(head) + conn.send(h11.Data(data=b'{"sid"')))
            raise Closed
        await stream.send_all(_answer(conn, behaviour))
        if behaviour == "drop" or conn.our_state is h11.MUST_CLOSE:
            raise Closed
        conn.start_next_cycle()


class Closed(Exception):
    """The server closes the connection."""


def _answer(conn: h11.Connection, behaviour: Behaviour) -> bytes:
    content = b'{"sid":"SM1","status":"queued"}'
    headers = [(b"Content-Type", b"application/json")]
    if behaviour == "close":
        headers.append((b"Connection", b"close"))
    if behaviour == "chunked":
        headers.append((b"Transfer-Encoding", b"chunked"))
        data = conn.send(h11.Response(status_code=201, headers=headers)) or b""
        for piece in (content[:5], content[5:]):
            data += conn.send(h11.Data(data=piece)) or b""
        return data + (conn.send(h11.EndOfMessage()) or b"")
    headers.append((b"Content-Length", str(len(content)).encode()))
    data = conn.send(h11.Response(status_code=201, headers=headers)) or b""
    data += conn.send(h11.Data(data=content)) or b""
    return data + (conn.send(h11.EndOfMessage()) or b"")


@asynccontextmanager
async def serving(
    *script: Behaviour, wrap: Callable[[trio.SocketStream], trio.abc.Stream] | None = None
) -> AsyncIterator[Server]:
    server = Server(list(script))

    async def handler(stream: trio.SocketStream) -> None:
        await server.serve(wrap(stream) if wrap else stream)  # type: ignore[arg-type]

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


POST = Request(b"POST", b"/2010-04-01/Messages.json", [(b"Accept", b"application/json")], b"To=%2B1")


async def test_connections_are_kept_alive_and_reused() -> None:
    async with serving() as server:
        http = ProviderHttp(f"http://127.0.0.1:{server.port}")
        answers = [await http.request(POST, timeout=5) for _ in range(3)]
        await http.aclose()
    assert [a.status for a in answers] == [201, 201, 201]
    assert answers[0].headers["content-type"] == "application/json"
    assert answers[0].content == b'{"sid":"SM1","status":"queued"}'
    assert server.connections == 1
    method, target, headers, body = server.requests[0]
    assert (method, target, body) == (b"POST", b"/2010-04-01/Messages.json", b"To=%2B1")
    assert headers[b"host"] == f"127.0.0.1:{server.port}".encode()
    assert headers[b"content-length"] == b"7" and headers[b"accept"] == b"application/json"


@pytest.mark.parametrize("behaviour", ["close", "drop"])
async def test_a_connection_the_server_closes_is_not_reused(behaviour: Behaviour) -> None:
    async with serving(behaviour, "ok") as server:
        http = ProviderHttp(f"http://127.0.0.1:{server.port}")
        first = await http.request(POST, timeout=5)
        await trio.sleep(0.05)  # the server's FIN arrives
        second = await http.request(POST, timeout=5)
        await http.aclose()
    assert (first.status, second.status) == (201, 201)
    assert server.connections == 2


async def test_a_chunked_answer_is_read_whole() -> None:
    async with serving("chunked", "ok") as server:
        http = ProviderHttp(f"http://127.0.0.1:{server.port}")
        first = await http.request(POST, timeout=5)
        second = await http.request(POST, timeout=5)
        await http.aclose()
    assert first.content == second.content == b'{"sid":"SM1","status":"queued"}'
    assert server.connections == 1


async def test_a_refused_connection_is_not_sent() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        http = ProviderHttp(f"http://127.0.0.1:{sock.getsockname()[1]}")
        with pytest.raises(NotSent):
            await http.request(POST, timeout=5)


@pytest.mark.parametrize(("behaviour", "timed_out"), [("hang", True), ("cut", False)])
async def test_a_request_without_a_whole_answer_may_have_arrived(
    behaviour: Behaviour, timed_out: bool
) -> None:
    async with serving(behaviour, "ok") as server:
        http = ProviderHttp(f"http://127.0.0.1:{server.port}")
        with pytest.raises(NoAnswer) as info:
            await http.request(POST, timeout=0.3)
        assert info.value.timed_out is timed_out
        after = await http.request(POST, timeout=5)  # on a new connection
        await http.aclose()
    assert after.status == 201
    assert len(server.requests) == 2 and server.connections == 2


async def test_https_verifies_the_server_and_keeps_the_connection() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    def tls(stream: trio.SocketStream) -> trio.abc.Stream:
        return trio.SSLStream(stream, server_context, server_side=True)

    async with serving(wrap=tls) as server:
        http = ProviderHttp(f"https://localhost:{server.port}", ssl_context=client_context)
        answers = [await http.request(POST, timeout=5) for _ in range(2)]
        await http.aclose()
        untrusted = ProviderHttp(f"https://localhost:{server.port}")  # the system's CAs
        with pytest.raises(NotSent, match="TLS"):
            await untrusted.request(POST, timeout=5)
    assert [a.status for a in answers] == [201, 201]
    assert server.connections == 2  # one kept for both requests, one refused by the client
    assert server.requests[0][2][b"host"] == f"localhost:{server.port}".encode()


def test_only_http_and_https_urls_are_taken() -> None:
    with pytest.raises(ValueError, match="ftp://"):
        ProviderHttp("ftp://twilio.test")
