"""The HTTP endpoints of PROTOCOL.md: SMS webhooks, short links, `/api/*`, health
and the static pages. Each handler only translates to an `Inbox` call."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

import msgspec
import trio
from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)

from tidings.actors.errors import InboxError
from tidings.actors.inbox import ProfileFields
from tidings.actors.model import Order
from tidings.engine import EngineError
from tidings.engine.store import Store, StoreError
from tidings.transports.twilio_signature import is_valid
from tidings.transports.wire import (
    STATUS,
    Context,
    NotJson,
    bad_text,
    decode_json,
    error_body,
    refuse_bad_text,
    secret_matches,
    validation_error,
)

log = logging.getLogger(__name__)

TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'
MAX_BODY = 1024 * 1024  # bytes of a webhook or API request body
STATIC_DIR = resources.files("tidings.transports") / "static"
Handler = Callable[[Request], Awaitable[Response]]
READY_PROBE_KEY = "readyz"  # never written: reading it costs one index lookup


class _Json(Response):
    """A JSON response encoded with msgspec (results are msgspec Structs)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


def error_response(exc: InboxError) -> Response:
    """`{"error":{"code","detail"}}` with the status of its code (4xx)."""
    status = STATUS.get(exc.code, 503 if exc.code == "unavailable" else 400)
    return _Json({"error": error_body(exc)}, status_code=status)


async def _body(ctx: Context, request: Request) -> bytes:
    """The request body; `timeout` when it takes longer than `limits.body_timeout_s` to
    arrive (a trickled body would otherwise hold its connection for ever)."""
    body = b""
    with trio.move_on_after(ctx.config.limits.body_timeout_s):
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise InboxError("bad_request", "body: too large")
        return body
    raise InboxError("timeout", f"body: not received within {ctx.config.limits.body_timeout_s:g} s")


def _signed_url(ctx: Context, request: Request) -> str:
    """The URL a webhook signature covers: public_url or the request's own address."""
    scope = request.scope
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    return _signed_url_of(
        ctx.config.server.public_url,
        scope.get("scheme", "http"),
        None if scope.get("server") is None else tuple(scope["server"]),
        scope["path"],
        scope.get("query_string", b""),
        host,
    )


@functools.lru_cache(maxsize=256)
def _signed_url_of(
    public_url: str,
    scheme: str,
    server: tuple[str, int | None] | None,
    path: str,
    query_string: bytes,
    host: bytes | None,
) -> str:
    """`_signed_url` of the request with these parts of its scope (`host`: its first Host
    header). Cached: the same few URLs are signed over and over, and parsing one into
    Starlette's `URL` cost ~20 µs a request."""
    headers = [] if host is None else [(b"host", host)]
    scope = {"type": "http", "scheme": scheme, "server": server, "path": path}
    url = URL(scope={**scope, "query_string": query_string, "headers": headers})
    suffix = url.path + (f"?{url.query}" if url.query else "")
    if public_url:
        return public_url + suffix
    return f"{url.scheme}://{'' if host is None else host.decode('latin-1')}{suffix}"


async def _webhook_params(ctx: Context, request: Request) -> dict[str, str] | Response:
    """The form parameters of a Twilio webhook by name, or the 403/400 response refusing it."""
    try:
        body = await _body(ctx, request)
        params = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except InboxError as exc:
        return PlainTextResponse(exc.detail, status_code=STATUS[exc.code])
    except (UnicodeDecodeError, ValueError):
        return PlainTextResponse("bad request", status_code=400)
    form = dict(params)
    if len(form) != len(params):
        # A signature covers every value of a name, but the handler reads one: a repeated
        # name would let a signed "Body=benign" smuggle an unsigned meaning through.
        return PlainTextResponse("a parameter name is repeated", status_code=400)
    if any(bad_text(name) or bad_text(value) for name, value in params):
        try:  # the first offending parameter, named
            for name, value in params:
                refuse_bad_text({name: value})
        except InboxError as exc:
            return PlainTextResponse(exc.detail, status_code=400)
    token = ctx.config.sms.auth_token
    if token:
        signature = request.headers.get("x-twilio-signature")
        if not is_valid(token, _signed_url(ctx, request), params, signature):
            return PlainTextResponse("forbidden", status_code=403)
    return form


async def sms_inbound(ctx: Context, request: Request) -> Response:
    """`POST /sms/inbound`: store the SMS, then answer empty TwiML (R30)."""
    params = await _webhook_params(ctx, request)
    if isinstance(params, Response):
        return params
    sid, phone = params.get("MessageSid", ""), params.get("From", "")
    if not sid or not phone:
        return PlainTextResponse("MessageSid and From are required", status_code=400)
    try:
        count = int(params.get("NumMedia") or 0)
    except ValueError:
        count = 0
    media = [params[f"MediaUrl{i}"] for i in range(min(count, 50)) if params.get(f"MediaUrl{i}")]
    try:
        await ctx.require_inbox().receive_sms(sid, phone, params.get("Body", ""), media)
    except InboxError as exc:
        if exc.code == "unavailable":
            return PlainTextResponse("starting", status_code=503)
        return PlainTextResponse(exc.detail, status_code=STATUS.get(exc.code, 400))
    except EngineError as exc:  # not stored: the provider sends it again, same sid (R30)
        log.warning("sms %s not stored: %r", sid, exc)
        return PlainTextResponse("try again", status_code=503)
    return Response(TWIML_EMPTY, media_type="text/xml")


async def sms_status(ctx: Context, request: Request) -> Response:
    """`POST /sms/status`: a delivery status; unknown ids are ignored."""
    params = await _webhook_params(ctx, request)
    if isinstance(params, Response):
        return params
    sid, status = params.get("MessageSid", ""), params.get("MessageStatus", "")
    # Twilio's ErrorCode is a number; anything else is not a code worth keeping
    code = params.get("ErrorCode", "").strip()
    error_code = code if code.isalnum() and len(code) <= 16 else None
    if sid and status:
        try:
            await ctx.require_inbox().sms_status(sid, status, error_code)
        except InboxError as exc:
            if exc.code == "unavailable":
                return PlainTextResponse("starting", status_code=503)
        except EngineError as exc:  # not recorded: the provider sends it again
            log.warning("status of %s not recorded: %r", sid, exc)
            return PlainTextResponse("try again", status_code=503)
    return Response(b"", status_code=200)


async def short_link(ctx: Context, request: Request) -> Response:
    """`GET /l/{code}`: 302 to the URL (the click is recorded, R17), or 404."""
    code = request.path_params["code"]
    url = await ctx.require_inbox().follow_link(code)
    if url is None:
        return PlainTextResponse("no such link", status_code=404)
    return RedirectResponse(url, status_code=302)


# -- /api/* -----------------------------------------------------------------------------------


class EventBody(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /api/events`."""

    profile: str
    metric: str
    time: str
    properties: dict[str, Any] = msgspec.field(default_factory=dict)


class OrderBody(Order, forbid_unknown_fields=True):
    """`POST /api/orders`: an `Order` and the profile it belongs to."""

    profile: str = ""


class MessageBody(msgspec.Struct, forbid_unknown_fields=True):
    """`POST /api/messages`: a campaign or flow SMS."""

    profile: str
    kind: str
    source_id: str
    source_name: str
    body: str
    media: list[str] = msgspec.field(default_factory=list)


def _authorized(ctx: Context, request: Request) -> bool:
    header = request.headers.get("authorization", "")
    if not header.isascii():  # Starlette decodes headers as Latin-1; keys are ASCII
        return False
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key:
        return False
    return secret_matches(key.strip(), ctx.api_keys) is not None


async def _api_json(ctx: Context, request: Request) -> Any:
    body = await _body(ctx, request)
    try:
        value = decode_json(body)
    except NotJson:
        raise InboxError("bad_request", "body: not JSON") from None
    refuse_bad_text(value)
    return value


def _convert(data: Any, type_: Any) -> Any:
    try:
        return msgspec.convert(data, type=type_)
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from None


async def api_profiles(ctx: Context, data: Any) -> Any:
    """Upsert a profile."""
    if not isinstance(data, dict):
        raise InboxError("bad_request", "body: expected an object")
    _convert(data, ProfileFields)  # refused here, naming the field; the inbox converts it again
    return await ctx.require_inbox().upsert_profile(data)


async def api_events(ctx: Context, data: Any) -> Any:
    """Add an activity item."""
    body: EventBody = _convert(data, EventBody)
    await ctx.require_inbox().add_event(body.profile, body.metric, body.time, body.properties)
    return {"ok": True}


async def api_orders(ctx: Context, data: Any) -> Any:
    """Add an order."""
    body: OrderBody = _convert(data, OrderBody)
    if not body.profile:
        raise InboxError("bad_request", "profile: is required")
    order = Order(body.id, body.items, body.total, body.currency, body.time)
    await ctx.require_inbox().add_order(body.profile, order)
    return {"ok": True}


async def api_messages(ctx: Context, data: Any) -> Any:
    """A campaign or flow SMS from the host platform."""
    body: MessageBody = _convert(data, MessageBody)
    if body.kind not in ("campaign", "flow"):
        raise InboxError("bad_request", "kind: must be campaign or flow")
    return await ctx.require_inbox().send_message(
        body.profile,
        body.kind,
        body.source_id,
        body.source_name,
        body.body,
        body.media,  # type: ignore[arg-type]
    )


API: dict[str, Callable[[Context, Any], Awaitable[Any]]] = {
    "profiles": api_profiles,
    "events": api_events,
    "orders": api_orders,
    "messages": api_messages,
}


async def api(ctx: Context, request: Request) -> Response:
    """`POST /api/{name}` with a bearer key."""
    handler = API.get(request.path_params["name"])
    if handler is None:
        return error_response(InboxError("not_found", "no such endpoint"))
    if not _authorized(ctx, request):
        return _Json(
            {
                "error": {
                    "code": "unauthorized",
                    "detail": "a valid Authorization: Bearer key is needed",
                }
            },
            status_code=401,
        )
    try:
        return _Json(await handler(ctx, await _api_json(ctx, request)))
    except InboxError as exc:
        return error_response(exc)
    except EngineError as exc:  # an ask that timed out, was dead-lettered, or met a stop
        log.warning("api %s: %r", request.path_params["name"], exc)
        return error_response(InboxError("unavailable", f"try again: {type(exc).__name__}"))


# -- health, metrics, pages --------------------------------------------------------------------


async def healthz(ctx: Context, request: Request) -> Response:
    """`200 {"status":"ok"}` while the engine runs."""
    if ctx.inbox is None:
        return JSONResponse({"status": "starting"}, status_code=503)
    return JSONResponse({"status": "ok"})


READY_DEADLINE_S = 2.0  # a store slower than this to answer one read is not ready


async def readyz(ctx: Context, request: Request, store: Store) -> Response:
    """`200 {"status":"ready"}` while the engine runs and `store` answers a read within
    `READY_DEADLINE_S`; else `503 {"status":"unready","error"}`."""
    if ctx.inbox is None:
        return JSONResponse({"status": "unready", "error": "the engine is starting"}, 503)
    placement = ctx.inbox.engine.placement
    if placement is not None and not placement.ready.is_set():
        error = "the node does not hold its shards yet"
        return JSONResponse({"status": "unready", "error": error}, 503)
    error = f"the store did not answer within {READY_DEADLINE_S:g} s"
    with trio.move_on_after(READY_DEADLINE_S):
        try:
            await store.get(READY_PROBE_KEY)
        except StoreError as exc:
            error = str(exc)
        else:
            return JSONResponse({"status": "ready"})
    log.warning("not ready", extra={"error": error})
    return JSONResponse({"status": "unready", "error": error}, status_code=503)


def _static_file(name: str) -> Response:
    if "/" in name or "\\" in name or name.startswith("."):
        return PlainTextResponse("not found", status_code=404)
    entry = STATIC_DIR / name
    if not entry.is_file():
        return PlainTextResponse("not found", status_code=404)
    # Public files; a brand's page on another origin imports the widget module and its
    # imports, which browsers fetch in CORS mode.
    return FileResponse(str(entry), headers={"Access-Control-Allow-Origin": "*"})


async def console_page(ctx: Context, request: Request) -> Response:
    """`GET /`: the agent console."""
    return _static_file("console.html")


async def chat_page(ctx: Context, request: Request) -> Response:
    """`GET /chat`: the demo page with the web chat widget."""
    return _static_file("chat.html")


async def widget_script(ctx: Context, request: Request) -> Response:
    """`GET /widget.js`: the web chat widget, for a brand's page to load with one tag."""
    return _static_file("widget.js")


async def static(ctx: Context, request: Request) -> Response:
    """`GET /static/{name}`."""
    return _static_file(request.path_params["name"])
