"""Configuration from the environment: `TIDINGS_<SECTION>__<KEY>` (PROTOCOL.md, Contract v3,
Operations): typed values, precedence file < environment < flags, errors naming the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tidings.transports.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def _file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "tidings.toml"
    path.write_text(text)
    return str(path)


def test_scalars_are_parsed_to_the_type_of_their_key() -> None:
    config = load_config(
        None,
        {},
        {
            "TIDINGS_SERVER__PORT": "9000",
            "TIDINGS_SERVER__ACCESS_LOG": "true",
            "TIDINGS_SMS__AUTH_TOKEN": "s3cret",
            "TIDINGS_TIMING__FOLLOWUP_DELAY_S": "2.5",
            "TIDINGS_ACCOUNT__TIMEZONE": "Europe/Paris",
        },
    )
    assert config.server.port == 9000 and config.server.access_log is True
    assert config.sms.auth_token == "s3cret"
    assert config.timing.followup_delay_s == 2.5
    assert config.account.timezone == "Europe/Paris"


def test_lists_and_tables_are_json() -> None:
    config = load_config(
        None,
        {},
        {
            "TIDINGS_API__KEYS": '["k1", "k2"]',
            "TIDINGS_AGENTS": '[{"id": "a1", "token": "t1", "role": "owner"}, {"id": "a2", "token": "t2"}]',
            "TIDINGS_SETTINGS__QUIET_HOURS": '{"start": "09:00", "end": "18:00"}',
            "TIDINGS_SETTINGS__ATTRIBUTION_WINDOW_S": "3600",
        },
    )
    assert config.api.keys == ["k1", "k2"]
    assert [(a.id, a.name, a.role, a.token) for a in config.agents] == [
        ("a1", "a1", "owner", "t1"),
        ("a2", "a2", "support", "t2"),
    ]
    assert config.settings == {
        "quiet_hours": {"start": "09:00", "end": "18:00"},
        "attribution_window_s": 3600,
    }


def test_environment_overrides_the_file_and_flags_override_both(tmp_path: Path) -> None:
    path = _file(
        tmp_path, '[server]\nport = 7000\nhost = "127.0.0.2"\n[sms]\nauth_token = "file"\n'
    )
    env = {"TIDINGS_SERVER__PORT": "9000", "TIDINGS_SMS__AUTH_TOKEN": "env"}
    config = load_config(path, {"server.port": None}, env)
    assert (config.server.port, config.server.host, config.sms.auth_token) == (
        9000, "127.0.0.2", "env",
    )  # fmt: skip
    assert load_config(path, {"server.port": 9100}, env).server.port == 9100
    # a flag replaces an unusable value of the environment as it replaces the file's
    assert (
        load_config(path, {"server.port": 9100}, {"TIDINGS_SERVER__PORT": "70000"}).server.port
        == 9100
    )


def test_variables_without_a_double_underscore_are_not_config() -> None:
    env = {"TIDINGS_LOG_LEVEL": "DEBUG", "TIDINGS_REQUIRE_REDIS": "1", "OTHER__X": "1"}
    assert load_config(None, {}, env) == load_config(None, {}, {})


def test_the_default_environment_is_the_process_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIDINGS_SERVER__PORT", "9001")
    assert load_config(None, {}).server.port == 9001


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TIDINGS_SERVER__PORT": "abc"}, 'TIDINGS_SERVER__PORT: expected integer, got "abc"'),
        ({"TIDINGS_SERVER__PORT": "70000"}, "TIDINGS_SERVER__PORT: must be between 0 and 65535"),
        (
            {"TIDINGS_SERVER__ACCESS_LOG": "maybe"},
            'TIDINGS_SERVER__ACCESS_LOG: expected true or false, got "maybe"',
        ),
        (
            {"TIDINGS_TIMING__IDLE_TIMEOUT_S": "soon"},
            'TIDINGS_TIMING__IDLE_TIMEOUT_S: expected number, got "soon"',
        ),
        (
            {"TIDINGS_TIMING__IDLE_TIMEOUT_S": "nan"},
            "TIDINGS_TIMING__IDLE_TIMEOUT_S: must be a number of seconds greater than 0",
        ),
        (
            {"TIDINGS_SERVER__COLOUR": "red"},
            "TIDINGS_SERVER__COLOUR: unknown config key server.colour",
        ),
        ({"TIDINGS_NOPE__X": "1"}, "TIDINGS_NOPE__X: unknown config section 'nope'"),
        (
            {"TIDINGS_AGENTS__TOKEN": "t"},
            "TIDINGS_AGENTS__TOKEN: set [[agents]] as a whole: TIDINGS_AGENTS, a JSON list",
        ),
        ({"TIDINGS_API__KEYS": "k1"}, 'TIDINGS_API__KEYS: expected JSON, got "k1"'),
        ({"TIDINGS_API__KEYS": "[1]"}, "TIDINGS_API__KEYS[0]: expected string, got integer"),
        ({"TIDINGS_API__KEYS": '[""]'}, "TIDINGS_API__KEYS[0]: must not be empty"),
        (
            {"TIDINGS_AGENTS": '[{"id": "a", "token": "t", "x": 1}]'},
            "TIDINGS_AGENTS[0].x: unknown key",
        ),
        (
            {"TIDINGS_AGENTS": '[{"id": "a", "token": "t"}, {"id": "b", "token": "t"}]'},
            "TIDINGS_AGENTS[1].token: the same token is given to another agent",
        ),
        (
            {"TIDINGS_SMS__SENDER": "ACME"},
            "TIDINGS_SMS__SENDER: alphanumeric sender IDs cannot receive messages",
        ),
        (
            {"TIDINGS_SERVER__STORE": "ftp://x"},
            "TIDINGS_SERVER__STORE: must be memory://, sqlite:///PATH, redis://HOST:PORT/DB or "
            "redis+cluster://HOST:PORT",
        ),
    ],
)
def test_a_bad_variable_is_a_config_error_naming_it(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {}, env)
    assert str(caught.value) == message


def test_a_file_error_still_names_the_file_key(tmp_path: Path) -> None:
    path = _file(tmp_path, "[server]\nport = 70000\n")
    with pytest.raises(ConfigError, match=r"^server\.port: must be between"):
        load_config(path, {}, {"TIDINGS_SERVER__HOST": "127.0.0.1"})


def test_serve_exits_2_naming_the_variable() -> None:
    env = {"PATH": "/usr/bin:/bin", "TIDINGS_SERVER__PORT": "abc"}
    done = subprocess.run(
        [sys.executable, "-m", "tidings.transports.cli", "serve"],
        capture_output=True, text=True, cwd=ROOT, timeout=30, env=env,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == 'config error: TIDINGS_SERVER__PORT: expected integer, got "abc"'
