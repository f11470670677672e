"""The tests' private `redis-server`: the package's own starter (`tidings.bench.redis_server`),
so the tests and the benchmarks start Redis the same way."""

from tidings.bench.redis_server import RedisCluster, RedisServer, free_port

__all__ = ["RedisCluster", "RedisServer", "free_port"]
