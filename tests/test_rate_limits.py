"""The in-memory rate limits of the survey pages: what they count by, and what they forget when full."""

from __future__ import annotations

import gc

from starlette.requests import Request

from hub.web.deps import client_address
from hub.web.protection import RateLimiter


def request_from(host: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [], "client": (host, 50000)})


def test_ipv6_clients_are_counted_by_their_64_network() -> None:
    """One subscriber holds a whole /64: rotating through it must not give a fresh limit per address."""
    assert client_address(request_from("2001:db8:1:2::1")) == client_address(
        request_from("2001:db8:1:2:ffff::9")
    )
    assert client_address(request_from("2001:db8:1:2::1")) == "2001:db8:1:2::/64"
    assert client_address(request_from("2001:db8:1:3::1")) != client_address(request_from("2001:db8:1:2::1"))
    assert client_address(request_from("::ffff:192.0.2.7")) == "192.0.2.7"
    assert client_address(request_from("192.0.2.7")) == "192.0.2.7"


def test_ipv4_clients_are_counted_by_their_address_as_written_canonically() -> None:
    """A forwarded address is text a proxy wrote: each canonical IPv4 address is its own key, and text that is
    no address (leading zeros, a part over 255) is counted as the text it is."""
    assert client_address(request_from("203.0.113.255")) == "203.0.113.255"
    assert client_address(request_from("0.0.0.0")) == "0.0.0.0"
    assert client_address(request_from("203.0.113.07")) == "203.0.113.07"
    assert client_address(request_from("203.0.113.256")) == "203.0.113.256"


def test_a_flood_of_new_addresses_does_not_reset_a_limited_client() -> None:
    now = [0.0]
    limiter = RateLimiter(limit=2, window_seconds=60, max_keys=3, clock=lambda: now[0])
    assert limiter.allow("idle-1") and limiter.allow("idle-2")
    now[0] = 90.0
    assert limiter.allow("abuser") and limiter.allow("abuser")
    assert not limiter.allow("abuser")
    now[0] = 100.0
    for number in range(2):  # the table is full: the idle keys, whose window is over, are forgotten first
        assert limiter.allow(f"new-{number}")
    assert not limiter.allow("abuser")
    assert len(limiter.hits) == 3


def test_when_every_key_is_active_the_least_recently_seen_is_forgotten() -> None:
    now = [0.0]
    limiter = RateLimiter(limit=5, window_seconds=60, max_keys=2, clock=lambda: now[0])
    limiter.allow("a")
    now[0] = 1.0
    limiter.allow("b")
    now[0] = 2.0
    limiter.allow("a")  # seen again: now "b" is the least recent
    now[0] = 3.0
    limiter.allow("c")
    assert list(limiter.hits) == ["a", "c"]


def test_the_garbage_collector_walks_one_object_per_client_not_each_remembered_hit() -> None:
    """Every full collection walks every object it tracks and what each refers to: a table whose every hit
    it visited would pause the whole hub each time, longer the more clients a flood brings."""
    now = [0.0]
    limiter = RateLimiter(limit=30, window_seconds=60, clock=lambda: now[0])
    for second in range(40):
        now[0] = float(second)
        for client in range(500):
            limiter.allow(f"10.0.{client // 256}.{client % 256}")
    assert len(limiter.hits) == 500
    walked = gc.get_referents(*limiter.hits.values())
    assert not any(isinstance(each, float) for each in walked)
    assert len(walked) == len(limiter.hits)  # each array refers to its type only
    assert not limiter.allow("10.0.0.1")  # 30 in the last minute: the window still counts
    now[0] = 61.0
    assert limiter.allow("10.0.0.1")  # the hits of seconds 0 and 1 have left the window
