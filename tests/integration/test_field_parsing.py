"""How the proxy reads the fields whose parsing decides caching, end to end: ``Age`` (RFC 9111
section 5.1). Real
gunicorn with two workers in front of the recording origin; each test asserts on what the
client received and on how often the origin was asked.

A response is "reused" when the second request is a HIT and the origin saw one request; it
is "not reused" when the origin saw both (the proxy found it stale, or did not store it).
"""

from __future__ import annotations

import pytest
from support.origin import Origin
from support.proxy import ProxyProcess


def reused(proxy: ProxyProcess, origin: Origin, path: str) -> bool:
    """Ask twice; whether the second answer came from the cache without asking the origin."""
    first = proxy.get(path)
    second = proxy.get(path)
    assert (first.status, second.status) == (200, 200), second.describe()
    count = origin.count(path)
    assert count in (1, 2), count
    assert (second.x_cache == "HIT") == (count == 1), second.describe()
    return count == 1


# ---- Age (RFC 9111 section 5.1) -----------------------------------------------------------

AGE_CASES = [
    # (case, Age field lines, reused with max-age=3600)
    ("a list uses its first member", ["0, 7200"], True),
    ("a list whose first member is old", ["7200, 0"], False),
    ("two lines use the first", ["0", "7200"], True),
    ("two lines, the first old", ["7200", "0"], False),
    ("non-numeric: the field is ignored", ["abc"], True),
    ("negative: ignored", ["-7200"], True),
    ("with a parameter: ignored", ["7200;foo=bar"], True),
    ("2^31 or more: the largest age, stale", ["2147483648"], False),
]


@pytest.mark.parametrize(("case", "lines", "expected"), AGE_CASES)
def test_age_uses_its_first_member_and_an_invalid_age_is_ignored(
    proxy: ProxyProcess, origin: Origin, case: str, lines: list[str], expected: bool
) -> None:
    fields = [("Cache-Control", "max-age=3600"), *(("Age", line) for line in lines)]
    path = origin.route("/age", headers=fields, body=b"aged")
    assert reused(proxy, origin, path) is expected, case
