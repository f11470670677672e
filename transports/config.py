"""The engine's TOML configuration file (PROTOCOL.md, "Configuration file"), decoded and
checked into a `Config`.

Every key is optional. A file the engine cannot use raises `ConfigError`, whose text
names the field (`sms.sender: alphanumeric sender IDs cannot receive messages`), which
`tidings serve` prints as `config error: …` before exiting with status 2.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import typing
import zoneinfo
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import msgspec

from tidings.actors.model import EVENT_NAMES
from tidings.transports.mail import parse_smtp_url

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "DEFAULT_STORE",
    "ENV_PREFIX",
    "AccountConfig",
    "AgentConfig",
    "ApiConfig",
    "ChatConfig",
    "Config",
    "ConfigError",
    "EmailConfig",
    "LimitsConfig",
    "ServerConfig",
    "SmsConfig",
    "TimingConfig",
    "WebhookConfig",
    "is_loopback",
    "load_config",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_STORE = "sqlite:///./tidings.db"
ENV_PREFIX = "TIDINGS_"


class ConfigError(Exception):
    """A configuration the engine cannot use; `field_path` is the dotted key
    (`sms.sender`, `agents[1].token`), `reason` says what is wrong with it."""

    def __init__(self, field_path: str, reason: str) -> None:
        super().__init__(f"{field_path}: {reason}" if field_path else reason)
        self.field_path = field_path
        self.reason = reason


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """`[server]`: where the engine listens, its store, its public address, and the
    reverse proxies whose `X-Forwarded-For` names the client (`trusted_proxies`)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    store: str = DEFAULT_STORE
    public_url: str = ""
    access_log: bool = False
    trusted_proxies: list[str] = msgspec.field(default_factory=list)


class ClusterConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """`[cluster]`: several `tidings serve` nodes on one Redis store (ignored on SQLite
    and memory stores, which serve one process). `node` names this node ("" = its host
    name and port); actor keys hash onto `shards`, each held through a lease of `lease`
    seconds."""

    node: str = ""
    shards: int = 256
    lease: float = 5.0


class AccountConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """`[account]`: the brand."""

    name: str = "Acme"
    organization_prefix: str = "Acme"
    timezone: str = "America/New_York"
    logo_url: str = ""
    privacy_url: str = ""
    terms_url: str = ""
    ecommerce: str = ""


class SmsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """`[sms]`: the brand's sender and the outbound SMS provider. `auth_token`, when
    set, also makes inbound webhooks require a valid signature; it is required on a
    non-loopback host unless `allow_unsigned` (anyone could forge a STOP otherwise)."""

    sender: str = ""
    provider: str = "outbox"
    account_sid: str = ""
    # a Twilio Messaging Service ("MG" + 32 hex digits): sent as `MessagingServiceSid`
    # instead of `From`, so the provider picks the sender from the service's pool
    messaging_service_sid: str = ""
    auth_token: str = ""
    base_url: str = "https://api.twilio.com"
    allow_unsigned: bool = False


class EmailConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """`[email]`: the support address (sender of follow-ups; none means no follow-up
    e-mails, R16) and the mail server (`outbox` records instead of sending)."""

    support_address: str = ""
    smtp_url: str = "outbox"


class AgentConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """One `[[agents]]` entry. `name` defaults to `id`; the role is checked by R29
    when the agent connects, not here."""

    id: str = ""
    name: str = ""
    role: str = "support"
    token: str = ""


class ApiConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """`[api]`: bearer keys accepted on `/api/*`."""

    keys: list[str] = msgspec.field(default_factory=list)


class TimingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """`[timing]`: durations in seconds (shorter values are for tests)."""

    followup_delay_s: float = 180.0
    offline_grace_s: float = 10.0
    idle_timeout_s: float = 30.0


class ChatConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """`[chat]`: the web chat widget on the brand's pages. `identity_secret` signs the
    identities the brand's site vouches for ("": no visitor is verified)."""

    identity_secret: str = ""
    allowed_origins: list[str] = msgspec.field(default_factory=list)
    page_url: str = ""


class LimitsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """`[limits]`: what one client address may take (contract v3, "Limits and bad input")."""

    connections_per_ip: int = 50
    new_sessions_per_ip_per_min: int = 30
    body_timeout_s: float = 10.0
    events_kept_days: float = 7.0
    idempotency_kept_days: float = 7.0


class WebhookConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """One `[[webhooks]]` entry: where the host platform takes events, the key that
    signs them, and which events it wants (`[]`: every stored event)."""

    url: str = ""
    secret: str = ""
    events: list[str] = msgspec.field(default_factory=list)


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The whole configuration. `settings` is the raw `[settings]` table, validated
    by the inbox when it seeds the settings object."""

    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    cluster: ClusterConfig = msgspec.field(default_factory=ClusterConfig)
    account: AccountConfig = msgspec.field(default_factory=AccountConfig)
    sms: SmsConfig = msgspec.field(default_factory=SmsConfig)
    email: EmailConfig = msgspec.field(default_factory=EmailConfig)
    agents: list[AgentConfig] = msgspec.field(default_factory=list)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    timing: TimingConfig = msgspec.field(default_factory=TimingConfig)
    chat: ChatConfig = msgspec.field(default_factory=ChatConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    webhooks: list[WebhookConfig] = msgspec.field(default_factory=list)
    settings: dict[str, Any] = msgspec.field(default_factory=dict)

    def public_base(self, bound_port: int | None = None) -> str:
        """The base of public links and of the URLs webhook signatures are checked
        against: `server.public_url`, else `http://host:port`. `bound_port` is the
        port actually bound when `server.port` is 0."""
        if self.server.public_url:
            return self.server.public_url
        host = self.server.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 literal
        port = self.server.port if bound_port is None else bound_port
        return f"http://{host}:{port}"


def load_config(
    path: str | None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read the TOML file at `path` (None: no file, all defaults), apply the
    `TIDINGS_<SECTION>__<KEY>` variables of `environ` (default: `os.environ`), then
    `overrides` (dotted keys such as `"server.port"`; None values are skipped, so
    command-line flags can be passed through as they are), and return the checked
    `Config`. Raises `ConfigError` naming the first field, or the variable, that cannot
    be used."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ConfigError(path, f"cannot read the file: {e.strerror or e}") from None
        try:
            raw = msgspec.toml.decode(data)
        except msgspec.DecodeError as e:
            raise ConfigError(path, f"not valid TOML: {e}") from None
    # dotted key -> the variable that set it, so later checks can name the variable
    origins: dict[str, str] = {}
    for name, dotted, value in _from_environ(os.environ if environ is None else environ):
        _set_dotted(raw, dotted, value)
        origins[dotted] = name
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(raw, dotted, value)
            origins.pop(dotted, None)
    try:
        try:
            config = msgspec.convert(raw, type=Config)
        except msgspec.ValidationError as e:
            raise _translate(e) from None
        return _checked(config)
    except ConfigError as e:
        raise _named_by_variable(e, origins) from None


def _named_by_variable(error: ConfigError, origins: Mapping[str, str]) -> ConfigError:
    """`error` with its field path replaced by the variable that set the field
    (`server.port` -> `TIDINGS_SERVER__PORT`, `api.keys[0]` -> `TIDINGS_API__KEYS[0]`)."""
    for dotted, name in origins.items():
        rest = error.field_path.removeprefix(dotted)
        if rest != error.field_path and rest[:1] in ("", "[", "."):
            return ConfigError(name + rest, error.reason)
    return error


_TABLE_LISTS = ("agents", "webhooks")  # set from the environment as whole JSON lists
_ENV_TYPE_NAMES = {int: "integer", float: "number", bool: "true or false", str: "string"}


def _from_environ(environ: Mapping[str, str]) -> list[tuple[str, str, Any]]:
    """The config values that `environ` sets: `(variable, dotted key, value)`, sorted by
    variable. `TIDINGS_<SECTION>__<KEY>` sets one key (`TIDINGS_AGENTS`,
    `TIDINGS_WEBHOOKS`: the whole `[[agents]]` / `[[webhooks]]` list, as JSON); other
    `TIDINGS_*` variables are not config."""
    sections = typing.get_type_hints(Config)
    found: list[tuple[str, str, Any]] = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        text = environ[name]
        rest = name[len(ENV_PREFIX) :]
        if rest.lower() in _TABLE_LISTS:  # a list of tables has no keys of its own to name
            found.append((name, rest.lower(), _env_value(name, text, sections[rest.lower()])))
            continue
        section, sep, key = rest.partition("__")
        if not sep:
            continue
        section, key = section.lower(), key.lower()
        section_type = sections.get(section)
        if section == "settings":
            # the inbox checks settings; a value that is not JSON is taken as text
            try:
                value: Any = msgspec.json.decode(text)
            except msgspec.DecodeError:
                value = text
            found.append((name, f"settings.{key}", value))
            continue
        if section in _TABLE_LISTS:
            raise ConfigError(
                name, f"set [[{section}]] as a whole: TIDINGS_{section.upper()}, a JSON list"
            )
        if not (isinstance(section_type, type) and issubclass(section_type, msgspec.Struct)):
            raise ConfigError(name, f"unknown config section {section!r}")
        key_type = typing.get_type_hints(section_type).get(key)
        if key_type is None:
            raise ConfigError(name, f"unknown config key {section}.{key}")
        found.append((name, f"{section}.{key}", _env_value(name, text, key_type)))
    return found


def _env_value(name: str, text: str, want: Any) -> Any:
    """`text` parsed as the type `want`: scalars from their usual spelling, lists and
    tables from JSON."""
    if want is str:
        return text
    if want is bool:
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
    elif want is int:
        try:
            return int(text.strip())
        except ValueError:
            pass
    elif want is float:
        try:
            return float(text.strip())
        except ValueError:
            pass
    else:
        try:
            value = msgspec.json.decode(text)
        except msgspec.DecodeError:
            raise ConfigError(name, f"expected JSON, got {_quoted(text)}") from None
        try:
            return msgspec.to_builtins(msgspec.convert(value, type=want))
        except msgspec.ValidationError as e:
            inner = _translate(e)
            where = f"{name}{'.' if inner.field_path[:1] not in ('', '[') else ''}"
            raise ConfigError(where + inner.field_path, inner.reason) from None
    raise ConfigError(name, f"expected {_ENV_TYPE_NAMES[want]}, got {_quoted(text)}")


def _quoted(text: str) -> str:
    return msgspec.json.encode(text).decode()


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *sections, key = dotted.split(".")
    table = raw
    walked: list[str] = []
    for name in sections:
        walked.append(name)
        child = table.setdefault(name, {})
        if not isinstance(child, dict):
            raise ConfigError(".".join(walked), "expected a table")
        table = child
    table[key] = value


_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<key>[^`]*)`(?: - at `\$(?P<at>.*)`)?$")
_EXPECTED = re.compile(
    r"^Expected `(?P<want>[^`]*)`, got `(?P<got>[^`]*)`(?: - at `\$(?P<at>.*)`)?$"
)
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<at>.*)`)?$")
# msgspec names types as JSON does; a TOML user thinks in tables.
_TOML_TYPE = {"object": "table", "str": "string", "int": "integer", "bool": "boolean"}


def _path(at: str | None) -> str:
    return (at or "").lstrip(".")


def _translate(error: msgspec.ValidationError) -> ConfigError:
    """Turn msgspec's `… - at `$.sms.x`` messages into `sms.x: …`."""
    text = str(error)
    if m := _UNKNOWN.match(text):
        base = _path(m["at"])
        return ConfigError(f"{base}.{m['key']}" if base else m["key"], "unknown key")
    if m := _EXPECTED.match(text):
        want = _TOML_TYPE.get(m["want"], m["want"])
        got = _TOML_TYPE.get(m["got"], m["got"])
        return ConfigError(_path(m["at"]), f"expected {want}, got {got}")
    m = _AT.match(text)
    assert m is not None  # the pattern matches any text
    return ConfigError(_path(m["at"]), m["msg"][:1].lower() + m["msg"][1:])


_E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")
_SHORT_CODE = re.compile(r"^[0-9]{5,6}$")
_MESSAGING_SERVICE = re.compile(r"MG[0-9a-fA-F]{32}")  # Twilio's SID pattern
RESERVED_AGENT_IDS = frozenset({"me", "none"})  # words of the tickets.list assignee filter
_STORE_SCHEMES = ("memory://", "sqlite:///", "redis://")


def _http_url(field_path: str, value: str, *, query: bool = False) -> str:
    """An absolute http(s) URL without fragment (and without query unless `query`),
    its trailing slash stripped."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        raise ConfigError(field_path, f"not a valid URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(field_path, "must be an http:// or https:// URL")
    if not query and (parts.query or "?" in value):
        raise ConfigError(field_path, "must not have a query or fragment")
    if parts.fragment or "#" in value:
        raise ConfigError(field_path, "must not have a fragment")
    return value if query else value.rstrip("/")


def _network(field_path: str, value: str) -> str:
    """An IP address or network ("10.0.0.7", "10.0.0.0/8", "fd00::/8"), normalised."""
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ConfigError(field_path, "must be an IP address or network (CIDR)") from None


def _origin(field_path: str, value: str) -> str:
    """A browser origin: `scheme://host[:port]`, nothing after it."""
    url = _http_url(field_path, value)
    if urlsplit(url).path:
        raise ConfigError(field_path, "an origin is scheme://host[:port], without a path")
    return url.lower()


def _check_sender(sender: str) -> None:
    if sender == "" or _E164.match(sender) or _SHORT_CODE.match(sender):
        return
    if any(c.isalpha() for c in sender):
        # R05: such senders cannot receive replies, so they cannot run an inbox.
        raise ConfigError("sms.sender", "alphanumeric sender IDs cannot receive messages")
    raise ConfigError(
        "sms.sender", "must be an E.164 number (+ and 8-15 digits) or a short code (5-6 digits)"
    )


def _check_store(store: str) -> None:
    if store == "memory://":
        return
    if store.startswith("sqlite:///") and len(store) > len("sqlite:///"):
        return
    cluster = store.startswith("redis+cluster://")
    if store.startswith("redis://") or cluster:
        try:
            parts = urlsplit(store)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            parts = None
        if parts is not None and parts.hostname:
            db = parts.path.lstrip("/")
            if db == "" or (db.isdigit() and not cluster):
                return
            if cluster:
                raise ConfigError("server.store", "a Redis Cluster has no database to choose")
            raise ConfigError("server.store", "the Redis database must be a number")
    raise ConfigError(
        "server.store",
        "must be memory://, sqlite:///PATH, redis://HOST:PORT/DB or redis+cluster://HOST:PORT",
    )


def _check_smtp_url(url: str) -> None:
    if url == "outbox":
        return
    if not url.startswith(("smtp://", "smtps://")):
        raise ConfigError("email.smtp_url", 'must be "outbox" or an smtp:// or smtps:// URL')
    try:
        parse_smtp_url(url)
    except ValueError as e:
        raise ConfigError("email.smtp_url", str(e)) from None


def _check_email_address(field_path: str, address: str) -> None:
    local, at, domain = address.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in address):
        raise ConfigError(field_path, "not an e-mail address")


def _check_seconds(field_path: str, value: float) -> None:
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(field_path, "must be a number of seconds greater than 0")


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 maybe in brackets) is this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _checked(config: Config) -> Config:
    """Check values msgspec's types cannot express; return the config with
    normalised values (URLs without trailing slash, agent names filled in)."""
    server = config.server
    if not server.host:
        raise ConfigError("server.host", "must not be empty")
    if not 0 <= server.port <= 65535:
        raise ConfigError("server.port", "must be between 0 and 65535")
    _check_store(server.store)
    cluster = config.cluster
    if not 1 <= cluster.shards <= 16384:
        raise ConfigError("cluster.shards", "must be between 1 and 16384")
    if not 0.2 <= cluster.lease <= 300 or not math.isfinite(cluster.lease):
        raise ConfigError("cluster.lease", "must be between 0.2 and 300 seconds")
    if any(c.isspace() for c in cluster.node) or len(cluster.node) > 200:
        raise ConfigError("cluster.node", "must be at most 200 characters, without spaces")
    if server.public_url:
        server = msgspec.structs.replace(
            server, public_url=_http_url("server.public_url", server.public_url)
        )
    proxies = [
        _network(f"server.trusted_proxies[{i}]", p) for i, p in enumerate(server.trusted_proxies)
    ]
    server = msgspec.structs.replace(server, trusted_proxies=proxies)

    account = config.account
    try:
        zoneinfo.ZoneInfo(account.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError("account.timezone", f"unknown time zone {account.timezone!r}") from None
    if account.ecommerce not in ("", "shopify"):
        raise ConfigError("account.ecommerce", 'must be "" (none) or "shopify"')

    sms = config.sms
    _check_sender(sms.sender)
    if sms.provider not in ("outbox", "twilio"):
        raise ConfigError("sms.provider", 'must be "outbox" or "twilio"')
    if sms.messaging_service_sid and not _MESSAGING_SERVICE.fullmatch(sms.messaging_service_sid):
        raise ConfigError(
            "sms.messaging_service_sid", 'must be "MG" followed by 32 hexadecimal digits'
        )
    if sms.provider == "twilio":
        for key in ("account_sid", "auth_token"):
            if not getattr(sms, key):
                raise ConfigError(f"sms.{key}", 'required when sms.provider is "twilio"')
        if not sms.sender and not sms.messaging_service_sid:
            raise ConfigError(
                "sms.sender",
                'required when sms.provider is "twilio", unless sms.messaging_service_sid is set',
            )
    sms = msgspec.structs.replace(sms, base_url=_http_url("sms.base_url", sms.base_url))
    if not sms.auth_token and not sms.allow_unsigned and not is_loopback(server.host):
        raise ConfigError("sms.auth_token", f"required when listening on {server.host}")

    email = config.email
    if email.support_address:
        _check_email_address("email.support_address", email.support_address)
    _check_smtp_url(email.smtp_url)

    agents: list[AgentConfig] = []
    ids: set[str] = set()
    tokens: set[str] = set()
    for i, agent in enumerate(config.agents):
        where = f"agents[{i}]"
        if not agent.id:
            raise ConfigError(f"{where}.id", "must not be empty")
        if agent.id in ids:
            raise ConfigError(f"{where}.id", f"duplicate agent id {agent.id!r}")
        if agent.id in RESERVED_AGENT_IDS:
            raise ConfigError(f"{where}.id", f"{agent.id!r} is reserved (the tickets.list assignee filter)")
        if not agent.token:
            raise ConfigError(f"{where}.token", "must not be empty")
        if agent.token in tokens:
            raise ConfigError(f"{where}.token", "the same token is given to another agent")
        if not agent.role:
            raise ConfigError(f"{where}.role", "must not be empty")
        ids.add(agent.id)
        tokens.add(agent.token)
        agents.append(agent if agent.name else msgspec.structs.replace(agent, name=agent.id))

    for i, key in enumerate(config.api.keys):
        if not key:
            raise ConfigError(f"api.keys[{i}]", "must not be empty")

    timing = config.timing
    for name in ("followup_delay_s", "offline_grace_s", "idle_timeout_s"):
        _check_seconds(f"timing.{name}", getattr(timing, name))

    chat = config.chat
    origins = [_origin(f"chat.allowed_origins[{i}]", o) for i, o in enumerate(chat.allowed_origins)]
    chat = msgspec.structs.replace(
        chat,
        allowed_origins=origins,
        page_url=_http_url("chat.page_url", chat.page_url) if chat.page_url else "",
    )

    limits = config.limits
    for name in ("connections_per_ip", "new_sessions_per_ip_per_min"):
        if getattr(limits, name) < 1:
            raise ConfigError(f"limits.{name}", "must be 1 or more")
    _check_seconds("limits.body_timeout_s", limits.body_timeout_s)
    if not math.isfinite(limits.events_kept_days) or limits.events_kept_days < 1:
        raise ConfigError("limits.events_kept_days", "must be 1 or more (events are kept 24 h at least)")
    if not math.isfinite(limits.idempotency_kept_days) or limits.idempotency_kept_days < 7:
        raise ConfigError(
            "limits.idempotency_kept_days", "must be 7 or more (a MessageSid is kept 7 days at least)"
        )

    webhooks = [_checked_webhook(f"webhooks[{i}]", hook) for i, hook in enumerate(config.webhooks)]
    urls: set[str] = set()
    for i, hook in enumerate(webhooks):
        if hook.url in urls:
            raise ConfigError(f"webhooks[{i}].url", "the same url is given to another webhook")
        urls.add(hook.url)

    return msgspec.structs.replace(
        config, server=server, sms=sms, agents=agents, chat=chat, webhooks=webhooks
    )


def _checked_webhook(where: str, hook: WebhookConfig) -> WebhookConfig:
    if not hook.url:
        raise ConfigError(f"{where}.url", "required")
    url = _http_url(f"{where}.url", hook.url, query=True)
    if not hook.secret:
        raise ConfigError(f"{where}.secret", "required: every delivery is signed with it")
    for j, name in enumerate(hook.events):
        if name not in EVENT_NAMES:
            known = ", ".join(sorted(EVENT_NAMES))
            raise ConfigError(f"{where}.events[{j}]", f"unknown event {name!r} (known: {known})")
    return msgspec.structs.replace(hook, url=url)
