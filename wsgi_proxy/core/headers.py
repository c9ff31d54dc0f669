"""Header plumbing: the one place that parses and formats HTTP fields.

Invariants:
- Headers are tuples of (name, value) pairs in wire order; duplicates are kept. Names are
  compared case-insensitively everywhere.
- Hop-by-hop fields, and every field named in ``Connection``, never cross the proxy in either
  direction (RFC 9110 section 7.6.1).
- ``Cache-Control`` is parsed here, by hand, as RFC 9111 section 5.2 says: directive names
  are case-insensitive, values may be quoted, and the first of duplicate directives wins
  (section 4.2.1). werkzeug's ``parse_cache_control_header`` keeps names as sent and the
  last duplicate, and takes a negative delta-seconds, so it is not used (notes at the lines
  that differ).
- Dates: a field whose definition gives an invalid date a meaning is read strictly, by the
  HTTP-date grammar alone (``parse_http_date``, http_dates.py): ``Expires`` (invalid means
  already expired, RFC 9111 section 5.3), ``If-Modified-Since`` and the date of
  ``If-Range`` (invalid means ignored, RFC 9110 sections 13.1.3 and 13.1.5). ``Date`` and
  ``Last-Modified`` are read robustly, as RFC 9110 section 5.6.7 encourages where a field
  says nothing else (``parse_robust_date``): the grammar first, then werkzeug's
  ``parse_date``. Both answer ``None`` for a missing and an invalid date alike; callers
  that must tell them apart (``Expires``) check for the field first.
- Targeted fields (RFC 9213) are Structured Field dictionaries (RFC 9651, which obsoletes
  RFC 8941), parsed by ``http_sf``; ``Surrogate-Control`` keeps the Edge Architecture 1.0
  syntax of Cache-Control with ``;device`` targets.
- werkzeug's header parsers are called from this module only (the admin interface,
  flow/admin.py, reads its query string with werkzeug's ``Request``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from email.utils import formatdate

import http_sf
from werkzeug.http import parse_date, parse_range_header

from wsgi_proxy.core import http_dates as httpdate

Headers = tuple[tuple[str, str], ...]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authentication-info",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)


def get(headers: Headers, name: str) -> str | None:
    """All values of ``name`` joined with ", " (RFC 9110 section 5.3), or None if absent."""
    lname = name.lower()
    values = [v for k, v in headers if k.lower() == lname]
    return ", ".join(values) if values else None


def field_lines(headers: Headers, name: str) -> list[str]:
    """The value of each ``name`` field line, in order: for a field that is not a list,
    whose values cannot be told apart once joined (an HTTP-date holds a comma)."""
    lname = name.lower()
    return [v for k, v in headers if k.lower() == lname]


def has(headers: Headers, name: str) -> bool:
    lname = name.lower()
    return any(k.lower() == lname for k, _ in headers)


def without(headers: Headers, names: Iterable[str]) -> Headers:
    """``headers`` minus every field whose lower-cased name is in ``names``."""
    drop = _lowered(names) if isinstance(names, tuple) else {n.lower() for n in names}
    return tuple((k, v) for k, v in headers if k.lower() not in drop)


@functools.lru_cache(maxsize=256)
def _lowered(names: tuple[str, ...]) -> frozenset[str]:
    """The lower-cased set of a tuple of names (the callers' constants: made once)."""
    return frozenset(n.lower() for n in names)


def replace(headers: Headers, name: str, value: str) -> Headers:
    """``headers`` with every ``name`` field removed and one ``name: value`` appended."""
    return (*without(headers, (name,)), (name, value))


def parse_list(value: str | None) -> list[str]:
    """A comma-separated list field, items trimmed, empty items dropped (RFC 9110 5.6.1)."""
    if not value:
        return []
    return [item.strip() for item in value.split(",") if item.strip()]


def end_to_end(headers: Headers) -> Headers:
    """Drop hop-by-hop fields and those named in ``Connection`` (RFC 9110 section 7.6.1)."""
    # Not werkzeug's remove_hop_by_hop_headers: it drops the fixed list only, not the fields
    # that Connection names.
    named = parse_list(get(headers, "connection"))
    drop = HOP_BY_HOP | {n.lower() for n in named} if named else HOP_BY_HOP
    return tuple((k, v) for k, v in headers if k.lower() not in drop)


def from_environ(environ: Mapping[str, object]) -> Headers:
    """The client's request fields from a WSGI environ, in the server's order."""
    result: list[tuple[str, str]] = []
    names = _ENVIRON_NAMES
    for key, value in environ.items():
        if key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if not isinstance(value, str) or (not value and not key.startswith("H")):
                continue
            name = names.get(key)
            if name is None:
                name = key.removeprefix("HTTP_").replace("_", "-").title()
                if len(names) < _ENVIRON_NAMES_MAX:
                    names[key] = name
            result.append((name, value))
    return tuple(result)


# Field names by environ key, learnt as requests arrive (bounded: clients choose them).
_ENVIRON_NAMES: dict[str, str] = {}
_ENVIRON_NAMES_MAX = 1024


def forwarded_for(prior: str | None, client: str, trusted: int) -> str:
    """``X-Forwarded-For`` for the origin: the last ``trusted`` entries of what arrived
    (each added by one trusted proxy in front), then the address that connected to us.
    Entries before those were written by the client and are dropped."""
    return ", ".join(_forwarded_chain(prior, client, trusted))


def client_address(prior: str | None, client: str, trusted: int) -> str:
    """The client's address as the trusted proxies in front saw it: the first entry of the
    ``X-Forwarded-For`` that ``forwarded_for`` sends on (the address the outermost trusted
    proxy saw connecting), ``client`` itself when none arrived or none is trusted."""
    return _forwarded_chain(prior, client, trusted)[0]


def _forwarded_chain(prior: str | None, client: str, trusted: int) -> list[str]:
    """The addresses ``forwarded_for`` sends on, outermost first."""
    entries = parse_list(prior)[-trusted:] if trusted > 0 else []
    return [*entries, client]


def parse_cache_control(value: str | None) -> dict[str, str | None]:
    """Directives by lower-cased name; a value is unquoted; the first duplicate wins.

    RFC 9111 section 5.2: names are case-insensitive tokens; an argument is a token or a
    quoted-string. Section 4.2.1: of duplicate directives the first is used.
    """
    directives: dict[str, str | None] = {}
    for name, arg in _split_directives(value or ""):
        directives.setdefault(name, arg)  # the first duplicate; werkzeug's keeps the last
    return directives


def parse_surrogate_control(value: str, token: str) -> dict[str, str | None]:
    """``Surrogate-Control`` (Edge Architecture 1.0) for device ``token``: Cache-Control's
    syntax, where a directive may end in ``;device``; it then applies only to that device,
    and such a targeted directive wins over an untargeted one of the same name."""
    targeted: dict[str, str | None] = {}
    general: dict[str, str | None] = {}
    for name, arg in _split_directives(value):
        full = name if arg is None else f"{name}={arg}"
        directive, _, target = full.partition(";")
        key, eq, directive_arg = directive.partition("=")
        key = key.strip().lower()
        parsed_arg = directive_arg.strip().strip('"') if eq else None
        if not target:
            general.setdefault(key, parsed_arg)
        elif target.strip().lower() == token.lower():
            targeted.setdefault(key, parsed_arg)
    return {**general, **targeted}


# RFC 9213 section 2.1: the Structured Field type each directive's value must have, inferred
# from RFC 9111 section 5.2.2 (and RFC 5861): delta-seconds are non-negative Integers,
# directives without an argument are Boolean true, and no-cache and private are Boolean
# true or a list of field names (a String, or a Token, as a Cache-Control token would be).
_INTEGER_DIRECTIVES = frozenset({"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"})
_FIELD_NAMES_DIRECTIVES = frozenset({"no-cache", "private"})
_TRUE_DIRECTIVES = frozenset(
    {"no-store", "no-transform", "must-revalidate", "proxy-revalidate", "must-understand",
     "public", "immutable"}
)  # fmt: skip


def parse_targeted_cache_control(value: str | None) -> dict[str, str | None] | None:
    """An RFC 9213 targeted field (``CDN-Cache-Control``) as Cache-Control directives (a
    value as ``parse_cache_control`` gives it), or None when the field must be ignored.

    Section 2.1: the field is a Dictionary Structured Field; when it is empty or does not
    parse as one, it is ignored, and so it is when a known directive's value has the wrong
    type ("Implementations SHOULD NOT consume values that violate these inferred
    constraints": one such value and the field as a whole goes). Parameters are ignored,
    and so are directives this cache does not know (section 2.2). Of duplicate keys the
    last counts (RFC 9651 section 4.2.2), unlike Cache-Control.
    """
    if value is None or not value.isascii():  # a Structured Field is ASCII
        return None
    try:
        parsed = http_sf.parse(value.encode("ascii"), tltype="dictionary")
    except http_sf.StructuredFieldError:
        return None
    if not isinstance(parsed, dict) or not parsed:
        return None
    directives: dict[str, str | None] = {}
    for name, member in parsed.items():
        arg = _bare_value(member)
        if name in _INTEGER_DIRECTIVES:
            # type(), not isinstance(): a Boolean (?1) is an int in Python
            if type(arg) is not int or arg < 0:
                return None
            directives[name] = str(arg)
        elif name in _FIELD_NAMES_DIRECTIVES:
            if arg is not True and not isinstance(arg, str | http_sf.Token):
                return None
            directives[name] = None if arg is True else str(arg)
        elif name in _TRUE_DIRECTIVES:
            if arg is not True:
                return None
            directives[name] = None
    return directives


def _bare_value(member: object) -> object:
    """A dictionary member's value without its parameters (http_sf gives (value, params))."""
    return member[0] if isinstance(member, tuple) else member


def _split_directives(text: str) -> Iterable[tuple[str, str | None]]:
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        start = i
        while i < n and text[i] not in "=,":
            i += 1
        name = text[start:i].strip().lower()  # case-insensitive; werkzeug keeps the case
        arg: str | None = None
        if i < n and text[i] == "=":
            i += 1
            while i < n and text[i] in " \t":
                i += 1
            if i < n and text[i] == '"':
                arg, i = _read_quoted(text, i + 1)
                while i < n and text[i] != ",":
                    i += 1
            else:
                start = i
                while i < n and text[i] != ",":
                    i += 1
                arg = text[start:i].strip()
        if name:
            yield name, arg


def _read_quoted(text: str, i: int) -> tuple[str, int]:
    """The quoted-string starting after the opening quote at ``i``; (value, index after)."""
    out: list[str] = []
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if c == '"':
            return "".join(out), i + 1
        out.append(c)
        i += 1
    return "".join(out), i


def parse_delta_seconds(value: str | None) -> int | None:
    """RFC 9111 section 1.2.2: 1*DIGIT; anything else is None (invalid)."""
    # Digits only: werkzeug's Cache-Control parser gives "-3" as -3 and "+3" as 3.
    if value is None or not value.isdigit() or not value.isascii():
        return None
    return min(int(value), 2**31)


def parse_http_date(value: str | None, reference: float) -> float | None:
    """An HTTP-date (RFC 9110 section 5.6.7) as POSIX seconds, or None when missing or
    not one of its three forms exactly (http_dates.py). For the fields whose definitions give
    an invalid date a meaning: ``Expires``, ``If-Modified-Since``, ``If-Range``.
    ``reference`` is now, against which a two-digit year is read."""
    if value is None:
        return None
    # Not werkzeug's parse_date, which is lenient (email.utils): it takes any case, other
    # zones than GMT ("EST", "+0200"), a missing weekday; where these fields give an
    # invalid date a meaning, such a date must stay invalid.
    return httpdate.parse_http_date(value, reference)


def parse_robust_date(value: str | None, reference: float) -> float | None:
    """A date as POSIX seconds, read robustly (RFC 9110 section 5.6.7: "Recipients of
    timestamp values are encouraged to be robust in parsing timestamps unless otherwise
    restricted by the field definition"): an HTTP-date, else whatever werkzeug's
    ``parse_date`` makes of it; None when missing or neither. For ``Date`` and
    ``Last-Modified``."""
    if not value:
        return None
    strict = httpdate.parse_http_date(value, reference)
    if strict is not None:
        return strict
    parsed = parse_date(value)
    return parsed.timestamp() if parsed is not None else None


def format_http_date(timestamp: float) -> str:
    return formatdate(timestamp, usegmt=True)


def parse_etags(value: str | None) -> list[str]:
    """Entity tags from ``If-None-Match``/``If-Match``, kept with their W/ prefix; "*" alone."""
    if value is None:
        return []
    if value.strip() == "*":
        return ["*"]
    tags: list[str] = []
    for item in value.split(","):
        stripped = item.strip()
        if stripped.startswith(('"', 'W/"')) and stripped.endswith('"'):
            tags.append(stripped)
    return tags


def is_weak_match(etag_a: str, etag_b: str) -> bool:
    """Weak comparison (RFC 9110 section 8.8.3.2): equal once W/ is removed."""
    return etag_a.removeprefix("W/") == etag_b.removeprefix("W/")


def parse_byte_range(value: str | None, length: int) -> tuple[int, int] | bool | None:
    """A ``Range`` of one byte range against a body of ``length`` bytes (RFC 9110 14.1.2).

    (start, stop) for a satisfiable single range; ``False`` when none of it is satisfiable
    (answer 416); ``None`` when there is nothing to honour (absent, invalid, not bytes, or
    several ranges, which the full response answers too).
    """
    if value is None:
        return None
    parsed = parse_range_header(value)
    if parsed is None or parsed.units != "bytes" or len(parsed.ranges) != 1:
        return None
    span = parsed.range_for_length(length)
    return span if span is not None else False


def format_cache_status(
    cache: str,
    *,
    hit: bool = False,
    fwd: str | None = None,
    fwd_status: int | None = None,
    stored: bool = False,
    ttl: int | None = None,
    detail: str | None = None,
) -> str:
    """One RFC 9211 ``Cache-Status`` member for this cache."""
    params = [cache]
    if hit:
        params.append("hit")
    if fwd:
        params.append(f"fwd={fwd}")
    if fwd_status is not None:
        params.append(f"fwd-status={fwd_status}")
    if stored:
        params.append("stored")
    if ttl is not None:
        params.append(f"ttl={ttl}")
    if detail:
        params.append(f'detail="{detail}"')
    return "; ".join(params)
