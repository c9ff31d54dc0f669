"""HTTP caching decisions for a shared cache, storing and freshness: RFC 9111 sections 3
and 4.2, and the CDN-Cache-Control targeting of RFC 9213. Pure. Whether a stored response
may answer a request (section 4, RFC 5861) is reuse.py's.

Invariants:
- No I/O and no clock: ``now`` and every time are arguments, POSIX seconds.
- Each decision is a closed set of small frozen types; callers dispatch on them with
  ``match`` and ``assert_never``, so a new outcome is a type error until it is handled.
- This is a shared cache (RFC 9111 section 1): ``s-maxage`` and ``proxy-revalidate`` apply,
  and ``private`` responses are not stored.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from wsgi_proxy.core import headers as h
from wsgi_proxy.core.model import Entry, RequestHead, ResponseHead

# RFC 9110 section 15.1: statuses cacheable by default, hence heuristically fresh.
HEURISTIC_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})
# Final statuses whose semantics this cache knows (RFC 9111 section 5.2.2.3, must-understand).
UNDERSTOOD_STATUSES = frozenset(
    {200, 203, 204, 300, 301, 302, 303, 307, 308, 400, 403, 404, 405, 410, 414, 500, 501}
    | set(range(500, 512))
)
HEURISTIC_FRACTION = 0.1  # RFC 9111 section 4.2.2: "typically ... 10%"
HEURISTIC_MAX = 86400.0


# ---- which field speaks to this cache (RFC 9213) -----------------------------------------


# Edge Architecture 1.0's targeted field: not an RFC 9213 field (its syntax is Cache-Control's
# with ";device" targets), and removed by the surrogate it targets.
SURROGATE_CONTROL = "surrogate-control"


@dataclass(frozen=True, slots=True)
class Targeting:
    """The target list (RFC 9213 section 2.2): targeted cache-control fields this cache
    obeys, the first with a valid, non-empty value wins; and its device token for
    ``;token``-targeted ``Surrogate-Control`` directives (Edge Architecture 1.0)."""

    fields: tuple[str, ...] = ()
    token: str = ""

    @property
    def removed_fields(self) -> tuple[str, ...]:
        """The fields of the list that are not passed on: ``Surrogate-Control`` (Edge
        Architecture 1.0: a surrogate removes the controls aimed at it). RFC 9213 fields
        are passed on, for the caches after this one (RFC 9213 section 3: a CDN "will
        typically forward" CDN-Cache-Control)."""
        return tuple(f.lower() for f in self.fields if f.lower() == SURROGATE_CONTROL)


NO_TARGETING = Targeting()


@dataclass(frozen=True, slots=True)
class Directives:
    """The response's caching directives for this cache, and whether ``Expires`` counts
    (RFC 9213 section 2.2: a targeted field replaces Cache-Control and Expires)."""

    cc: dict[str, str | None]
    use_expires: bool


# Memo size of the pure functions a cache hit calls: a stored response is parsed once per
# worker, not on every hit. Their results are shared: callers never mutate them.
_MEMO = 4096


@functools.lru_cache(maxsize=_MEMO)
def response_directives(resp: ResponseHead, targeting: Targeting) -> Directives:
    """RFC 9213 section 2.2: the first field of the target list with a valid, non-empty
    value (section 2.1: a Structured Field dictionary whose known directives have the
    right types) gives the directives, and Cache-Control and Expires are ignored; with
    none, Cache-Control and Expires apply. ``Surrogate-Control`` is read as Edge
    Architecture 1.0 has it: any non-empty value counts."""
    for field in targeting.fields:
        value = resp.get(field)
        if value is None:
            continue
        if field.lower() == SURROGATE_CONTROL:
            if value.strip():
                return Directives(h.parse_surrogate_control(value, targeting.token), False)
            continue
        directives = h.parse_targeted_cache_control(value)
        if directives is not None:
            return Directives(directives, False)
    return Directives(h.parse_cache_control(resp.get("cache-control")), True)


# ---- storage (RFC 9111 section 3) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Store:
    """Store the response; ``strip`` names fields left out of the stored copy."""

    strip: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NotStorable:
    """Do not store; ``reason`` goes to the log and to Cache-Status ``detail``."""

    reason: str


StoreDecision = Store | NotStorable


def decide_store(
    req: RequestHead,
    resp: ResponseHead,
    response_time: float,
    targeting: Targeting = NO_TARGETING,
) -> StoreDecision:
    """RFC 9111 section 3, for a shared cache, in the section's order.

    Method GET only; a final, non-partial status; no ``no-store`` in request or response
    (unless ``must-understand`` with an understood status, section 5.2.2.3); no unqualified
    ``private``; ``Authorization`` only with ``public``, ``s-maxage`` or ``must-revalidate``
    (section 3.5); ``Set-Cookie`` only where ``private``/``no-cache`` name it, so the cookie
    is left out (our choice: a cookie is never shared); then explicit freshness, ``public``
    or a heuristically cacheable status; and finally something to gain: a lifetime above
    zero or a validator for revalidation.
    """
    if req.method != "GET":
        return NotStorable("method")
    if resp.status < 200 or resp.status in (206, 304):
        return NotStorable(f"status {resp.status}")
    directives = response_directives(resp, targeting)
    cc = directives.cc
    strip = _qualified_fields(cc, "private") | _qualified_fields(cc, "no-cache")
    refused = _refusal(req, resp, cc, strip)
    if refused is not None:
        return NotStorable(refused)
    has_expires = directives.use_expires and resp.get("expires") is not None
    explicit = {"max-age", "s-maxage"} & cc.keys() or has_expires
    if not (explicit or "public" in cc or resp.status in HEURISTIC_STATUSES):
        return NotStorable("no freshness information")
    has_validator = resp.get("etag") is not None or resp.get("last-modified") is not None
    if freshness_lifetime(resp, response_time, targeting) <= 0 and not has_validator:
        return NotStorable("stale and no validator")
    if "no-cache" in cc and cc["no-cache"] is None and not has_validator:
        return NotStorable("no-cache and no validator")
    return Store(strip=tuple(sorted(strip)))


def _refusal(
    req: RequestHead, resp: ResponseHead, cc: dict[str, str | None], strip: set[str]
) -> str | None:
    """``decide_store``'s refusals by directive and field, in RFC 9111 section 3's order
    (with sections 3.5 and 5.2.2.3), or None: ``no-store`` (``must-understand`` first),
    unqualified ``private``, ``Authorization``, ``Set-Cookie`` not named in ``strip``,
    ``Vary: *``."""
    if "must-understand" in cc:
        if resp.status not in UNDERSTOOD_STATUSES:
            return "must-understand"
    elif "no-store" in cc:
        return "no-store"
    if "no-store" in h.parse_cache_control(req.get("cache-control")):
        return "request no-store"
    if "private" in cc and not _qualified_fields(cc, "private"):
        return "private"
    if req.get("authorization") is not None and not (
        {"public", "s-maxage", "must-revalidate"} & cc.keys()
    ):
        return "authorization"
    if h.has(resp.headers, "set-cookie") and "set-cookie" not in strip:
        return "set-cookie"
    if h.get(resp.headers, "vary") is not None and "*" in h.parse_list(resp.get("vary")):
        return "vary *"
    return None


def _qualified_fields(cc: dict[str, str | None], directive: str) -> set[str]:
    """Field names given to ``private``/``no-cache`` (sections 5.2.2.4 and 5.2.2.7)."""
    return {name.lower() for name in h.parse_list(cc.get(directive) or "")}


def stored_headers(resp: ResponseHead, decision: Store) -> ResponseHead:
    """The response as stored, without the fields ``decision`` strips. ``Age`` is kept: it
    is part of the age calculation (section 4.2.3); the served ``Age`` replaces it."""
    return ResponseHead(resp.status, resp.reason, h.without(resp.headers, decision.strip))


# ---- freshness (RFC 9111 section 4.2) -----------------------------------------------------


@functools.lru_cache(maxsize=_MEMO)
def freshness_lifetime(
    resp: ResponseHead, response_time: float, targeting: Targeting = NO_TARGETING
) -> float:
    """Section 4.2.1, shared cache: ``s-maxage``, then ``max-age``, then ``Expires`` minus
    ``Date``, then the heuristic of section 4.2.2. An invalid value means stale (0).
    A targeted field (RFC 9213) stands in for Cache-Control and silences Expires.

    ``Expires`` is read by the HTTP-date grammar alone (section 5.3: an invalid date means
    already expired). Of several ``Expires`` field lines the first is used, as the first of
    duplicate directives is (section 4.2.1 allows this or stale for both, in one sentence):
    the lines are read one by one, since an HTTP-date holds a comma.
    """
    directives = response_directives(resp, targeting)
    cc = directives.cc
    for directive in ("s-maxage", "max-age"):
        if directive in cc:
            seconds = h.parse_delta_seconds(cc[directive])
            return float(seconds) if seconds is not None else 0.0
    date = h.parse_robust_date(resp.get("date"), response_time) or response_time
    expires_lines = h.field_lines(resp.headers, "expires") if directives.use_expires else []
    if expires_lines:
        expires = h.parse_http_date(expires_lines[0], response_time)
        return max(0.0, expires - date) if expires is not None else 0.0
    return heuristic_lifetime(resp, date, cc)


def heuristic_lifetime(resp: ResponseHead, date: float, cc: dict[str, str | None]) -> float:
    """Section 4.2.2: a fraction of the time since ``Last-Modified``, for responses that
    are heuristically cacheable or marked ``public``; capped at a day."""
    if resp.status not in HEURISTIC_STATUSES and "public" not in cc:
        return 0.0
    last_modified = h.parse_robust_date(resp.get("last-modified"), date)
    if last_modified is None or last_modified >= date:
        return 0.0
    return min(HEURISTIC_MAX, (date - last_modified) * HEURISTIC_FRACTION)


def current_age(entry: Entry, now: float) -> float:
    """Section 4.2.3: corrected initial age plus the time resident in this cache."""
    initial = corrected_initial_age(entry.head, entry.request_time, entry.response_time)
    return initial + max(0.0, now - entry.response_time)


@functools.lru_cache(maxsize=_MEMO)
def corrected_initial_age(head: ResponseHead, request_time: float, response_time: float) -> float:
    date = h.parse_robust_date(head.get("date"), response_time)
    apparent_age = max(0.0, response_time - date) if date is not None else 0.0
    response_delay = max(0.0, response_time - request_time)
    return max(apparent_age, _age_value(head) + response_delay)


def _age_value(head: ResponseHead) -> int:
    """The ``Age`` field, section 5.1: of a list (one line with commas, or several lines)
    the first member counts, the others are discarded; if that member is not delta-seconds
    (a non-negative integer: not a sign, a fraction, a parameter) the field is ignored (0).
    Section 1.2.2: 2147483648 and beyond count as 2^31, which makes the response stale."""
    members = h.parse_list(head.get("age"))
    if not members:
        return 0
    value = h.parse_delta_seconds(members[0])
    return value if value is not None else 0
