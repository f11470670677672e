"""Operations (PROTOCOL.md, Contract v3): stable demo credentials, `tidings --version`,
`/readyz`, the access log."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.redis_server import RedisServer
from tests.transports.conftest import make_config
from tests.transports.serve_process import ROOT, SERVE, child_env, serving
from tidings.engine.store import open_store
from tidings.engine.store.sqlite import SqliteStore
from tidings.transports import cli
from tidings.transports.config import load_config
from tidings.transports.server import DEMO_CREDENTIALS_KEY, demo_credentials, running_server

DEMO = ("demo agent token", "api key")


# -- stable demo credentials ------------------------------------------------------------------


async def _profile_status(base: str, key: str) -> int:
    async with httpx.AsyncClient() as client:
        r = await client.post(
            f"{base}/api/profiles",
            json={"phone": "+15551234567"},
            headers={"Authorization": f"Bearer {key}"},
        )
    return r.status_code


async def test_demo_credentials_are_kept_in_a_sqlite_store_across_starts(tmp_path: Path) -> None:
    command = [*SERVE, "--port", "0", "--store", f"sqlite:///{tmp_path / 'tidings.db'}"]
    seen = []
    for _ in range(2):
        async with serving(command, child_env(), until=DEMO) as served:
            seen.append((served.lines["demo agent token"], served.lines["api key"]))
            assert await _profile_status(served.base, served.lines["api key"]) == 200
    assert seen[0] == seen[1]
    assert len(seen[0][0]) >= 20 and len(seen[0][1]) >= 20 and seen[0][0] != seen[0][1]


async def test_a_memory_store_makes_fresh_demo_credentials(tmp_path: Path) -> None:
    command = [*SERVE, "--port", "0", "--store", "memory://"]
    seen = []
    for _ in range(2):
        async with serving(command, child_env(), until=DEMO) as served:
            seen.append((served.lines["demo agent token"], served.lines["api key"]))
    assert seen[0][0] != seen[1][0] and seen[0][1] != seen[1][1]


async def test_only_the_missing_credential_is_made_and_the_kept_one_survives() -> None:
    store = await open_store("memory://")
    try:
        with_agents = load_config(None, {}, {"TIDINGS_AGENTS": '[{"id": "a", "token": "t"}]'})
        config, token, key = await demo_credentials(with_agents, store)
        assert token is None and key is not None
        assert config.api.keys == [key] and [a.id for a in config.agents] == ["a"]
        config, token2, key2 = await demo_credentials(load_config(None, {}, {}), store)
        assert key2 == key and token2 is not None
        assert [(a.id, a.role, a.token) for a in config.agents] == [("demo", "owner", token2)]
        assert json.loads(await store.get(DEMO_CREDENTIALS_KEY) or b"") == {
            "token": token2,
            "api_key": key,
        }
        configured = load_config(
            None,
            {},
            {"TIDINGS_API__KEYS": '["k"]', "TIDINGS_AGENTS": '[{"id": "a", "token": "t"}]'},
        )
        assert await demo_credentials(configured, store) == (configured, None, None)
    finally:
        await store.aclose()


# -- version -----------------------------------------------------------------------------------


def test_version_names_the_installed_release() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tidings.transports.cli", "--version"],
        capture_output=True, text=True, cwd=ROOT, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0
    assert done.stdout == f"tidings {importlib.metadata.version('tidings')}\n"


def test_version_falls_back_to_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import tidings

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert cli.version() == tidings.__version__


# -- /readyz -----------------------------------------------------------------------------------


async def _readyz(base: str) -> tuple[int, dict[str, str]]:
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(f"{base}/readyz")
    return r.status_code, r.json()


async def test_readyz_is_503_once_the_sqlite_store_is_closed(tmp_path: Path) -> None:
    store = await SqliteStore(tmp_path / "ready.db").open()
    async with running_server(make_config(), store=store) as running:
        assert await _readyz(running.base_url) == (200, {"status": "ready"})
        await store.aclose()
        assert await _readyz(running.base_url) == (
            503, {"status": "unready", "error": "store is closed"},
        )  # fmt: skip
        async with httpx.AsyncClient() as client:  # the process itself still runs
            assert (await client.get(f"{running.base_url}/healthz")).status_code == 200


@pytest.fixture
def own_redis(tmp_path: Path, redis_server: RedisServer) -> RedisServer:
    """A redis-server of this test alone, which it may stop (`redis_server` only makes the
    test skip or fail as the other Redis tests do when redis-server is missing)."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    return server


async def test_readyz_is_503_while_redis_is_down(own_redis: RedisServer) -> None:
    try:
        async with running_server(make_config(**{"server.store": own_redis.url})) as running:
            assert await _readyz(running.base_url) == (200, {"status": "ready"})
            own_redis.stop()
            status, body = await _readyz(running.base_url)
            assert status == 503 and body["status"] == "unready" and body["error"]
            own_redis.start()  # same port and directory: the client connects again
            assert await _readyz(running.base_url) == (200, {"status": "ready"})
    finally:
        own_redis.stop()


# -- access log --------------------------------------------------------------------------------


async def test_access_log_is_one_json_line_per_request_without_secrets(tmp_path: Path) -> None:
    env = child_env({"TIDINGS_SERVER__ACCESS_LOG": "true", "TIDINGS_API__KEYS": '["sekrit-key"]'})
    command = [*SERVE, "--port", "0", "--store", "memory://"]
    async with serving(command, env, stderr=subprocess.PIPE) as served:
        async with httpx.AsyncClient() as client:
            await client.get(f"{served.base}/healthz?token=sekrit-query")
            await client.post(
                f"{served.base}/api/profiles",
                json={"phone": "+15551234567"},
                headers={"Authorization": "Bearer sekrit-key"},
            )
            await client.get(f"{served.base}/no-such-page")
    stderr = b""
    assert served.process.stderr is not None
    while chunk := await served.process.stderr.receive_some(65536):
        stderr += chunk
    text = stderr.decode()
    assert "sekrit" not in text
    access = [json.loads(line) for line in text.splitlines() if '"tidings.access"' in line]
    assert [(a["method"], a["path"], a["status"]) for a in access] == [
        ("GET", "/healthz", 200),
        ("POST", "/api/profiles", 200),
        ("GET", "/no-such-page", 404),
    ]
    for line in access:
        assert line["level"] == "info" and line["remote"].startswith("127.0.0.1:")
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0


async def test_access_log_is_off_by_default(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tidings.access")
    async with running_server(make_config()) as running:
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{running.base_url}/healthz")).status_code == 200
    assert [r for r in caplog.records if r.name == "tidings.access"] == []
