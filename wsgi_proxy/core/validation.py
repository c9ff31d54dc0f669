"""Validation and invalidation of stored responses: RFC 9111 sections 3.2, 4.3 and 4.4,
RFC 9110 section 13 (preconditions). Pure, like policy.py, which decides when to validate.

Invariants:
- No I/O and no clock.
- Section numbers are RFC 9111's unless another RFC is named.
"""

from __future__ import annotations

from wsgi_proxy.core import headers as h
from wsgi_proxy.core.model import SAFE_METHODS, RequestHead, ResponseHead

# Fields a 304 must not change in the stored response (RFC 9111 section 3.2): the length,
# fields that describe the stored bytes, and the validator that selected the response.
NOT_UPDATED_FIELDS = frozenset(
    {"content-length", "content-encoding", "content-md5", "content-range", "etag"}
)


# ---- validation (section 4.3) and freshening (section 3.2) -------------------------------


def validators(head: ResponseHead) -> tuple[tuple[str, str], ...]:
    """Section 4.3.1: ``If-None-Match`` from ``ETag``, ``If-Modified-Since`` from
    ``Last-Modified``."""
    fields: list[tuple[str, str]] = []
    etag = head.get("etag")
    if etag is not None:
        fields.append(("If-None-Match", etag))
    last_modified = head.get("last-modified")
    if last_modified is not None:
        fields.append(("If-Modified-Since", last_modified))
    return tuple(fields)


def updated_head(stored: ResponseHead, fresh: ResponseHead) -> ResponseHead:
    """Section 3.2: the stored response's fields, each replaced by the fields of the same
    name in ``fresh`` (a 304 or a HEAD response), except those that must not change."""
    incoming = {k.lower() for k, _ in fresh.headers} - NOT_UPDATED_FIELDS
    # Age describes a message, not the representation: the new one's Age, or none, counts
    # (otherwise a response stored with a large Age would be stale again at once).
    replaced = incoming | {"age"}
    kept = tuple((k, v) for k, v in stored.headers if k.lower() not in replaced)
    added = tuple((k, v) for k, v in fresh.headers if k.lower() in incoming)
    return ResponseHead(stored.status, stored.reason, kept + added)


def is_not_modified(req: RequestHead, head: ResponseHead, reference: float) -> bool:
    """Section 4.3.2: does the client's own conditional GET/HEAD match the stored response?

    ``If-None-Match`` (weak comparison) takes precedence; ``If-Modified-Since`` is used only
    without it, against ``Last-Modified`` or else ``Date``, and only when it is one valid
    HTTP-date (RFC 9110 section 13.1.3: otherwise it is ignored). ``reference`` is when the
    stored response was received: two-digit years are read against it.
    """
    if req.method not in ("GET", "HEAD") or head.status != 200:
        return False
    if_none_match = req.get("if-none-match")
    if if_none_match is not None:
        etag = head.get("etag")
        tags = h.parse_etags(if_none_match)
        return etag is not None and any(t == "*" or h.is_weak_match(t, etag) for t in tags)
    since = h.parse_http_date(req.get("if-modified-since"), reference)
    if since is None:
        return False
    modified = h.parse_robust_date(head.get("last-modified"), reference)
    if modified is None:
        modified = h.parse_robust_date(head.get("date"), reference)
    return modified is not None and modified <= since


def is_range_applicable(req: RequestHead, head: ResponseHead, reference: float) -> bool:
    """RFC 9110 section 13.1.5: without ``If-Range`` a Range applies; with it, only if the
    entity tag matches strongly or the date, a valid HTTP-date, equals ``Last-Modified``.
    ``reference`` as for ``is_not_modified``."""
    if_range = req.get("if-range")
    if if_range is None:
        return True
    if_range = if_range.strip()
    if if_range.startswith(('"', "W/")):
        etag = head.get("etag")
        return etag is not None and not if_range.startswith("W/") and if_range == etag.strip()
    last_modified = h.parse_robust_date(head.get("last-modified"), reference)
    return last_modified is not None and h.parse_http_date(if_range, reference) == last_modified


# ---- invalidation (RFC 9111 section 4.4) --------------------------------------------------


def invalidated_targets(
    req: RequestHead, resp: ResponseHead, same_origin: tuple[str, ...]
) -> list[str]:
    """Section 4.4: a non-error response to an unsafe method, or one whose safety is
    unknown, invalidates the target URI and the same-origin ``Location`` and
    ``Content-Location``: a path, or an absolute URL under one of ``same_origin``'s
    ``scheme://authority`` bases (the origin's own, and the site the client asked for)."""
    if req.method in SAFE_METHODS or not 200 <= resp.status < 400:
        return []
    targets = [req.target]
    for field in ("location", "content-location"):
        value = resp.get(field)
        if value is None:
            continue
        base = next((b for b in same_origin if value.startswith(b + "/")), None)
        if base is not None:
            targets.append(value[len(base) :])
        elif value.startswith("/") and not value.startswith("//"):
            targets.append(value)
    return targets
