"""Behind a reverse proxy every connection comes from the proxy's address, so the
per-address `[limits]` would count all visitors as one. `server.trusted_proxies` names
the proxies whose `X-Forwarded-For` is believed; nobody else's is."""

from __future__ import annotations

import ipaddress

import pytest
from trio_websocket import ConnectionRejected, open_websocket_url

from tests.transports.helpers import make_config, ws_url
from tidings.transports.config import ConfigError, load_config
from tidings.transports.server import running_server
from tidings.transports.wire import client_address

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "counted"),
    [
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),  # not a proxy: its header is ignored
        ("10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.2", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),  # left of it may be forged
        ("10.0.0.2", ["6.6.6.6", "198.51.100.1, 10.0.0.3"], "198.51.100.1"),  # two proxies
        ("fd00::1", ["2001:db8::5"], "2001:db8::5"),
        ("10.0.0.2", [], "10.0.0.2"),  # no header: the proxy itself
        ("10.0.0.2", ["not-an-ip"], "10.0.0.2"),
        ("10.0.0.2", ["10.0.0.4"], "10.0.0.2"),  # only proxies: count the nearest
    ],
)
def test_x_forwarded_for_is_believed_only_from_trusted_proxies(
    peer: str, forwarded: list[str], counted: str
) -> None:
    assert client_address(peer, forwarded, PROXIES) == counted
    assert client_address(peer, forwarded, ()) == peer  # none trusted: always the peer


def test_trusted_proxies_are_validated_as_config() -> None:
    config = load_config(None, {"server.trusted_proxies": ["10.1.2.3", "10.0.0.0/8 ", "::1"]}, {})
    assert config.server.trusted_proxies == ["10.1.2.3/32", "10.0.0.0/8", "::1/128"]
    with pytest.raises(ConfigError) as info:
        load_config(None, {"server.trusted_proxies": ["10.0.0.0/8", "proxy.local"]}, {})
    assert str(info.value) == "server.trusted_proxies[1]: must be an IP address or network (CIDR)"


async def test_connections_per_ip_count_the_forwarded_client_behind_a_trusted_proxy() -> None:
    limits = {"limits.connections_per_ip": 1}
    behind = make_config(**limits, **{"server.trusted_proxies": ["127.0.0.1"]})
    async with running_server(behind) as server:
        url = ws_url(server, "/ws/chat")
        a = [("X-Forwarded-For", "198.51.100.1")]
        b = [("X-Forwarded-For", "198.51.100.2")]
        async with (
            open_websocket_url(url, extra_headers=a),
            open_websocket_url(url, extra_headers=b),
        ):
            with pytest.raises(ConnectionRejected) as info:
                async with open_websocket_url(url, extra_headers=a):
                    pass
            assert info.value.status_code == 429
    async with running_server(make_config(**limits)) as server:  # no proxy trusted
        url = ws_url(server, "/ws/chat")
        async with open_websocket_url(url, extra_headers=a):
            with pytest.raises(ConnectionRejected) as info:
                async with open_websocket_url(url, extra_headers=b):
                    pass
            assert info.value.status_code == 429
