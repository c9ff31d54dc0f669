"""Cache keys (RFC 9111 section 2 and 4.1). Pure.

Invariants:
- The primary key is the method class and the full target URI that the origin receives:
  the configured origin and the request target byte for byte, so two targets the origin
  may treat differently never share an entry.
- File names are SHA-256 digests of keys, never derived from the path: no URL can escape
  the cache folder or collide with a reserved name.
- A variant is selected by the request's values of the fields the response's ``Vary``
  names, normalised as section 4.1 allows (values combined, whitespace trimmed).
"""

from __future__ import annotations

import hashlib

from wsgi_proxy import headers as h
from wsgi_proxy.headers import Headers


def primary_key(origin_url: str, target: str) -> str:
    """GET and HEAD share the GET entry; other methods are never looked up."""
    return f"GET {origin_url}{target}"


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
        values.append((name, " ".join(value.split()) if value is not None else None))
    return tuple(values)


def variant_digest(values: tuple[tuple[str, str | None], ...]) -> str:
    text = "\n".join(f"{n}:{'' if v is None else '=' + v}" for n, v in values)
    return digest(text)
