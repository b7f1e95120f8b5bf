"""``X-Twilio-Signature``: how the provider signs the requests it makes to the hub, and how we check them.

The signature is base64(HMAC-SHA1(auth token, URL + each POST parameter's name and value, sorted by name)),
over the URL the provider called: the hub's public URL, not the address a proxy forwarded to. Anyone can
post to the inbound URL, so nothing is read from a request before its signature checks out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

DEFAULT_PORTS = {"https": 443, "http": 80}


def compute(token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """The signature of a POST to ``url`` with the form ``params`` (a name may repeat: each value counts)."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def url_variants(url: str) -> list[str]:
    """``url`` as given, and with its default port added or removed: the provider signs the URL as it was
    configured, and a hub's public_url may or may not spell out ``:443``."""
    parts = urlsplit(url)
    default = DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    if parts.username or default is None:
        return [url]
    if parts.port is None:
        other = parts._replace(netloc=f"{host}:{default}")
    elif parts.port == default:
        other = parts._replace(netloc=host)
    else:
        return [url]
    return [url, urlunsplit(other)]


def valid(token: str, url: str, params: list[tuple[str, str]], signature: str | None) -> bool:
    """Whether ``signature`` is the provider's for this request, compared in constant time."""
    if not signature:
        return False
    given = signature.strip().encode("ascii", "replace")
    results = [
        hmac.compare_digest(compute(token, u, params).encode("ascii"), given) for u in url_variants(url)
    ]
    return any(results)
