"""Access logging for gunicorn: the cache status and the origin's latency on every line.

``ACCESS_LOG_FORMAT`` extends gunicorn's combined format; ``JsonLogger`` writes one JSON
object per request instead (``WSGI_PROXY_LOG_FORMAT=json``). The origin latency comes from
the ``wsgi_proxy.origin_ms`` environ key that proxy.py sets ("-" when the origin was not
asked).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import time
import traceback
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from gunicorn.glogging import Logger

from wsgi_proxy.core.config import Config
from wsgi_proxy.core.errors import ConfigError
from wsgi_proxy.core.headers import client_address
from wsgi_proxy.ops.body_bytes import body_bytes_sent
from wsgi_proxy.ops.durations import record_request
from wsgi_proxy.tuning import is_tuned
from wsgi_proxy.tuning.log_writes import write_line
from wsgi_proxy.tuning.per_second import PerSecond

ACCESS_LOG_FORMAT = (
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" '
    "cache=%({x-cache}o)s origin_ms=%({wsgi_proxy.origin_ms}e)s ms=%(M)s "
    '"%({cache-status}o)s"'
)


class ProxyLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger, with an access log that computes only the atoms its format uses.

    gunicorn's own ``atoms()`` copies every request header, response header and environ
    key into a dict on every request; on a cache hit that was a fifth of the worker's time
    (py-spy; docs/performance.md). ``_Atoms`` answers the same names,
    escaped the same way (gunicorn's ``SafeAtoms``), computing each when the format asks.
    """

    logs_access = False  # set by setup()
    writes_direct = False  # set by setup(): the seam's direct write (tuning/log_writes.py)

    def setup(self, cfg: Any) -> None:
        """gunicorn's (at start, and at a reload on recent gunicorns), then whether there is
        an access log at all, tested as gunicorn's own ``access()`` does: gunicorn 23 tests
        it on every request, 27 once here (its ``access_log_enabled``, which 23 lacks)."""
        super().setup(cfg)
        _package_lines_to(self.error_log)
        self.writes_direct = is_tuned("python")
        self.logs_access = bool(
            cfg.accesslog
            or cfg.logconfig
            or cfg.logconfig_dict
            or cfg.logconfig_json
            or (cfg.syslog and not cfg.disable_redirect_access_to_syslog)
        )

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        record_request(request_time)  # the duration histogram, logged or not (durations.py)
        if not self.logs_access:
            return
        try:
            fmt = self.cfg.access_log_format
            if fmt == ACCESS_LOG_FORMAT:
                self._write(_default_line(resp, environ, request_time))
            else:
                self._write(fmt % _Atoms(resp, req, environ, request_time))
        except Exception:  # noqa: BLE001 - logging must never break a request
            self.error(traceback.format_exc())

    def _write(self, line: str) -> None:
        """One access-log line: straight to gunicorn's stream where the seam is on
        (tuning/log_writes.py), else through logging."""
        if not (self.writes_direct and write_line(self.access_log, line, self.access_fmt)):
            self.access_log.info("%s", line)


# Marks the package's logger as set here, from gunicorn's error log (at a reload: again).
_FROM_GUNICORN = "wsgi_proxy_from_gunicorn"


def _package_lines_to(error_log: logging.Logger) -> None:
    """The package's own lines (a 4xx's cause, a purge, a disk's trouble) to gunicorn's
    error log: its handlers, so its format and file, and its level (``--log-level``).
    Without a handler of their own they reached Python's last resort, which drops INFO
    and prints the rest bare. Nothing changes where the operator configured logging
    (gunicorn's ``logconfig`` and the like) so that the package's logger has handlers of
    its own, or the error log has none (its lines go up to the root's)."""
    package = logging.getLogger("wsgi_proxy")
    if package.handlers and not getattr(package, _FROM_GUNICORN, False):
        return
    handlers = list(error_log.handlers)  # at a reload, the new ones
    package.handlers = handlers
    package.setLevel(error_log.level if handlers else logging.NOTSET)
    package.propagate = not handlers
    setattr(package, _FROM_GUNICORN, bool(handlers))


class JsonLogger(ProxyLogger):
    """gunicorn's logger with one JSON object per access-log line: ``time`` in ISO 8601
    with the UTC offset (when the answer ended), numbers as JSON numbers (``status``,
    ``bytes``, ``ms`` and ``origin_ms`` to 0.1 ms; ``null`` where there is none), and
    ``remote`` the client's address through WSGI_PROXY_TRUSTED_PROXIES (the first entry of
    the ``X-Forwarded-For`` the proxy sends on), not the address of the proxy in front.
    docs/operations.md lists the fields."""

    trusted_proxies = 0  # set by setup()

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        # A bad setting: on_starting stops the server naming it (server/settings.py).
        with contextlib.suppress(ConfigError):
            self.trusted_proxies = Config.from_env().trusted_proxies

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        record_request(request_time)  # the duration histogram, logged or not (durations.py)
        if not self.logs_access:
            return
        try:
            self._write(json.dumps(self.record(resp, req, environ, request_time)))
        except Exception:  # noqa: BLE001 - logging must never break a request
            self.error(traceback.format_exc())

    def record(
        self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any
    ) -> dict[str, Any]:
        """The line's fields, in the order they are written."""
        atoms = _Atoms(resp, req, environ, request_time, escape=False)
        remote = str(environ.get("REMOTE_ADDR", "-"))
        status = atoms["s"]
        return {
            "time": datetime.now().astimezone().isoformat(timespec="milliseconds"),
            "remote": client_address(
                environ.get("HTTP_X_FORWARDED_FOR"), remote, self.trusted_proxies
            ),
            "method": atoms["m"],
            "path": atoms["U"],
            "query": atoms["q"],
            "status": int(status) if str(status).isdigit() else None,
            "bytes": atoms["B"],
            "ms": round(request_time.total_seconds() * 1000, 1),
            "cache": atoms["{x-cache}o"],
            "cache_status": atoms["{cache-status}o"],
            "origin_ms": _milliseconds(environ.get("wsgi_proxy.origin_ms")),
            "referer": atoms["f"],
            "user_agent": atoms["a"],
        }


def _milliseconds(value: Any) -> float | None:
    """The origin's time as set by forwarding.py (a string with one decimal), as a number."""
    try:
        return round(float(value), 1) if value is not None else None
    except ValueError:
        return None


def _default_line(resp: Any, environ: dict[str, Any], rt: Any) -> str:
    """``ACCESS_LOG_FORMAT`` % ``_Atoms(...)``, written out: the same line (a unit test
    compares them) without a lookup per atom: the default set-up logs every request."""
    x_cache = cache_status = "-"
    for key, value in resp.headers:
        name = key.lower()
        if name == "x-cache":
            x_cache = value
        elif name == "cache-status":
            cache_status = value
    status = resp.status
    if isinstance(status, str):
        status = _q(status.split(None, 1)[0])
    sent = body_bytes_sent(resp, environ)
    user = _basic_user(environ.get("HTTP_AUTHORIZATION")) or "-"
    request = f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}"
    return (
        f'{_q(environ.get("REMOTE_ADDR", "-"))} - {_q(user)} {_now()} "{_q(request)}" '
        f'{status} {"-" if sent is None else sent} "{_q(environ.get("HTTP_REFERER", "-"))}" '
        f'"{_q(environ.get("HTTP_USER_AGENT", "-"))}" cache={_q(x_cache)} '
        f"origin_ms={_q(environ.get('wsgi_proxy.origin_ms', '-'))} "
        f'ms={rt.seconds * 1000 + rt.microseconds // 1000} "{_q(cache_status)}"'
    )


def _q(value: Any) -> Any:
    return value.replace('"', '\\"') if isinstance(value, str) else value


class _Atoms(Mapping[str, Any]):
    """gunicorn's access-log atoms (``%(h)s``, ``%({name}i)s`` ...), computed on demand;
    "-" for an unknown one, and ``"`` escaped in text values, as gunicorn does."""

    def __init__(
        self, resp: Any, req: Any, environ: dict[str, Any], rt: Any, *, escape: bool = True
    ) -> None:
        self.resp, self.req, self.environ, self.rt, self.escape = resp, req, environ, rt, escape

    def __len__(self) -> int:
        return 1  # logging passes a mapping argument on only if it is non-empty

    def __iter__(self) -> Iterator[str]:
        return iter(())  # computed on demand: nothing to list

    def __getitem__(self, key: str) -> Any:
        value = self._value(key)
        if self.escape and isinstance(value, str):
            return value.replace('"', '\\"')
        return value

    def _value(self, key: str) -> Any:
        env, rt = self.environ, self.rt
        if key.startswith("{"):
            return self._field(key[1:-2].lower(), key[-1:])
        if key == "h":
            return env.get("REMOTE_ADDR", "-")
        if key == "t":
            return _now()
        if key == "r":
            return f"{env['REQUEST_METHOD']} {env['RAW_URI']} {env['SERVER_PROTOCOL']}"
        if key == "s":
            status = self.resp.status
            return status.split(None, 1)[0] if isinstance(status, str) else status
        if key in ("b", "B"):
            sent = body_bytes_sent(self.resp, env)
            return sent if key == "B" else ("-" if sent is None else str(sent))
        if key == "M":
            return rt.seconds * 1000 + rt.microseconds // 1000
        if key in _ENVIRON_ATOMS:
            name, default = _ENVIRON_ATOMS[key]
            return env.get(name, default)
        if key == "u":
            return _basic_user(env.get("HTTP_AUTHORIZATION")) or "-"
        if key == "T":
            return rt.seconds
        if key == "D":
            return rt.seconds * 1000000 + rt.microseconds
        if key == "L":
            return f"{rt.seconds}.{rt.microseconds:06d}"
        if key == "p":
            return f"<{os.getpid()}>"
        return "-"  # "l" and anything unknown

    def _field(self, name: str, kind: str) -> Any:
        if kind == "e":
            for key, value in self.environ.items():
                if key.lower() == name:
                    return value
            return "-"
        headers = self.resp.headers if kind == "o" else getattr(self.req, "headers", ())
        found = "-"
        for key, value in headers:
            if key.lower() == name:
                found = value  # the last of repeated fields, as gunicorn's dict keeps it
        return found


_ENVIRON_ATOMS = {
    "m": ("REQUEST_METHOD", None),
    "U": ("PATH_INFO", None),
    "q": ("QUERY_STRING", None),
    "H": ("SERVER_PROTOCOL", None),
    "f": ("HTTP_REFERER", "-"),
    "a": ("HTTP_USER_AGENT", "-"),
}
# The Common Log Format time, formatted once a second.
_now = PerSecond(lambda second: time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(second)))


def _basic_user(authorization: str | None) -> str | None:
    if not authorization or not authorization.lower().startswith("basic"):
        return None
    parts = authorization.split(" ", 1)
    if len(parts) != 2:
        return None
    try:
        return base64.b64decode(parts[1].strip().encode()).split(b":", 1)[0].decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
