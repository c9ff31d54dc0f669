"""The access log's lazy atoms format exactly as gunicorn's own atoms() would."""

from __future__ import annotations

import datetime
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from gunicorn.config import Config as GunicornConfig
from gunicorn.glogging import Logger, SafeAtoms

from wsgi_proxy.ops.access_log import (
    ACCESS_LOG_FORMAT,
    ProxyLogger,
    _Atoms,
    _default_line,
    _package_lines_to,
)


@dataclass
class Resp:
    status: str = "200 OK"
    headers: list[tuple[str, str]] = field(default_factory=list)
    sent: int | None = 1024


@dataclass
class Req:
    headers: list[tuple[str, str]] = field(default_factory=list)


def _environ(**extra: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "RAW_URI": "/a?b=1",
        "PATH_INFO": "/a",
        "QUERY_STRING": "b=1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.0.0.1",
        **extra,
    }


CASES = [
    ("plain hit", Resp(headers=[("X-Cache", "HIT"), ("Cache-Status", "p; hit")]), Req(),
     _environ(HTTP_USER_AGENT="wrk")),
    ("quotes escaped", Resp(headers=[("Cache-Status", 'p; detail="x"')]), Req(),
     _environ(HTTP_USER_AGENT='a "b"', HTTP_REFERER='"r"')),
    ("no body sent, origin time", Resp(status="304 Not Modified", sent=None), Req(),
     _environ(**{"wsgi_proxy.origin_ms": "1.5"})),
    ("basic user", Resp(), Req(), _environ(HTTP_AUTHORIZATION="Basic dXNlcjpwdw==")),
    ("bad basic user", Resp(), Req(), _environ(HTTP_AUTHORIZATION="Basic !!!")),
    ("repeated field: last wins", Resp(headers=[("X-Cache", "MISS"), ("x-cache", "HIT")]),
     Req(), _environ()),
]  # fmt: skip

FORMATS = [
    ACCESS_LOG_FORMAT,
    '%(h)s %(l)s %(u)s "%(r)s" %(s)s %(b)s %(B)s %(m)s %(U)s %(q)s %(H)s %(T)s %(D)s %(L)s',
    "%({user-agent}i)s %({x-cache}o)s %({remote_addr}e)s %({missing}o)s %(zz)s",
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(("name", "resp", "req", "environ"), CASES, ids=[c[0] for c in CASES])
def test_lazy_atoms_match_gunicorn(
    fmt: str, name: str, resp: Resp, req: Req, environ: dict[str, Any]
) -> None:
    logger = Logger(GunicornConfig())
    req.headers = [(k[5:].replace("_", "-"), v) for k, v in environ.items()
                   if k.startswith("HTTP_")]  # fmt: skip
    rt = datetime.timedelta(seconds=1, microseconds=2345)
    before = fmt % SafeAtoms(logger.atoms(resp, req, environ, rt))
    line = fmt % _Atoms(resp, req, environ, rt)
    after = fmt % SafeAtoms(logger.atoms(resp, req, environ, rt))
    _assert_same_line(line, before, after, name)


@pytest.mark.parametrize(("name", "resp", "req", "environ"), CASES, ids=[c[0] for c in CASES])
def test_default_line_matches_gunicorn(
    name: str, resp: Resp, req: Req, environ: dict[str, Any]
) -> None:
    logger = Logger(GunicornConfig())
    rt = datetime.timedelta(seconds=2, microseconds=345678)
    before = ACCESS_LOG_FORMAT % SafeAtoms(logger.atoms(resp, req, environ, rt))
    line = _default_line(resp, environ, rt)
    after = ACCESS_LOG_FORMAT % SafeAtoms(logger.atoms(resp, req, environ, rt))
    _assert_same_line(line, before, after, name)


_STAMP = re.compile(r"\[\d\d/\w\w\w/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]")


def _assert_same_line(line: str, before: str, after: str, name: str) -> None:
    """``line`` is gunicorn's ``before`` or ``after`` line but for the time stamp, which
    may differ by a second: gunicorn reads C's ``time()``, a coarse clock that turns to
    the next second a few milliseconds after ``time.time()`` does."""
    assert _STAMP.sub("[t]", line) in (_STAMP.sub("[t]", before), _STAMP.sub("[t]", after)), name
    ours = [_when(stamp) for stamp in _STAMP.findall(line)]
    theirs = [_when(stamp) for stamp in _STAMP.findall(before) + _STAMP.findall(after)]
    assert len(ours) == len(theirs) // 2, name
    for when in ours:
        assert min(theirs) <= when <= max(theirs) + 1, name


def _when(stamp: str) -> float:
    return datetime.datetime.strptime(stamp, "[%d/%b/%Y:%H:%M:%S %z]").timestamp()


def test_time_atom_is_now_in_the_common_log_format() -> None:
    stamp = _Atoms(Resp(), Req(), _environ(), datetime.timedelta(0))["t"]
    when = datetime.datetime.strptime(stamp, "[%d/%b/%Y:%H:%M:%S %z]")
    assert abs(when.timestamp() - time.time()) < 2


def test_proxy_logger_is_a_gunicorn_logger() -> None:
    assert issubclass(ProxyLogger, Logger)


# The package's logger after _package_lines_to: (the operator's own handler on it first,
# gunicorn's error log with a handler) -> (its handler is the error log's, it propagates).
PACKAGE_CASES = [
    ((False, True), (True, False)),  # the default: to the error log's handler
    ((False, False), (False, True)),  # the error log has none (a logconfig): left to the root
    ((True, True), (False, True)),  # the operator's own handler stays, untouched
    ((True, False), (False, True)),
]


@pytest.mark.parametrize(("given", "expected"), PACKAGE_CASES)
def test_the_packages_lines_go_where_the_error_log_goes(
    given: tuple[bool, bool], expected: tuple[bool, bool]
) -> None:
    own, error_has_handler = given
    package = logging.getLogger("wsgi_proxy")
    saved = (package.handlers, package.level, package.propagate, vars(package).copy())
    error_log = logging.getLogger("test.error")
    error_handler = logging.NullHandler()
    error_log.handlers = [error_handler] if error_has_handler else []
    error_log.setLevel(logging.INFO)
    package.handlers = [logging.NullHandler()] if own else []
    try:
        for _ in range(2):  # a reload calls it again
            _package_lines_to(error_log)
        assert ((package.handlers == [error_handler]), package.propagate) == expected
        if expected[0]:
            assert package.level == logging.INFO
    finally:
        package.handlers, package.level, package.propagate = saved[:3]
        vars(package).clear()
        vars(package).update(saved[3])
        error_log.handlers = []
