"""The `X-Twilio-Signature` of a Twilio-style webhook (PROTOCOL.md, `/sms/inbound`).

The signature is base64(HMAC-SHA1(auth token, URL + each parameter name and value)),
the parameters sorted by name. A name given several times contributes each of its
distinct values, sorted — the order Twilio's own helper libraries use, so that a
signature does not depend on the order a form encoder wrote repeated keys in.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable
from urllib.parse import urlparse

__all__ = ["SIGNATURE_HEADER", "Params", "compute_signature", "is_valid"]

SIGNATURE_HEADER = "X-Twilio-Signature"


@runtime_checkable
class _MultiMapping(Protocol):
    """A mapping that can hold several values per key (Starlette's FormData,
    multidict's MultiDict, Werkzeug's MultiDict)."""

    def multi_items(self) -> Iterable[tuple[str, str]]: ...


# Accepted shapes: (name, value) pairs in any order; a multi-valued mapping such as
# Starlette's FormData; or a plain mapping whose values are strings or lists of strings.
Params = Iterable[tuple[str, str]] | Mapping[str, str] | Mapping[str, list[str]] | None


def _pairs(params: Params) -> list[tuple[str, str]]:
    if params is None:
        return []
    if isinstance(params, list):  # pairs, as parse_qsl gives them: checked first, since
        return params  # the runtime Protocol check below costs ~20 µs a request
    if isinstance(params, _MultiMapping):
        return [(k, v) for k, v in params.multi_items()]
    # multidict's MultiDict has getall; Werkzeug's MultiDict and Django's QueryDict getlist.
    getall = getattr(params, "getall", None) or getattr(params, "getlist", None)
    if isinstance(params, Mapping):
        pairs: list[tuple[str, str]] = []
        for name in params:
            values = getall(name) if getall is not None else params[name]
            if isinstance(values, str):
                pairs.append((name, values))
            else:
                pairs.extend((name, v) for v in values)
        return pairs
    return [(k, v) for k, v in params]


def _signed_text(url: str, params: Params) -> str:
    by_name: dict[str, set[str]] = {}
    for name, value in _pairs(params):
        by_name.setdefault(name, set()).add(value)
    # Python's str ordering is code point order, the same as the byte order of UTF-8
    # that Twilio's "case-sensitive Unix sort" means.
    parts = [url]
    for name in sorted(by_name):
        for value in sorted(by_name[name]):
            parts.append(name)
            parts.append(value)
    return "".join(parts)


def compute_signature(auth_token: str, url: str, params: Params) -> str:
    """The signature Twilio sends for a request to `url` (scheme, host, path and query,
    exactly as requested) with form `params`."""
    mac = hmac.digest(auth_token.encode(), _signed_text(url, params).encode(), hashlib.sha1)
    return base64.b64encode(mac).decode("ascii")


@functools.lru_cache(maxsize=64)
def _url_variants(url: str) -> tuple[str, ...]:
    """`url` as given, and without / with the port, each once: Twilio signs some
    requests with the default port in the URL and some without, so both are accepted (as
    Twilio's own RequestValidator does). Cached: a server is called at one or two URLs."""
    try:
        parsed = urlparse(url)
        port = parsed.port
    except ValueError:
        return (url,)
    variants = [url]
    netloc = parsed.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if port is not None:
        host = hostport[: hostport.rfind(":")]
        variants.append(parsed._replace(netloc=f"{userinfo}{at}{host}").geturl())
        variants.append(parsed.geturl())
    else:
        default = 443 if parsed.scheme == "https" else 80
        variants.append(parsed.geturl())
        variants.append(parsed._replace(netloc=f"{netloc}:{default}").geturl())
    return tuple(dict.fromkeys(variants))


def is_valid(auth_token: str, url: str, params: Params, signature: str | None) -> bool:
    """Whether `signature` (the `X-Twilio-Signature` header; None when missing) was made
    with `auth_token` for this URL and these form parameters. Compared in constant time."""
    if not signature:
        return False
    given = signature.strip().encode()
    key = auth_token.encode()
    text_tail = _signed_text("", params)
    valid = False
    for variant in _url_variants(url):
        expected = base64.b64encode(hmac.digest(key, (variant + text_tail).encode(), hashlib.sha1))
        # Every variant is compared, so the time taken does not say which one matched.
        valid |= hmac.compare_digest(expected, given)
    return valid
