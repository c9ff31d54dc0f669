"""The site a request is for: the scheme and host the client used, as the origin is told
them (``X-Forwarded-Proto``, ``X-Forwarded-Host``) and as the cache key holds them. Pure.

Origins build absolute URLs from the forwarded host and scheme (Rails by default, Django
with ``USE_X_FORWARDED_HOST``, most frameworks behind a proxy), so a response may depend
on them. Both are therefore part of every cache key, and the origin is sent exactly the
normalised values the key holds: a request for ``evil.example`` can only fill
``evil.example``'s entries.

Invariants:
- The host is the request target's authority for an absolute-form target (RFC 9112
  section 3.2.2), else the ``Host`` field; its syntax is RFC 3986's (a reg-name of at
  most 253 characters, as a DNS name, or an IP literal; then an optional port); anything
  else, two ``Host`` lines (which gunicorn joins with a comma) or an HTTP/1.1 request
  without one is ``None``: a 400.
- Normalised as RFC 3986 section 6.2.3 allows: the name lower-cased, an empty or default
  port (80 for http, 443 for https) dropped. Nothing else is changed.
- The scheme is ``http`` or ``https``: the one the trusted proxy in front reports in
  ``X-Forwarded-Proto`` (its last value, when ``WSGI_PROXY_TRUSTED_PROXIES`` is above 0),
  else the connection's own.
- ``is_allowed``: with no allow-list every host is; a pattern is a host name or IP literal
  (any port), ``.example.com`` (that name and every name under it) or ``*.example.com``
  (the names under it only), as nginx's ``server_name`` reads them, or ``*`` (any host).
"""

from __future__ import annotations

import functools
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

SCHEMES = ("http", "https")
MAX_NAME = 253  # characters of a DNS name (RFC 1035's 255 octets, written out)
_DEFAULT_PORTS = {"http": "80", "https": "443"}
# RFC 3986 reg-name characters (unreserved, pct-encoded, sub-delims) but the comma, which
# no DNS name holds and which is how gunicorn joins two Host lines.
_REG_NAME = re.compile(r"[A-Za-z0-9\-._~%!$&'()*+;=]*")
_IP_LITERAL = re.compile(r"\[[0-9A-Fa-f:.]+\]|\[v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+\]")
_PORT = re.compile(r"[0-9]{0,5}")
# A host name in an allow-list pattern: letters, digits, hyphens and dots.
_HOST_NAME = re.compile(r"[a-z0-9\-_]+(\.[a-z0-9\-_]+)*\.?")


@dataclass(frozen=True, slots=True)
class Site:
    """The scheme and normalised host (``""`` for a request without one) of a request, and
    ``url``, ``scheme://host``, as it ends every cache key."""

    scheme: str
    host: str
    url: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "url", f"{self.scheme}://{self.host}")

    def with_scheme(self, scheme: str) -> Site:
        return Site(scheme, self.host)


def normalise_host(value: str, scheme: str) -> str | None:
    """``value`` (a ``Host`` field or an authority) normalised, or None if invalid."""
    value = value.strip(" \t")
    if value.startswith("["):
        end = value.find("]") + 1
        name, rest = value[:end], value[end:]
        if not end or not _IP_LITERAL.fullmatch(name) or rest[:1] not in ("", ":"):
            return None
        port = rest[1:]
    else:
        name, _, port = value.partition(":")
        if len(name) > MAX_NAME or not _REG_NAME.fullmatch(name):
            return None
    if not _PORT.fullmatch(port) or (port and int(port) > 65535):
        return None
    name = name.lower()
    if not port or port.lstrip("0") == _DEFAULT_PORTS[scheme].lstrip("0"):
        return name
    return f"{name}:{int(port)}"


def site_of(scheme: str, host_field: str | None, raw_target: str, *, http11: bool) -> Site | None:
    """The request's site from its scheme, ``Host`` field and raw request target; None for
    an invalid or missing host (a 400)."""
    if not raw_target.startswith("/") and "://" in raw_target:
        authority = urlsplit(raw_target).netloc
        if "@" in authority:  # userinfo is never part of an http(s) target (RFC 9110 4.2.4)
            return None
        host_field = authority
    if host_field is None:
        return None if http11 else Site(scheme, "")
    host = normalise_host(host_field, scheme)
    return None if host is None else Site(scheme, host)


def forwarded_scheme(forwarded_proto: str | None, connection_scheme: str, trusted: int) -> str:
    """The scheme the client used: the trusted proxy's ``X-Forwarded-Proto`` (its last
    value: the one the proxy next to us wrote), else the connection's."""
    if trusted > 0 and forwarded_proto:
        last = forwarded_proto.rsplit(",", 1)[-1].strip().lower()
        if last in SCHEMES:
            return last
    return connection_scheme


def is_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Is ``host`` (normalised, maybe with a port) matched by the allow-list? An empty
    list allows every host; a request without a host matches no pattern."""
    if not allowed:
        return True
    name = host[: host.rfind("]") + 1] if host.startswith("[") else host.partition(":")[0]
    name = name.removesuffix(".")
    if not name:
        return False
    for pattern in allowed:
        if pattern in ("*", name):
            return True
        if pattern.startswith(".") and (name == pattern[1:] or name.endswith(pattern)):
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


def parse_allowed_hosts(raw: str) -> tuple[str, ...]:
    """``WSGI_PROXY_ALLOWED_HOSTS``: comma-separated patterns (``is_allowed``), lower-cased;
    ``ValueError`` naming a bad one."""
    return tuple(_pattern(item) for item in (p.strip().lower() for p in raw.split(",")) if item)


def _pattern(item: str) -> str:
    if item == "*":
        return item
    name = item[2:] if item.startswith("*.") else item.removeprefix(".")
    literal = name == item and _IP_LITERAL.fullmatch(name)
    if not (literal or _HOST_NAME.fullmatch(name)):
        raise ValueError(f"{item!r} is not a host name, .domain, *.domain or *")
    return item.removesuffix(".")


def request_scheme(environ: Mapping[str, Any], trusted: int) -> str:
    """The scheme of a WSGI request: ``forwarded_scheme`` of its ``X-Forwarded-Proto`` and
    its connection's (TLS when gunicorn's socket is one; else the server's url scheme)."""
    sock = environ.get("gunicorn.socket")
    if sock is not None:
        connection = "https" if isinstance(sock, ssl.SSLSocket) else "http"
    else:
        connection = "https" if environ.get("wsgi.url_scheme") == "https" else "http"
    if not trusted:
        return connection
    proto = environ.get("HTTP_X_FORWARDED_PROTO")
    return forwarded_scheme(proto if isinstance(proto, str) else None, connection, trusted)


def request_site(environ: Mapping[str, Any], scheme: str) -> Site | None:
    """The site of a WSGI request whose scheme is ``scheme`` (``site_of``); None for an
    invalid or missing host. An origin-form target's site depends on the scheme, the
    ``Host`` and the version alone: those are looked up in a small memo (clients send few
    of them: a hit costs no parsing)."""
    host = environ.get("HTTP_HOST")
    raw = environ.get("RAW_URI")
    host = host if isinstance(host, str) else None
    http11 = environ.get("SERVER_PROTOCOL") != "HTTP/1.0"
    if isinstance(raw, str) and not raw.startswith("/"):
        return site_of(scheme, host, raw, http11=http11)
    return _site_of_host(scheme, host, http11)


@functools.lru_cache(maxsize=256)
def _site_of_host(scheme: str, host: str | None, http11: bool) -> Site | None:
    return site_of(scheme, host, "/", http11=http11)


def raw_key(environ: Mapping[str, Any], scheme: str) -> str | None:
    """The scheme, ``Host`` and target of a request with a ``Host``, as they arrived: two
    requests with the same ``raw_key`` are for the same site and target (a key for answers
    kept per worker, made only after the request's site was checked). None without Host."""
    host = environ.get("HTTP_HOST")
    target = environ.get("RAW_URI")
    if not isinstance(host, str) or not isinstance(target, str):
        return None
    return f"{scheme}://{host}{target}"
