"""The one seam for library internals: every use of a private or undocumented name of
gunicorn, urllib3 or the standard library (http.client, logging, socket) lives in this
folder, and is listed in ``USES`` with the versions it was verified on.

Rules:
- Each use is switched by ``is_tuned(library)``, asked once where the choice is made (a
  worker's start, a pool's or a connection's making), never per request. It is true only
  when ``WSGI_PROXY_TUNING`` is ``on`` and the installed version of that library is one of
  ``VERIFIED``'s. Otherwise the library's own behaviour runs: gunicorn's gthread worker,
  response writer and settings object; http.client's head parsing; urllib3's ``urlopen``;
  logging's handlers. ``report()`` gives the one warning per library that start-up logs.
- Nothing here replaces a library's global: a tuned object is one the proxy made or was
  handed (its worker, a connection of its own pool, one response's writer).
- A tuning stays only if the in-repo benchmark shows it above the noise, side by side with
  it off (docs/performance.md); the unit tests under tests/unit/tuning/ compare each tuned
  path with the library's own behaviour, on the versions installed.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from dataclasses import dataclass
from importlib import metadata

# The versions (major.minor) each library's uses below were verified on: the unit tests of
# tests/unit/tuning/ and the whole suite passed with them.
VERIFIED: dict[str, tuple[str, ...]] = {
    "gunicorn": ("27.0",),
    "urllib3": ("2.8",),
    "python": ("3.11",),
}


@dataclass(frozen=True)
class Use:
    """One use of a library's internals."""

    module: str  # the file in this folder
    library: str  # a key of VERIFIED
    names: str  # the private or undocumented names it relies on
    purpose: str  # what it buys; the library's own behaviour is the fallback


USES: tuple[Use, ...] = (
    Use(
        "head_gathering",
        "gunicorn",
        "gthread.ThreadWorker: accept, enqueue_req, on_client_socket_readable, "
        "finish_request, murder_keepalived, wait_for_and_dispatch_events, poller, "
        "nr_conns, _accepting; TConn.parser",
        "no thread waits on a slow request head; WSGI_PROXY_CLIENT_TIMEOUT bounds a head",
    ),
    Use(
        "gthread_worker",
        "gunicorn",
        "gthread.ThreadWorker.get_thread_pool, set_accept_enabled, _accepting, accept",
        "the elastic thread pool (WSGI_PROXY_ACTIVE_THREADS); a stopping worker with its "
        "own socket (reuse_port) accepts a moment longer, so a reload refuses nobody",
    ),
    Use(
        "gunicorn_response",
        "gunicorn",
        "http.wsgi.Response: default_headers, process_headers, send_headers, write, "
        "sendfile, headers_sent, chunked, upgrade; one response's class replaced",
        "Date once a second, head and body in one writev, field checks memoised, "
        "sendfile without the poll and seek",
    ),
    Use(
        "gunicorn_config",
        "gunicorn",
        "config.Config.__getattr__, is_ssl, sendfile; the worker's settings object's class",
        "each setting looked up once per worker instead of ~25 times per request",
    ),
    Use(
        "origin_heads",
        "python",
        "http.client.HTTPResponse.begin (copied), _read_status, _read_headers, "
        "_check_close, _method, length, chunked, will_close; email Message._headers",
        "plain response heads parsed without the email package",
    ),
    Use(
        "origin_requests",
        "python",
        "http.client.HTTPConnection._output",
        "a plain GET or HEAD head written in one block, without three layers of checks",
    ),
    Use(
        "origin_requests",
        "urllib3",
        "connection._ResponseOptions, HTTPConnection._response_options",
        "the same: what urllib3's request records for the response",
    ),
    Use(
        "origin_pool",
        "urllib3",
        "HTTPConnectionPool._get_conn, _put_conn, _make_request",
        "the request target sent byte for byte (urlopen re-encodes it), one retry of a "
        "reused connection the origin had closed, no risky reuse of an idle one",
    ),
    Use(
        "log_writes",
        "python",
        "logging.Formatter._fmt",
        "an access-log line written to gunicorn's stream without a LogRecord",
    ),
)


def installed(library: str) -> str:
    """The installed version of ``library`` (``python``: the interpreter's)."""
    if library == "python":
        return ".".join(str(part) for part in sys.version_info[:3])
    return metadata.version(library)


def is_at_least(library: str, version: str) -> bool:
    """Whether the installed ``library`` is ``version`` (major.minor or major.minor.patch)
    or newer: for what a release brought, used where the installed version has it."""
    return _release(installed(library)) >= _release(version)


def _release(version: str) -> tuple[int, ...]:
    """The leading numbers of ``version``, three of them: (27, 0, 1) for 27.0.1, (25, 0, 0)
    for 25.0b1."""
    found = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", version)
    if found is None:
        raise ValueError(f"not a version: {version!r}")
    return tuple(int(part or 0) for part in found.groups())


def is_verified(library: str, version: str | None = None) -> bool:
    """Whether ``version`` (the installed one by default) is one ``library``'s uses were
    verified on."""
    found = installed(library) if version is None else version
    return any(found == v or found.startswith(v + ".") for v in VERIFIED[library])


def is_enabled() -> bool:
    """``WSGI_PROXY_TUNING``: off turns every use off. (Validated at start-up with the other
    server settings, core/config.py; anything but ``off`` counts as on here.)"""
    return os.environ.get("WSGI_PROXY_TUNING", "on") != "off"


@functools.cache
def is_tuned(library: str) -> bool:
    """Whether the uses of ``library``'s internals are on in this process."""
    return is_enabled() and is_verified(library)


def report() -> list[str]:
    """What start-up logs about the seam: one line per library whose installed version was
    not verified (its uses stay off), or one line if the setting turned them all off."""
    if not is_enabled():
        return ["WSGI_PROXY_TUNING=off: the libraries' own behaviour throughout"]
    return [
        f"{library} {installed(library)} is not a version wsgi_proxy's tunings were verified "
        f"on ({', '.join(VERIFIED[library])}): its own behaviour is used instead"
        for library in VERIFIED
        if not is_verified(library)
    ]
