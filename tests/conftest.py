"""Shared pytest fixtures. Each block below belongs to one area; keep them delimited."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.redis_server import RedisCluster, RedisServer

# --- redis: a private redis-server for the store tests -------------------------------
# Never points at a server it did not start (the machine's own server on 6379 included).


def _need_redis_server() -> None:
    """Skip when redis-server is not on PATH, unless TIDINGS_REQUIRE_REDIS=1 (then fail)."""
    if shutil.which("redis-server") is None:
        message = "redis-server is not on PATH"
        if os.environ.get("TIDINGS_REQUIRE_REDIS") == "1":
            pytest.fail(message + " and TIDINGS_REQUIRE_REDIS=1")
        pytest.skip(message)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server started for this test session (AOF, appendfsync always), then killed.

    Skips when redis-server is not on PATH, unless TIDINGS_REQUIRE_REDIS=1 (then fails).
    """
    _need_redis_server()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the session's private redis-server, flushed empty for this test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A Redis Cluster of three private masters for this test session, then killed;
    skips or fails as `redis_server` does."""
    _need_redis_server()
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisCluster) -> str:
    """The ``redis+cluster://`` URL of the session's private cluster, flushed empty."""
    redis_cluster.flush()
    return redis_cluster.url


# --- end of redis block ---------------------------------------------------------------
