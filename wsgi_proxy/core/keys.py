"""Cache keys (RFC 9111 section 2 and 4.1). Pure.

Invariants:
- The primary key is the method class, the full target URI that the origin receives (the
  configured origin and the request target byte for byte, so two targets the origin may
  treat differently never share an entry), and the site the request was for (the
  ``scheme://host`` sent as ``X-Forwarded-Proto`` and ``X-Forwarded-Host``, sites.py), so
  nothing the origin is told and may answer differently stays out of the key:
  ``GET http://127.0.0.1:8000/a?b https://shop.example``. A target holds no space.
- File names are SHA-256 digests of keys, never derived from the path: no URL can escape
  the cache folder or collide with a reserved name.
- A variant is selected by the request's values of the fields the response's ``Vary``
  names, normalised as section 4.1 allows (values combined, list whitespace and the case of
  caseless fields ignored).
"""

from __future__ import annotations

import functools
import hashlib

from wsgi_proxy.core import headers as h
from wsgi_proxy.core.headers import Headers


def primary_key(origin_url: str, target: str, site: str) -> str:
    """GET and HEAD share the GET entry; other methods are never looked up. ``site`` is
    the request's ``scheme://host`` (``Site.url``)."""
    return f"GET {origin_url}{target} {site}"


def split_key(key: str, origin_url: str) -> tuple[str, str] | None:
    """(target, site) of a primary key made for ``origin_url``; None for any other key
    (another origin's, or one written before sites were keyed)."""
    start = f"GET {origin_url}"
    if not key.startswith(start):
        return None
    target, space, site = key[len(start) :].rpartition(" ")
    return (target, site) if space and target.startswith("/") else None


def site_of_key(key: str) -> str:
    """The ``scheme://host`` a primary key ends with."""
    return key.rpartition(" ")[2]


# Every hit needs its key's file name: the hot keys are hashed once per worker. Small, as a
# key can be 8 KiB long: at most 8 MiB per worker however long the URLs are.
@functools.lru_cache(maxsize=1024)
def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def vary_names(response_headers: Headers) -> tuple[str, ...] | None:
    """Lower-cased field names in ``Vary``; None when it holds ``*`` (never matches)."""
    names = [n.lower() for n in h.parse_list(h.get(response_headers, "vary"))]
    if "*" in names:
        return None
    return tuple(sorted(set(names)))


def vary_values(
    names: tuple[str, ...], request_headers: Headers
) -> tuple[tuple[str, str | None], ...]:
    """The request's normalised value for each name; None for an absent field."""
    values = []
    for name in names:
        value = h.get(request_headers, name)
        values.append((name, _normalise(name, value) if value is not None else None))
    return tuple(values)


# Fields whose values are case-insensitive (RFC 9110 sections 12.5.3, 12.5.4).
_CASELESS = frozenset({"accept-encoding", "accept-language", "accept-charset"})


def _normalise(name: str, value: str) -> str:
    """Section 4.1 lets a cache normalise: list members are trimmed and joined with ","
    (so one line "a, b" equals two lines "a" and "b"), and caseless fields lower-cased."""
    joined = ",".join(" ".join(item.split()) for item in value.split(",") if item.strip())
    return joined.lower() if name in _CASELESS else joined


def variant_digest(values: tuple[tuple[str, str | None], ...]) -> str:
    text = "\n".join(f"{n}:{'' if v is None else '=' + v}" for n, v in values)
    return digest(text)
