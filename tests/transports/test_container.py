"""The container (Dockerfile, compose.yaml). No container runtime runs these tests: the
image's CMD and HEALTHCHECK are read from the Dockerfile and run as they are, with the
`tidings` and `python` of this test's environment, as the image would run them."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx

from tests.redis_server import free_port
from tests.transports.serve_process import ROOT, child_env, serving
from tidings.transports.config import load_config

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    found = []
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def _one(word: str) -> str:
    (value,) = [rest for name, rest in _instructions() if name == word]
    return value


def _image_env(data: Path) -> dict[str, str]:
    """The ENV of the image, with the volume /data at `data`."""
    env: dict[str, str] = {}
    for name, rest in _instructions():
        if name == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(rest))
    return {k: v.replace("/data", str(data)) for k, v in env.items()}


def _healthcheck() -> list[str]:
    options, _, command = _one("HEALTHCHECK").partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    argv: list[str] = json.loads(command)
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


def _probe(env: dict[str, str]) -> int:
    return subprocess.run(_healthcheck(), env=env, capture_output=True, timeout=30).returncode


def test_the_image_is_slim_runs_as_a_user_and_keeps_its_store_on_the_volume() -> None:
    assert _one("FROM") == "python:3.11-slim"
    user = _one("USER")
    assert user not in ("root", "0") and user
    assert _one("EXPOSE") == "8080"
    assert json.loads(_one("VOLUME")) == ["/data"]
    assert "pip install ." in DOCKERFILE
    env = _image_env(Path("/data"))
    assert env["TIDINGS_SERVER__STORE"] == "sqlite:////data/tidings.db"
    assert json.loads(_one("CMD")) == ["tidings", "serve", "--host", "0.0.0.0"]


async def test_the_image_command_serves_and_its_healthcheck_follows_readiness(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    env = child_env(
        {**_image_env(data), "TIDINGS_SERVER__PORT": str(port), "TIDINGS_SMS__AUTH_TOKEN": "s"}
    )
    tidings, *args = json.loads(_one("CMD"))
    command = [str(Path(sys.executable).parent / tidings), *args]
    async with serving(command, env) as served:
        assert served.base == f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{served.base}/readyz")).json() == {"status": "ready"}
        assert _probe(env) == 0
    assert (data / "tidings.db").is_file()  # the store is on the volume
    assert _probe(env) == 1  # nothing answers any more


def test_the_image_command_refuses_to_serve_unsigned_webhooks(tmp_path: Path) -> None:
    env = child_env({**_image_env(tmp_path), "TIDINGS_SERVER__PORT": str(free_port())})
    tidings, *args = json.loads(_one("CMD"))
    command = [str(Path(sys.executable).parent / tidings), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr == "config error: sms.auth_token: required when listening on 0.0.0.0\n"


def test_the_compose_environment_is_a_valid_redis_config() -> None:
    compose = (ROOT / "compose.yaml").read_text()
    assert '"--appendonly", "yes"' in compose
    block = compose.split("  environment: &tidings-env\n", 1)[1]  # every node's
    env = {}
    for line in block.splitlines():
        if not line.startswith("    "):
            break
        name, _, value = line.strip().partition(": ")
        # ${NAME:-default} as compose resolves it with NAME unset; ${NAME:?why} is required
        required = re.fullmatch(r"\$\{([A-Z_]+):\?[^}]*\}", value)
        if required:
            assert required[1] == "TIDINGS_SMS__AUTH_TOKEN"  # the only one a user must set
            value = "token-from-env"
        value = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value).strip('"')
        env[name] = value
    config = load_config(None, {"server.host": "0.0.0.0"}, env)
    assert config.server.store == "redis://redis:6379/0"
    assert config.server.access_log is True
    assert config.server.public_url == "http://localhost:8080"
    assert config.sms.auth_token == "token-from-env" and config.api.keys == []


def test_tzdata_is_a_dependency_everywhere() -> None:
    import importlib.metadata
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "tzdata" in project["dependencies"]  # no platform marker: slim images lack zones
    assert "tzdata" in (importlib.metadata.requires("tidings") or [])


def test_compose_runs_three_named_nodes_behind_the_balancer() -> None:
    compose = (ROOT / "compose.yaml").read_text()
    balancer = (ROOT / "deploy" / "nginx.conf").read_text()
    nodes = re.findall(r"^  (tidings-\d):\n    <<: \*tidings\n", compose, re.MULTILINE)
    assert nodes == ["tidings-1", "tidings-2", "tidings-3"]
    for node in nodes:
        assert f"TIDINGS_CLUSTER__NODE: {node}\n" in compose  # a stable name: its shards back
        assert f"server {node}:8080" in balancer
    assert "proxy_set_header Upgrade $http_upgrade;" in balancer  # WebSockets pass
