"""Mail between nodes: tells and asks for actors whose shard another node owns.

A message for an address this node does not own is appended to the durable mailbox of
the address's shard (a Redis stream). The shard's owner reads its shards' streams as a
consumer group, hands each message to the actor as an ask, and acknowledges (and
deletes) it only once the handler has finished, that is after the turn's commit; mail
that a dead or paused owner had read but not acknowledged is claimed by the shard's
next owner. An ask carries the asker's node, a number and a wall-clock deadline: the
owner answers on the asker's reply stream, and drops an ask whose deadline passed (the
asker has had its `AskTimeout`). Errors travel by class name, so an asker gets the same
typed `Refused`/`DeadLettered` as from a local actor.

Messages cross as msgpack with their type's qualified name, looked up among the message
types of the registered actor kinds; answers are decoded as the request's `R`.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import sys
import typing
from collections.abc import Callable
from typing import Any

import msgspec
import trio

from tidings.engine.asks import Ask
from tidings.engine.clock import WallClock
from tidings.engine.errors import AnswerLost, EngineError
from tidings.engine.messages import Address, Request
from tidings.engine.placement import Placement, ShardMoved
from tidings.engine.store.base import StoreError

log = logging.getLogger("tidings.remote")


class _Mail(msgspec.Struct, array_like=True):
    kind: str
    key: str
    type: str
    msg: msgspec.Raw
    reply_to: str = ""
    ask: int = 0
    deadline: float = 0.0
    origin: str = ""  # the stream id it first had, when it was put back (`_put_back`)


class _Reply(msgspec.Struct, array_like=True):
    ask: int
    value: msgspec.Raw = msgspec.Raw(b"\xc0")  # msgpack nil
    struct: str = ""  # the answer's Struct type, when it is one (unions of them need it)
    error: str = ""
    args: list[Any] = []
    attrs: dict[str, Any] = {}


class _Notice(msgspec.Struct, array_like=True):
    origin: str
    topic: str
    payload: bytes


class _Inbound:
    """Mail from a shard's stream being handled here: where it came from."""

    __slots__ = ("mail", "shard", "ident", "done_key")

    def __init__(self, mail: _Mail, shard: int, ident: str, done_key: str) -> None:
        self.mail = mail
        self.shard = shard
        self.ident = ident
        self.done_key = done_key


_encode = msgspec.msgpack.Encoder().encode
_decode_mail = msgspec.msgpack.Decoder(_Mail).decode
_decode_reply = msgspec.msgpack.Decoder(_Reply).decode
_decode_notice = msgspec.msgpack.Decoder(_Notice).decode


def type_name(t: type[Any]) -> str:
    """The name a message type crosses between nodes by."""
    return f"{t.__module__}.{t.__qualname__}"


def _reply_type(request_type: type[Any]) -> Any:
    """The `R` of a `Request[R]` subclass (Any when it cannot be told)."""
    for klass in request_type.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            if typing.get_origin(base) is Request:
                (answer,) = typing.get_args(base)
                if isinstance(answer, typing.ForwardRef):
                    answer = answer.__forward_arg__
                if isinstance(answer, str):
                    answer = eval(answer, vars(sys.modules[request_type.__module__]))  # noqa: S307
                return answer
    return Any


def _error_classes() -> dict[str, type[EngineError]]:
    found: dict[str, type[EngineError]] = {}
    todo: list[type[EngineError]] = [EngineError]
    while todo:
        cls = todo.pop()
        found[type_name(cls)] = cls
        todo += cls.__subclasses__()
    return found


class RemoteMail:
    """This node's side of mail between nodes (see the module docstring)."""

    def __init__(
        self,
        placement: Placement,
        clock: WallClock,
        types: Callable[[str], type[Any] | None],
        deliver: Callable[[Address, Ask], None],
    ) -> None:
        self.placement = placement
        self.store = placement.store
        self.clock = clock
        self._types = types  # message type by name
        self._deliver = deliver  # to an actor of this node (not routed again)
        self._outgoing: list[tuple[str, bytes]] = []
        self._wake = trio.Event()
        self._pending: dict[int, tuple[Ask, Any]] = {}  # ask number → (ask, answer type)
        # from a random start, so answers left from an earlier run of this node id never
        # match an ask of this run
        self._numbers = itertools.count(secrets.randbits(48))
        self._acks: list[tuple[int, str, tuple[str, bytes] | None]] = []
        self._ack_wake = trio.Event()
        self._in_hand: set[tuple[int, str]] = set()  # (shard, id) of mail being handled
        # asks delivered here from a shard's stream: the mail they came in, its done key
        self.inbound: dict[Ask, _Inbound] = {}
        # mail handed on by `Forward`: (shard, id) it came as, stream and payload it goes on as
        self._passed: list[tuple[int, str, str, bytes]] = []
        self.forwarded = 0  # messages sent to another node's shard
        self.received = 0  # messages taken from this node's shards' streams
        self._nursery: trio.Nursery | None = None
        # best-effort notices to every other node (e.g. web chat frames): topic → listener
        self.listeners: dict[str, Callable[[bytes], None]] = {}
        self._claim: list[int] = []
        self._owned_changed = trio.Event()

    # -- sending -----------------------------------------------------------------------

    def send(self, address: Address, envelope: Any, timeout: float = 10.0) -> None:
        """Send a message, or an `Ask`, to `address` on the node owning its shard. An ask
        that came from another node (handed on by `Forward`) is answered to its asker."""
        ask = envelope if type(envelope) is Ask else None
        msg = ask.msg if ask is not None else envelope
        came = self.inbound.get(ask) if ask is not None else None
        try:
            raw = _encode(msg)
        except (TypeError, msgspec.EncodeError) as exc:
            error = EngineError(f"{type(msg).__name__} cannot be sent to another node: {exc}")
            if ask is not None:
                ask.fail(error)
                return
            raise error from exc
        mail = _Mail(address[0], address[1], type_name(type(msg)), msgspec.Raw(raw))
        shard = self.placement.shard(address)
        stream = self.store.store.shard_key(shard, "mail")
        self.forwarded += 1
        self._wake.set()
        if came is not None and ask is not None:
            first = came.mail
            mail.reply_to, mail.ask, mail.deadline = first.reply_to, first.ask, first.deadline
            self._passed.append((came.shard, came.ident, stream, _encode(mail)))
            ask.fail(_PassedOn())
            return
        if ask is not None:
            number = next(self._numbers)
            self._pending[number] = (ask, _reply_type(type(msg)))
            mail.reply_to, mail.ask = self.placement.node, number
            mail.deadline = self.clock.now() + timeout
        self._outgoing.append((stream, _encode(mail)))

    def notify(self, topic: str, payload: bytes) -> None:
        """Tell every other node's listener of `topic` about `payload` (best effort: a
        node that is down or starting misses it)."""
        notice = _encode(_Notice(self.placement.node, topic, payload))
        self._outgoing.append((self.store.notices_key, notice))
        self._wake.set()

    async def _tail(self, key: str, handle: Callable[[list[tuple[str, bytes]]], None]) -> None:
        """Follow stream `key` from the server's time now on, handing each read's entries
        (id, payload; none when a blocking read timed out) to `handle`; a failed read is
        logged and tried again. The replies to this node's asks and the notices to every
        node are both such tails."""
        after = await self._time_id()
        while True:
            try:
                rows = await self.store.read(key, after, 1000)
            except StoreError as exc:
                log.warning("reading %s failed: %s", key, exc)
                await trio.sleep(0.1)
                continue
            if rows:
                after = rows[-1][0]
            handle(rows)

    def _notices(self, rows: list[tuple[str, bytes]]) -> None:
        for _, payload in rows:
            try:
                notice = _decode_notice(payload)
            except msgspec.DecodeError:
                continue
            listener = self.listeners.get(notice.topic)
            if listener is not None and notice.origin != self.placement.node:
                listener(notice.payload)

    async def _time_id(self) -> str:
        while True:
            try:
                return await self.store.now_id()
            except StoreError as exc:
                log.warning("reading the time failed: %s", exc)
                await trio.sleep(0.1)

    async def _flusher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            items, self._outgoing = self._outgoing, []
            passed, self._passed = self._passed, []
            try:
                await self.store.send(items)
                items = []
                await self.store.pass_on(passed)
            except StoreError as exc:
                log.warning("sending %d messages to other nodes failed: %s", len(items), exc)
                self._outgoing[:0] = items
                self._passed[:0] = passed
                await trio.sleep(0.1)
                self._wake.set()

    def _replies(self, rows: list[tuple[str, bytes]]) -> None:
        for ident, payload in rows:
            try:
                reply = _decode_reply(payload)
            except msgspec.DecodeError as exc:
                log.error("unreadable reply %s dropped: %s", ident, exc)
                continue
            self._answer(reply)
        if len(self._pending) > 1000:
            self._pending = {n: p for n, p in self._pending.items() if not p[0].done}

    def _answer(self, reply: _Reply) -> None:
        found = self._pending.pop(reply.ask, None)
        if found is None or found[0].done:
            return  # answered after its deadline
        ask, answer_type = found
        if reply.error:
            ask.fail(_rebuild(reply))
            return
        try:
            if reply.struct:
                answer_type = _struct_type(reply.struct)
            value = msgspec.msgpack.decode(reply.value, type=answer_type)
        except (msgspec.DecodeError, TypeError, LookupError) as exc:
            ask.fail(EngineError(f"the answer could not be read: {exc}"))
            return
        ask.answer(value)

    # -- receiving ---------------------------------------------------------------------

    def gained(self, shards: list[int]) -> None:
        """`shards` became this node's: their unacknowledged mail is claimed first."""
        self._claim += shards
        self._owned_changed.set()

    def done_key(self, ask: Ask) -> str | None:
        """The key that marks the mail behind `ask` (from a shard's stream) as handled,
        written by `Engine.commit` with the turn's writes, so that mail redelivered after
        its owner died between the commit and the acknowledgement does not act twice."""
        came = self.inbound.get(ask)
        return came.done_key if came is not None else None

    async def _receiver(self) -> None:
        placement = self.placement
        swept = trio.current_time()
        while True:
            try:
                rows: list[tuple[int, str, bytes]] = []
                if trio.current_time() - swept > placement.lease:
                    # mail a node read and then let go of without acknowledging (its
                    # shard moved while the mail was with it): the owner takes it
                    swept = trio.current_time()
                    self._claim = [*placement.owned]
                    idle = int(placement.lease * 2000)
                else:
                    idle = 0  # shards just taken: everything pending is the old owner's
                while self._claim:
                    shard = self._claim.pop()
                    if shard in placement.owned:
                        rows += [(shard, i, p) for i, p in await self.store.claim(shard, idle)]
                shards = [s for s in placement.owned if s not in placement.leaving]
                if not shards and not rows:
                    with trio.move_on_after(placement.lease):
                        await self._owned_changed.wait()
                    self._owned_changed = trio.Event()
                    continue
                rows += await self.store.receive(shards, 200)
                await self._take_all(rows)
            except StoreError as exc:
                log.warning("reading shard mail failed: %s", exc)
                await trio.sleep(0.1)

    async def _take_all(self, rows: list[tuple[int, str, bytes]]) -> None:
        mails: list[tuple[int, str, _Mail]] = []
        for shard, ident, payload in rows:
            if (shard, ident) in self._in_hand:
                continue  # claimed again by a sweep while its handler runs here
            try:
                mails.append((shard, ident, _decode_mail(payload)))
            except msgspec.DecodeError as exc:
                log.error("unreadable mail %s on shard %d dropped: %s", ident, shard, exc)
                self._ack(shard, ident)
        handled = await self.store.handled([(s, m.origin or i) for s, i, m in mails])
        back: list[tuple[int, str, bytes]] = []
        for (shard, ident, mail), done in zip(mails, handled, strict=True):
            if done:  # handled before its owner could answer and acknowledge
                answer = None
                if mail.ask:  # the asker may ask again (see `AnswerLost`)
                    lost = Ask(None)
                    lost.fail(AnswerLost("the node that handled it stopped before answering"))
                    answer = (self.store.replies_key(mail.reply_to), _reply(mail.ask, lost))
                self._ack(shard, ident, answer)
            elif not self.placement.owns((mail.kind, mail.key)):
                # read just before this node let the shard go: back to the stream, for
                # the shard's next owner
                mail.origin = mail.origin or ident
                back.append((shard, ident, _encode(mail)))
            else:
                self._take(shard, ident, mail)
        if back:
            await self.store.put_back(back)

    def _ack(self, shard: int, ident: str, answer: tuple[str, bytes] | None = None) -> None:
        """Acknowledge mail (shard, id), atomically with sending its `answer` (stream,
        payload): an answer is never lost while its mail is acknowledged."""
        self._acks.append((shard, ident, answer))
        self._ack_wake.set()

    async def _acker(self) -> None:
        try:
            while True:
                await self._ack_wake.wait()
                self._ack_wake = trio.Event()
                await self._send_acks()
        finally:
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                await self._send_acks()  # on shutdown: what was handled is not redelivered

    async def _send_acks(self) -> None:
        acks, self._acks = self._acks, []
        if acks:
            try:
                await self.store.done(acks)
            except StoreError as exc:
                log.warning("acknowledging shard mail failed: %s", exc)

    def _take(self, shard: int, ident: str, mail: _Mail) -> None:
        msg_type = self._types(mail.type)
        try:
            if msg_type is None:
                raise EngineError(f"no actor here handles {mail.type}")
            msg = msgspec.msgpack.decode(mail.msg, type=msg_type)
        except (msgspec.DecodeError, EngineError) as exc:
            log.error("unreadable mail %s on shard %d dropped: %s", ident, shard, exc)
            self._ack(shard, ident)
            return
        if mail.ask and self.clock.now() > mail.deadline:
            self._ack(shard, ident)  # the asker stopped waiting
            return
        self.received += 1
        self._in_hand.add((shard, ident))
        ask = Ask(msg)
        self.inbound[ask] = _Inbound(
            mail, shard, ident, self.store.done_key(shard, mail.origin or ident)
        )
        assert self._nursery is not None
        self._nursery.start_soon(self._handled, shard, ident, mail, ask)
        self._deliver((mail.kind, mail.key), ask)

    async def _handled(self, shard: int, ident: str, mail: _Mail, ask: Ask) -> None:
        await ask.wait()
        del self.inbound[ask]
        self._in_hand.discard((shard, ident))
        if type(ask.error) is ShardMoved:
            return  # not handled here: the shard's next owner claims it
        if type(ask.error) is _PassedOn:
            return  # acknowledged with the sending of its copy
        answer = None
        if mail.ask:
            answer = (self.store.replies_key(mail.reply_to), _reply(mail.ask, ask))
        self._ack(shard, ident, answer)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The sender, the receiver of this node's shards and the reader of replies."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._flusher)
            nursery.start_soon(self._acker)
            nursery.start_soon(
                self._tail, self.store.replies_key(self.placement.node), self._replies
            )
            nursery.start_soon(self._tail, self.store.notices_key, self._notices)
            nursery.start_soon(self._receiver)
            task_status.started()


class _PassedOn(EngineError):
    """An ask from another node was handed on (`Forward`) to a third: that one answers."""


def _reply(number: int, ask: Ask) -> bytes:
    error = ask.error
    if error is None:
        value = ask.value
        struct = type_name(type(value)) if isinstance(value, msgspec.Struct) else ""
        try:
            return _encode(_Reply(number, msgspec.Raw(_encode(value)), struct))
        except (TypeError, msgspec.EncodeError) as exc:
            error = EngineError(f"the answer could not be sent back: {exc}")
    try:
        failed = _Reply(number, error=type_name(type(error)), args=list(error.args))
        failed.attrs = vars(error)
        return _encode(failed)
    except (TypeError, msgspec.EncodeError):
        return _encode(_Reply(number, error=type_name(EngineError), args=[str(error)]))


def _struct_type(name: str) -> type[msgspec.Struct]:
    """The Struct type named `name` by `type_name` (LookupError if there is none)."""
    module, _, qualname = name.rpartition(".")
    found: Any = sys.modules.get(module)
    while found is None and "." in module:  # a nested class: the module is shorter
        module, _, outer = module.rpartition(".")
        qualname = f"{outer}.{qualname}"
        found = sys.modules.get(module)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if not (isinstance(found, type) and issubclass(found, msgspec.Struct)):
        raise LookupError(f"no Struct type {name}")
    return found


def _rebuild(reply: _Reply) -> EngineError:
    cls = _error_classes().get(reply.error, EngineError)
    error = cls.__new__(cls)
    error.args = tuple(reply.args)
    error.__dict__.update(reply.attrs)
    if isinstance(error.__dict__.get("address"), list):
        error.__dict__["address"] = tuple(error.__dict__["address"])
    return error
