"""The configuration file of PROTOCOL.md: defaults, overrides, and refusals that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidings.transports.config import Config, ConfigError, load_config

FULL = """
[server]
host = "0.0.0.0"
port = 9000
store = "redis://127.0.0.1:6379/0"
public_url = "https://support.acme.example/"

[account]
name = "Acme"
organization_prefix = "ACME"
timezone = "Europe/Rome"
logo_url = "https://acme.example/logo.png"
privacy_url = ""
terms_url = ""
ecommerce = "shopify"

[sms]
sender = "+15550001111"
provider = "twilio"
account_sid = "AC123"
auth_token = "secret"
base_url = "http://127.0.0.1:9999/"

[email]
support_address = "support@acme.example"
smtp_url = "smtp://user:pass@mail.acme.example:587"

[[agents]]
id = "a1"
name = "Sam"
role = "support"
token = "t1"

[[agents]]
id = "a2"
role = "analyst"
token = "t2"

[api]
keys = ["k1", "k2"]

[timing]
followup_delay_s = 0.5
offline_grace_s = 1
idle_timeout_s = 2

[settings]
attribution_window_s = 3600
[settings.sms]
shorten_links = false
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "tidings.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def error_of(tmp_path: Path, text: str, overrides: dict[str, object] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), overrides or {})
    return str(info.value)


def test_no_file_gives_the_defaults_of_the_protocol() -> None:
    config = load_config(None, {})
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8080
    assert config.server.store == "sqlite:///./tidings.db"
    assert config.server.public_url == ""
    assert config.sms.provider == "outbox"
    assert config.sms.base_url == "https://api.twilio.com"
    assert config.email.smtp_url == "outbox"
    assert config.account.timezone == "America/New_York"
    assert config.account.ecommerce == ""
    assert config.agents == []
    assert config.api.keys == []
    assert (config.timing.followup_delay_s, config.timing.offline_grace_s) == (180, 10)
    assert config.timing.idle_timeout_s == 30
    assert config.settings == {}
    assert config.public_base() == "http://127.0.0.1:8080"


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), {}) == Config()


def test_full_file_is_read(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL), {})
    assert config.server.port == 9000
    assert config.server.store == "redis://127.0.0.1:6379/0"
    assert config.server.public_url == "https://support.acme.example"  # slash stripped
    assert config.public_base() == "https://support.acme.example"
    assert config.account.ecommerce == "shopify"
    assert config.sms.base_url == "http://127.0.0.1:9999"
    assert [(a.id, a.name, a.role) for a in config.agents] == [
        ("a1", "Sam", "support"),
        ("a2", "a2", "analyst"),  # the name defaults to the id; R29 judges the role later
    ]
    assert config.api.keys == ["k1", "k2"]
    assert config.timing.offline_grace_s == 1.0
    assert config.settings == {"attribution_window_s": 3600, "sms": {"shorten_links": False}}


def test_overrides_win_over_the_file_and_none_is_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nhost = "10.0.0.1"\nport = 9000\n[sms]\nauth_token = "s"\n')
    config = load_config(path, {"server.port": 0, "server.host": None, "server.store": "memory://"})
    assert (config.server.host, config.server.port, config.server.store) == (
        "10.0.0.1",
        0,
        "memory://",
    )
    assert config.public_base(bound_port=41234) == "http://10.0.0.1:41234"


def test_public_base_brackets_an_ipv6_host() -> None:
    config = load_config(None, {"server.host": "::1", "server.port": 8081})
    assert config.public_base() == "http://[::1]:8081"


@pytest.mark.parametrize("sender", ["ACME", "Acme Shop", "Acme1", "ACME-SUPPORT"])
def test_r05_alphanumeric_sender_is_refused(tmp_path: Path, sender: str) -> None:
    assert (
        error_of(tmp_path, f'[sms]\nsender = "{sender}"\n')
        == "sms.sender: alphanumeric sender IDs cannot receive messages"
    )


@pytest.mark.parametrize(
    "sender", ["+15550001111", "+393331234567", "+12345678", "12345", "123456", ""]
)
def test_r05_numbers_and_short_codes_are_accepted(sender: str) -> None:
    assert load_config(None, {"sms.sender": sender}).sms.sender == sender


@pytest.mark.parametrize(
    "sender",
    ["15550001111", "+1234567", "+1234567890123456", "1234", "+0123456789", "+1 555 000 1111"],
)
def test_sender_that_is_neither_e164_nor_short_code_is_refused(sender: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {"sms.sender": sender})
    assert info.value.field_path == "sms.sender"
    assert "E.164" in info.value.reason


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("colour = 1\n", "colour: unknown key"),
        ('[sms]\nx = "y"\n', "sms.x: unknown key"),
        ("[server]\nport = 1\n[server.extra]\na = 1\n", "server.extra: unknown key"),
        ('[[agents]]\nid = "a"\ntoken = "t"\nrank = 1\n', "agents[0].rank: unknown key"),
        ("[timing]\nsnooze_s = 1\n", "timing.snooze_s: unknown key"),
    ],
)
def test_unknown_key_is_refused_naming_it(tmp_path: Path, text: str, expected: str) -> None:
    assert error_of(tmp_path, text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[server]\nport = "8080"\n', "server.port: expected integer, got string"),
        ("[server]\nport = true\n", "server.port: expected integer, got boolean"),
        ("server = 3\n", "server: expected table, got integer"),
        ('[timing]\nidle_timeout_s = "30"\n', "timing.idle_timeout_s: expected float, got string"),
        ('[api]\nkeys = "k"\n', "api.keys: expected array, got string"),
        ("[api]\nkeys = [1]\n", "api.keys[0]: expected string, got integer"),
        ('[[agents]]\nid = 7\ntoken = "t"\n', "agents[0].id: expected string, got integer"),
        ("settings = 1\n", "settings: expected table, got integer"),
    ],
)
def test_wrong_type_is_refused_naming_the_field(tmp_path: Path, text: str, expected: str) -> None:
    assert error_of(tmp_path, text) == expected


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[server]\nport = 65536\n", "server.port"),
        ("[server]\nport = -1\n", "server.port"),
        ('[server]\nhost = ""\n', "server.host"),
        ('[server]\nstore = "postgres://x"\n', "server.store"),
        ('[server]\nstore = "sqlite:///"\n', "server.store"),
        ('[server]\nstore = "redis://"\n', "server.store"),
        ('[server]\nstore = "redis://h:6379/zero"\n', "server.store"),
        ('[server]\npublic_url = "support.acme.example"\n', "server.public_url"),
        ('[server]\npublic_url = "ftp://acme.example"\n', "server.public_url"),
        ('[server]\npublic_url = "https://acme.example/?a=1"\n', "server.public_url"),
        ('[account]\ntimezone = "Mars/Olympus"\n', "account.timezone"),
        ('[account]\ntimezone = ""\n', "account.timezone"),
        ('[account]\necommerce = "woocommerce"\n', "account.ecommerce"),
        ('[sms]\nprovider = "nexmo"\n', "sms.provider"),
        (
            '[sms]\nprovider = "twilio"\nsender = "+15550001111"\nauth_token = "x"\n',
            "sms.account_sid",
        ),
        (
            '[sms]\nprovider = "twilio"\nsender = "+15550001111"\naccount_sid = "AC1"\n',
            "sms.auth_token",
        ),
        ('[sms]\nprovider = "twilio"\naccount_sid = "AC1"\nauth_token = "x"\n', "sms.sender"),
        ('[sms]\nbase_url = "api.twilio.com"\n', "sms.base_url"),
        ('[email]\nsmtp_url = "http://mail"\n', "email.smtp_url"),
        ('[email]\nsmtp_url = "smtp://"\n', "email.smtp_url"),
        ('[email]\nsmtp_url = "smtp://h:notaport"\n', "email.smtp_url"),
        ('[email]\nsmtp_url = "smtp://h?tls=1"\n', "email.smtp_url"),
        ('[email]\nsupport_address = "support"\n', "email.support_address"),
        ('[[agents]]\nid = ""\ntoken = "t"\n', "agents[0].id"),
        ('[[agents]]\nid = "a"\n', "agents[0].token"),
        ('[[agents]]\nid = "a"\ntoken = "t"\n[[agents]]\nid = "a"\ntoken = "u"\n', "agents[1].id"),
        (
            '[[agents]]\nid = "a"\ntoken = "t"\n[[agents]]\nid = "b"\ntoken = "t"\n',
            "agents[1].token",
        ),
        ('[api]\nkeys = ["k", ""]\n', "api.keys[1]"),
        ("[timing]\nfollowup_delay_s = 0\n", "timing.followup_delay_s"),
        ("[timing]\noffline_grace_s = -1\n", "timing.offline_grace_s"),
        ("[timing]\nidle_timeout_s = inf\n", "timing.idle_timeout_s"),
        ("[timing]\nidle_timeout_s = nan\n", "timing.idle_timeout_s"),
    ],
)
def test_bad_value_is_refused_naming_the_field(tmp_path: Path, text: str, field: str) -> None:
    message = error_of(tmp_path, text)
    assert message.startswith(f"{field}: "), message
    assert "\n" not in message


@pytest.mark.parametrize(
    "store",
    [
        "memory://",
        "sqlite:///./tidings.db",
        "sqlite:////var/lib/t.db",
        "redis://127.0.0.1:6379/0",
        "redis://redis",
    ],
)
def test_store_urls_of_the_protocol_are_accepted(store: str) -> None:
    assert load_config(None, {"server.store": store}).server.store == store


@pytest.mark.parametrize(
    "url",
    [
        "outbox",
        "smtp://127.0.0.1:2525",
        "smtps://u:p@mail.example",
        "smtp://u%40x:p%3A@h:25",
        "smtp://h:587?starttls=true",
    ],
)
def test_smtp_urls_are_accepted(url: str) -> None:
    assert load_config(None, {"email.smtp_url": url}).email.smtp_url == url


def test_port_zero_means_any_free_port() -> None:
    assert load_config(None, {"server.port": 0}).server.port == 0


def test_missing_file_is_refused_naming_it(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert info.value.field_path == path


def test_invalid_toml_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[server\nport = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert str(info.value).startswith(f"{path}: not valid TOML")


def test_override_under_a_non_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "server = 1\n"), {"server.port": 1})
    assert str(info.value) == "server: expected a table"


def test_config_error_text_is_field_then_reason() -> None:
    error = ConfigError("sms.sender", "alphanumeric sender IDs cannot receive messages")
    assert str(error) == "sms.sender: alphanumeric sender IDs cannot receive messages"
    assert (error.field_path, error.reason) == (
        "sms.sender",
        "alphanumeric sender IDs cannot receive messages",
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[cluster]\nshards = 0\n", "cluster.shards: must be between 1 and 16384"),
        ("[cluster]\nlease = 0.05\n", "cluster.lease: must be between 0.2 and 300 seconds"),
        ("[cluster]\nlease = nan\n", "cluster.lease: must be between 0.2 and 300 seconds"),
        ('[cluster]\nnode = "a b"\n', "cluster.node: must be at most 200 characters, without spaces"),
    ],
)
def test_cluster_values_out_of_range_are_refused_naming_them(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert error_of(tmp_path, text) == expected


def test_node_flag_names_the_cluster_node() -> None:
    assert load_config(None, {"cluster.node": "tidings-2"}).cluster.node == "tidings-2"
