"""Whether a stored response may answer a request: RFC 9111 section 4 and RFC 5861. Pure.

Invariants:
- No I/O and no clock: ``now`` and every time are arguments, POSIX seconds.
- Each decision is a closed set of small frozen types; callers dispatch on them with
  ``match`` and ``assert_never``, so a new outcome is a type error until it is handled.
- Freshness and age are policy.py's (section 4.2); this module only decides with them.
"""

from __future__ import annotations

from dataclasses import dataclass

from wsgi_proxy.core import headers as h
from wsgi_proxy.core.model import Entry, RequestHead
from wsgi_proxy.core.policy import (
    NO_TARGETING,
    Targeting,
    corrected_initial_age,
    current_age,
    freshness_lifetime,
    response_directives,
)
from wsgi_proxy.core.validation import validators


@dataclass(frozen=True, slots=True)
class Fresh:
    """Serve the stored response; ``ttl`` is its remaining freshness (negative if stale but
    allowed by ``max-stale``)."""

    age: float
    ttl: float


@dataclass(frozen=True, slots=True)
class Stale:
    """Serve the stale response now and refresh it in the background (RFC 5861 section 3,
    ``stale-while-revalidate``); ``conditional`` holds the validators to refresh with."""

    age: float
    ttl: float
    conditional: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Revalidate:
    """Send the origin a conditional request built from the stored validators."""

    conditional: tuple[tuple[str, str], ...]
    fwd: str


@dataclass(frozen=True, slots=True)
class Forward:
    """Send the request to the origin unchanged; ``fwd`` is the Cache-Status reason."""

    fwd: str


@dataclass(frozen=True, slots=True)
class Unavailable:
    """``only-if-cached`` and nothing usable stored: answer 504 (section 5.2.1.7)."""


Lookup = Fresh | Stale | Revalidate | Forward | Unavailable

# Response directives that forbid serving a stale response (RFC 9111 sections 4.2.4,
# 5.2.2.2, 5.2.2.4, 5.2.2.8 and 5.2.2.10; s-maxage implies proxy-revalidate).
_NO_STALE = frozenset({"must-revalidate", "proxy-revalidate", "s-maxage", "no-cache"})


def decide_lookup(
    req: RequestHead, entry: Entry | None, now: float, targeting: Targeting = NO_TARGETING
) -> Lookup:
    """Section 4: may ``entry`` answer ``req`` at ``now``?

    Order: nothing stored; request ``no-cache``/``Pragma: no-cache`` (5.2.1.4, 5.4);
    response ``no-cache`` (5.2.2.4); freshness against request ``max-age``, ``min-fresh``
    (5.2.1.1, 5.2.1.3); stale use under ``max-stale`` unless ``must-revalidate``,
    ``proxy-revalidate``, ``s-maxage`` or ``no-cache`` forbid it (4.2.4, 5.2.2.2, 5.2.2.8,
    5.2.2.10); ``stale-while-revalidate`` under the same prohibitions (RFC 5861 section 3);
    ``only-if-cached`` (5.2.1.7); then revalidation when a validator exists.
    """
    rcc = h.parse_cache_control(req.get("cache-control"))
    only_if_cached = "only-if-cached" in rcc
    if entry is None:
        return Unavailable() if only_if_cached else Forward("uri-miss")
    cc = response_directives(entry.head, targeting).cc
    if _is_request_no_cache(req, rcc) and not only_if_cached:
        return _revalidate_or_forward(entry, "request")
    if cc.get("no-cache", "-") is None:
        return Unavailable() if only_if_cached else _revalidate_or_forward(entry, "stale")
    age = current_age(entry, now)
    ttl = freshness_lifetime(entry.head, entry.response_time, targeting) - age
    if entry.soft_purged:
        ttl = min(ttl, 0.0)  # a soft purge makes it stale: revalidate, or serve on error
    if _is_fresh_enough(rcc, age, ttl):
        return Fresh(age, ttl)
    if ttl <= 0 and _is_stale_allowed(rcc, cc, -ttl):
        return Fresh(age, ttl)
    swr = h.parse_delta_seconds(cc.get("stale-while-revalidate"))
    if swr is not None and -ttl <= swr and not _NO_STALE & cc.keys() and "max-age" not in rcc:
        return Stale(age, ttl, validators(entry.head))
    if only_if_cached:
        return Unavailable()
    return _revalidate_or_forward(entry, "stale")


# The request fields that decide_lookup, is_not_modified and the range check read (RFC 9111
# sections 4.3.2, 5.2.1 and 5.4; RFC 9110 section 14.2). Without any of them the reuse of a
# stored response that does not vary depends on the response and the time alone.
REUSE_REQUEST_FIELDS = (
    "cache-control", "pragma", "if-none-match", "if-modified-since", "range", "if-range"
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class PlainFreshness:
    """How a plain request (a GET or HEAD with none of ``REUSE_REQUEST_FIELDS``) is decided
    for one stored response: ``Fresh`` exactly while ``lifetime - age > 0``, where ``age``
    is ``initial_age`` plus the time since the response was received (section 4.2.3)."""

    initial_age: float
    lifetime: float


def plain_freshness(entry: Entry, targeting: Targeting = NO_TARGETING) -> PlainFreshness | None:
    """``decide_lookup`` for a plain request and ``entry``, as a function of time alone
    (sections 4.2.1 and 4.2.3: fresh while the lifetime exceeds the current age); None where
    it is not one: a response that varies (section 4.1: its request decides), response
    ``no-cache`` (section 5.2.2.4: always revalidated) or a soft purge (always stale)."""
    if entry.vary or entry.soft_purged:
        return None
    if response_directives(entry.head, targeting).cc.get("no-cache", "-") is None:
        return None
    initial = corrected_initial_age(entry.head, entry.request_time, entry.response_time)
    lifetime = freshness_lifetime(entry.head, entry.response_time, targeting)
    return PlainFreshness(initial, lifetime)


def _is_request_no_cache(req: RequestHead, rcc: dict[str, str | None]) -> bool:
    if "no-cache" in rcc:
        return True
    # Section 5.4: Pragma counts only when the request has no Cache-Control.
    pragma = [p.lower() for p in h.parse_list(req.get("pragma"))]
    return "no-cache" in pragma and req.get("cache-control") is None


def _is_fresh_enough(rcc: dict[str, str | None], age: float, ttl: float) -> bool:
    if ttl <= 0:
        return False
    if "max-age" in rcc:
        max_age = h.parse_delta_seconds(rcc["max-age"])
        if max_age is None or age > max_age:
            return False
    if "min-fresh" in rcc:
        min_fresh = h.parse_delta_seconds(rcc["min-fresh"])
        if min_fresh is None or ttl < min_fresh:
            return False
    return True


def _is_stale_allowed(
    rcc: dict[str, str | None], cc: dict[str, str | None], staleness: float
) -> bool:
    if "max-stale" not in rcc:
        return False
    if _NO_STALE & cc.keys():
        return False
    limit = rcc["max-stale"]
    if limit is None:
        return True
    seconds = h.parse_delta_seconds(limit)
    return seconds is not None and staleness <= seconds


def is_stale_on_error_allowed(
    req: RequestHead,
    entry: Entry,
    now: float,
    configured: float,
    targeting: Targeting = NO_TARGETING,
) -> bool:
    """May a stale ``entry`` answer ``req`` because the origin failed or answered 5xx?

    RFC 5861 section 4: within the larger ``stale-if-error`` window of the response and the
    request; RFC 9111 section 4.2.4: or while disconnected, here within the ``configured``
    window the operator allows. Never where a response directive forbids stale use.
    """
    cc = response_directives(entry.head, targeting).cc
    if _NO_STALE & cc.keys():
        return False
    rcc = h.parse_cache_control(req.get("cache-control"))
    windows = [configured]
    for directives in (cc, rcc):
        seconds = h.parse_delta_seconds(directives.get("stale-if-error"))
        if seconds is not None:
            windows.append(float(seconds))
    age = current_age(entry, now)
    staleness = age - freshness_lifetime(entry.head, entry.response_time, targeting)
    return staleness <= max(windows)


def _revalidate_or_forward(entry: Entry, fwd: str) -> Revalidate | Forward:
    conditional = validators(entry.head)
    return Revalidate(conditional, fwd) if conditional else Forward(fwd)
