"""A small HTTP/1.1 client for one provider origin (the SMS provider's REST API), over
h11 on trio, with a pool of kept-alive connections (TLS through `trio.SSLStream` for
https).

Why not httpx: the courier posts one request per outbound SMS, and httpx's client
machinery (request and response models, auth and redirect flows, cookie extraction,
URL parsing, an INFO log record, httpcore's pool scan and a separate write for the
headers and for the body) cost more CPU than the rest of the SMS's hand-off. This client
writes each request with one `send_all` and reads the answer into an `Answer`.

What a caller needs to keep an SMS from going out twice is which side of the wire a
failure fell on: `NotSent` (no connection could be made: the request never left, so it
may be sent again at once) or `NoAnswer` (the request may have reached the provider:
look before sending again). Connections that the server closed while idle in the pool
are noticed before reuse (the socket reads as readable), and connections idle longer
than `KEEPALIVE_S` are dropped, as a server or a NAT may have forgotten them.
"""

from __future__ import annotations

import logging
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import h11
import trio

__all__ = [
    "KEEPALIVE_S", "Answer", "Exchange", "HttpFailure", "NoAnswer", "NotSent", "ProviderHttp",
    "Request",
]  # fmt: skip

log = logging.getLogger("tidings.provider_http")

KEEPALIVE_S = 5.0  # idle connections older than this are closed, not reused
MAX_IDLE = 10  # idle connections kept for reuse
_READ = 65536


class HttpFailure(Exception):
    """No complete answer came for a request."""


class NotSent(HttpFailure):
    """No connection could be made (refused, unresolvable, TLS handshake failed, or the
    timeout passed while connecting): the request never left."""


class NoAnswer(HttpFailure):
    """The request was written, or partly, and no complete answer came (timeout,
    connection lost, malformed answer): the server may have acted on it. `timed_out`
    tells a timeout from a broken connection."""

    def __init__(self, detail: str, *, timed_out: bool = False) -> None:
        super().__init__(detail)
        self.timed_out = timed_out


@dataclass(slots=True, frozen=True)
class Request:
    """One request: `target` is the path and query; `headers` are all but Host and
    Content-Length, which the client adds."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""


@dataclass(slots=True, frozen=True)
class Answer:
    """A complete HTTP answer: status, headers (names lower-case) and body."""

    status: int
    headers: dict[str, str]
    content: bytes

    @property
    def text(self) -> str:
        """The body as text (UTF-8, undecodable bytes replaced)."""
        return self.content.decode(errors="replace")


class Exchange(Protocol):
    """What a provider client needs of HTTP: one request, its whole answer (`ProviderHttp`
    over sockets; tests answer in-process)."""

    async def request(self, request: Request, timeout: float) -> Answer: ...

    async def aclose(self) -> None: ...


class _Connection:
    """One kept-alive connection: its stream, its raw socket (to see whether the server
    closed it while idle) and its h11 state."""

    __slots__ = ("h11", "idle_since", "socket", "stream")

    def __init__(self, stream: trio.abc.Stream, socket: trio.socket.SocketType) -> None:
        self.stream = stream
        self.socket = socket
        self.h11 = h11.Connection(h11.CLIENT)
        self.idle_since = 0.0

    def reusable(self, now: float) -> bool:
        """Whether an idle connection may carry another request: recently used, and the
        server has neither closed it nor sent anything unasked."""
        return now - self.idle_since < KEEPALIVE_S and not self.socket.is_readable()


class ProviderHttp:
    """Requests to the origin of `base_url` (`http://` or `https://`; any path is the
    caller's to add). Concurrency is the callers': each request takes an idle connection
    or opens one, and at most `MAX_IDLE` are kept afterwards."""

    def __init__(self, base_url: str, *, ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {base_url!r}")
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        default_port = self._port == (443 if self._tls else 80)
        netloc = f"[{self._host}]" if ":" in self._host else self._host
        self.host_header = (netloc if default_port else f"{netloc}:{self._port}").encode()
        self.origin = f"{parts.scheme}://{self.host_header.decode()}"
        self._ssl = ssl_context or (ssl.create_default_context() if self._tls else None)
        self._idle: deque[_Connection] = deque()

    async def request(self, request: Request, timeout: float) -> Answer:
        """Send `request` and read its whole answer, both within `timeout` seconds.
        Raises `NotSent` or `NoAnswer`."""
        sent = False
        with trio.move_on_after(timeout):
            connection = await self._connection()
            try:
                data = _encode(connection.h11, request, self.host_header)
                sent = True
                answer = await _exchange(connection, data)
            except BaseException:
                await trio.aclose_forcefully(connection.stream)
                raise
            await self._release(connection)
            log.debug(
                "%s %s%s: %d",
                request.method.decode(), self.origin, request.target.decode(), answer.status,
            )  # fmt: skip
            return answer
        if not sent:
            raise NotSent(f"could not connect within {timeout:g} s")
        raise NoAnswer(f"no answer within {timeout:g} s", timed_out=True)

    async def _connection(self) -> _Connection:
        """An idle connection still fit for use, else a new one (`NotSent` if none can be
        made)."""
        now = trio.current_time()
        while self._idle:
            connection = self._idle.pop()  # the most recently used
            if connection.reusable(now):
                return connection
            await trio.aclose_forcefully(connection.stream)
        return await self._connect()

    async def _connect(self) -> _Connection:
        try:
            tcp = await trio.open_tcp_stream(self._host, self._port)
        except OSError as e:
            raise NotSent(f"cannot connect to {self._host}:{self._port}: {e}") from e
        if self._ssl is None:
            return _Connection(tcp, tcp.socket)
        tls = trio.SSLStream(tcp, self._ssl, server_hostname=self._host, https_compatible=True)
        try:
            await tls.do_handshake()
        except trio.BrokenResourceError as e:
            await trio.aclose_forcefully(tls)
            raise NotSent(f"TLS with {self._host}:{self._port} failed: {e.__cause__ or e}") from e
        return _Connection(tls, tcp.socket)

    async def _release(self, connection: _Connection) -> None:
        """Keep `connection` for the next request when both sides are done with this one
        and neither asked to close; else close it."""
        state = connection.h11
        if state.our_state is h11.DONE and state.their_state is h11.DONE and len(self._idle) < MAX_IDLE:
            state.start_next_cycle()
            connection.idle_since = trio.current_time()
            self._idle.append(connection)
        else:
            await trio.aclose_forcefully(connection.stream)

    async def aclose(self) -> None:
        """Close the idle connections."""
        while self._idle:
            await trio.aclose_forcefully(self._idle.pop().stream)


def _encode(state: h11.Connection, request: Request, host: bytes) -> bytes:
    """The request's bytes: head, body and end, to be written at once."""
    body = request.body
    head = [(b"Host", host), *request.headers, (b"Content-Length", b"%d" % len(body))]
    data = state.send(h11.Request(method=request.method, target=request.target, headers=head))
    data = data or b""
    if body:
        data += state.send(h11.Data(data=body)) or b""
    return data + (state.send(h11.EndOfMessage()) or b"")


async def _exchange(connection: _Connection, request: bytes) -> Answer:
    """Write `request` and read its answer (`NoAnswer` if it does not come whole)."""
    state = connection.h11
    response: h11.Response | None = None
    chunks: list[bytes] = []
    try:
        await connection.stream.send_all(request)
        while True:
            event = state.next_event()
            if event is h11.NEED_DATA:
                state.receive_data(bytes(await connection.stream.receive_some(_READ)))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise NoAnswer("the connection closed before the answer was complete")
            # an h11.InformationalResponse (100 Continue) is skipped
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
        raise NoAnswer(f"the connection broke: {e.__cause__ or e}") from e
    except h11.RemoteProtocolError as e:
        raise NoAnswer(f"malformed answer: {e}") from e
    assert response is not None  # h11 yields the head before the body and the end
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in response.headers}
    return Answer(response.status_code, headers, b"".join(chunks))
