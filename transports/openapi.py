"""`GET /api/openapi.json`: the OpenAPI 3.1 document of `/api/*`.

The schemas are generated from the msgspec structs the endpoints decode and answer
(`msgspec.json.schema_components`); the one table written by hand is `OPERATIONS`, which
names those structs for each `POST /api/{name}` of `http_api.API`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from tidings.actors.inbox import ProfileFields
from tidings.actors.model import Message, Profile
from tidings.transports.http_api import EventBody, MessageBody, OrderBody
from tidings.transports.release import version
from tidings.transports.wire import Context

__all__ = ["OPERATIONS", "document", "openapi_json"]

REF: Final = "#/components/schemas/{name}"


class Ok(msgspec.Struct):
    """`{"ok": true}`: the request was carried out."""

    ok: bool


class ErrorDetail(msgspec.Struct):
    """What went wrong: a code of PROTOCOL.md and a human-readable detail (some codes
    add fields of their own)."""

    code: str
    detail: str


class ErrorResponse(msgspec.Struct):
    """The body of every 4xx and 503 answer of `/api/*`."""

    error: ErrorDetail


@dataclass(frozen=True, slots=True)
class Operation:
    """One `POST /api/{name}`: what it does, the struct of its body and of its answer."""

    summary: str
    body: type[msgspec.Struct]
    answer: type[msgspec.Struct]


OPERATIONS: Final = {
    "profiles": Operation(
        "Create or update a profile, matched by id, else phone, else e-mail",
        ProfileFields,
        Profile,
    ),
    "events": Operation("Add an activity item to a profile", EventBody, Ok),
    "orders": Operation("Add an order to a profile", OrderBody, Ok),
    "messages": Operation("Send a campaign or flow SMS (needs SMS consent)", MessageBody, Message),
}

# Every /api/* operation may answer these (PROTOCOL.md, "HTTP" and the error codes).
_ERRORS: Final = {
    "400": "The body is not JSON or not valid for this operation (`bad_request`)",
    "401": "No valid `Authorization: Bearer <key>` (`unauthorized`)",
    "404": "A record the body names does not exist (`not_found`)",
    "409": "The request conflicts with the record's state (e.g. `not_subscribed`)",
    "503": "The engine is still starting (`unavailable`)",
}


def _json(ref: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref}}}


@functools.cache
def document(release: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `/api/*` of `release`."""
    types: list[Any] = [ErrorResponse]
    for op in OPERATIONS.values():
        types += [op.body, op.answer]
    refs, components = msgspec.json.schema_components(types, ref_template=REF)
    error_ref, *op_refs = refs
    paths: dict[str, Any] = {}
    for i, (name, op) in enumerate(OPERATIONS.items()):
        body_ref, answer_ref = op_refs[2 * i], op_refs[2 * i + 1]
        responses = {"200": _json(answer_ref, "Done")}
        responses |= {code: _json(error_ref, text) for code, text in _ERRORS.items()}
        paths[f"/api/{name}"] = {
            "post": {
                "operationId": name,
                "summary": op.summary,
                "requestBody": {"required": True, "content": {"application/json": {"schema": body_ref}}},
                "responses": responses,
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "tidings /api", "version": release},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


async def openapi_json(ctx: Context, request: Request) -> Response:
    """`GET /api/openapi.json`: the OpenAPI 3.1 document of `/api/*` (no key needed)."""
    return Response(msgspec.json.encode(document(version())), media_type="application/json")
