"""Frozen data that flows between the modules: request and response heads, stored entries.

Invariants: every object here is immutable and does no I/O; times are POSIX timestamps
(seconds, float) taken by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wsgi_proxy.core import headers as h
from wsgi_proxy.core.headers import Headers

# RFC 9110 section 9.2.1: every other method is unsafe, or of unknown safety.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


@dataclass(frozen=True, slots=True)
class RequestHead:
    """What the client asked: the method, the origin-form target, its end-to-end fields.
    ``get`` answers from an index built once (a request is asked about many fields)."""

    method: str
    target: str
    headers: Headers
    _index: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[str, str] = {}
        for name, value in self.headers:
            lname = name.lower()
            index[lname] = f"{index[lname]}, {value}" if lname in index else value
        object.__setattr__(self, "_index", index)

    def get(self, name: str) -> str | None:
        return self._index.get(name.lower())


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """Status line and end-to-end fields of a response."""

    status: int
    reason: str
    headers: Headers

    def get(self, name: str) -> str | None:
        return h.get(self.headers, name)

    @property
    def status_line(self) -> str:
        return f"{self.status} {self.reason or 'Unknown'}"


@dataclass(frozen=True, slots=True)
class Entry:
    """A stored response's metadata (RFC 9111 section 3): what section 4.2.3 needs to
    compute its age, the request values its ``Vary`` selected (section 4.1), the purge tags
    the origin gave it, and whether a soft purge marked it stale."""

    key: str
    head: ResponseHead
    request_time: float
    response_time: float
    vary: tuple[tuple[str, str | None], ...]
    body_length: int
    tags: tuple[str, ...] = ()
    soft_purged: bool = False
