"""The server's settings (gunicorn's), read from ``WSGI_PROXY_*`` variables and validated
like the app's (config.py), and the check of the variables' names.

Invariants:
- Every invalid value raises ``ConfigError`` naming the variable, at start-up (the master,
  gunicorn.conf.py, the CLI) and in ``check-config``.
- ``KNOWN`` is every ``WSGI_PROXY_*`` variable the proxy reads: the fields of ``Config``
  and ``ServerConfig``; any other name is most likely a typo, and is warned about (it
  would otherwise be ignored in silence).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from ipaddress import ip_address

from wsgi_proxy.core.config import (
    PREFIX,
    Config,
    parse_on_off,
    positive_int,
    read_setting,
)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """gunicorn's settings; ``gunicorn.conf.py`` turns them into gunicorn variables.

    The defaults were chosen for a proxy that mostly waits on disk and network: threads
    (gthread) hold slow origin requests without a process each; see gunicorn.conf.py.
    """

    bind: str
    """WSGI_PROXY_BIND: the address gunicorn listens on (a ``-b`` flag wins): ``host:port``
    (an IPv6 address in brackets), ``unix:/path`` or ``fd://N``."""
    workers: int
    """WSGI_PROXY_WORKERS: worker processes."""
    threads: int
    """WSGI_PROXY_THREADS: threads per worker: requests a worker serves at once, most of
    them waiting (on the origin, on another request's fetch, on a slow client)."""
    active_threads: int
    """WSGI_PROXY_ACTIVE_THREADS: of those, how many start and run at once (at most
    WSGI_PROXY_THREADS; default 4, or WSGI_PROXY_THREADS if fewer); see wsgi_proxy/pool.py."""
    worker_timeout: int
    """WSGI_PROXY_WORKER_TIMEOUT: seconds before a silent worker is killed and restarted."""
    graceful_timeout: int
    """WSGI_PROXY_GRACEFUL_TIMEOUT: seconds workers get to finish requests on stop/reload."""
    keepalive: int
    """WSGI_PROXY_KEEPALIVE: seconds an idle client connection is kept open."""
    backlog: int
    """WSGI_PROXY_BACKLOG: pending connections the listening socket queues."""
    reuse_port: bool
    """WSGI_PROXY_REUSE_PORT: ``on`` (a listening socket per worker, ``SO_REUSEPORT``: the
    kernel spreads new connections between the workers) or ``off`` (one socket shared by
    all). Only for TCP addresses gunicorn binds itself: a Unix socket or sockets passed by
    systemd are shared whatever this says (server.shared_socket_where_needed)."""
    share_port: bool
    """WSGI_PROXY_SHARE_PORT: ``off`` (the default): start-up fails, naming the address,
    where another process listens on it already, a second wsgi_proxy included; ``on``:
    join another wsgi_proxy's (or any ``SO_REUSEPORT`` socket's, same user) port, the
    kernel sharing new connections between them, e.g. to start a new version before
    stopping the old one. Needs WSGI_PROXY_REUSE_PORT=on (server/listening.py)."""
    max_url_length: int
    """WSGI_PROXY_MAX_URL_LENGTH: longest request line in bytes (at most 8190); longer: 414."""
    max_headers: int
    """WSGI_PROXY_MAX_HEADERS: most request header fields; more: 431."""
    max_header_size: int
    """WSGI_PROXY_MAX_HEADER_SIZE: longest request header field in bytes; longer: 431."""
    tuning: bool
    """WSGI_PROXY_TUNING: ``on`` (the default) uses the speed tunings and the slow-head
    guard of wsgi_proxy/tuning/, each on the library versions it was verified on; ``off``
    uses every library's own behaviour (docs/performance.md says what that costs)."""
    log_format: str
    """WSGI_PROXY_LOG_FORMAT: ``text`` (gunicorn's access log plus cache status and origin
    time), ``json`` (one JSON object per request) or ``off`` (no access log: nginx in front
    logs every request already)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerConfig:
        env = os.environ if environ is None else environ
        threads = read_setting(env, "THREADS", "64", positive_int)
        return cls(
            bind=read_setting(env, "BIND", "127.0.0.1:8080", parse_bind),
            workers=read_setting(env, "WORKERS", "2", positive_int),
            threads=threads,
            active_threads=read_setting(
                env, "ACTIVE_THREADS", str(min(4, threads)), at_most(threads, "THREADS")
            ),
            worker_timeout=read_setting(env, "WORKER_TIMEOUT", "60", positive_int),
            graceful_timeout=read_setting(env, "GRACEFUL_TIMEOUT", "30", positive_int),
            keepalive=read_setting(env, "KEEPALIVE", "5", positive_int),
            backlog=read_setting(env, "BACKLOG", "2048", positive_int),
            reuse_port=read_setting(env, "REUSE_PORT", "on", parse_on_off),
            share_port=read_setting(env, "SHARE_PORT", "off", parse_on_off),
            max_url_length=read_setting(env, "MAX_URL_LENGTH", "8190", url_length),
            max_headers=read_setting(env, "MAX_HEADERS", "100", positive_int),
            max_header_size=read_setting(env, "MAX_HEADER_SIZE", "8190", positive_int),
            tuning=read_setting(env, "TUNING", "on", parse_on_off),
            log_format=read_setting(env, "LOG_FORMAT", "text", log_format_name),
        )


def describe_server(server: ServerConfig) -> list[tuple[str, str]]:
    """Each server setting as (variable, value), for ``check-config``."""
    rows = []
    for field in fields(server):
        value = getattr(server, field.name)
        shown = ("on" if value else "off") if isinstance(value, bool) else str(value)
        rows.append((PREFIX + field.name.upper(), shown))
    return rows


def at_most(limit: int, name: str) -> Callable[[str], int]:
    """A positive integer no greater than ``limit``, the value of WSGI_PROXY_``name``."""

    def parse(raw: str) -> int:
        value = positive_int(raw)
        if value > limit:
            raise ValueError(f"more than {PREFIX}{name} ({limit})")
        return value

    return parse


def url_length(raw: str) -> int:
    value = positive_int(raw)
    if value > 8190:
        raise ValueError("gunicorn accepts at most 8190")
    return value


def log_format_name(raw: str) -> str:
    if raw not in ("text", "json", "off"):
        raise ValueError("expected text, json or off")
    return raw


def parse_bind(raw: str) -> str:
    """gunicorn's listen address: ``host:port`` (a name or an IPv4 address; an IPv6 address
    in brackets), ``unix:/path`` or ``fd://N``. A port is required: gunicorn would take a
    bare word for a host name on port 8000, and fail only when it binds."""
    value = raw.strip()
    if value.startswith("unix:"):
        if not value[5:]:
            raise ValueError("expected unix:/path")
        return value
    if value.startswith("fd://"):
        if not value[5:].isdigit():
            raise ValueError("expected fd://N, N a file descriptor's number")
        return value
    host, colon, port = value.rpartition(":")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected host:port (such as 127.0.0.1:8080), unix:/path or fd://N")
    if host.startswith("[") and host.endswith("]"):
        _address(host[1:-1], 6)
    elif not host or not all(_is_label(label) for label in host.split(".")):
        raise ValueError(f"not a host name or address: {host!r}")
    return value


def _address(text: str, version: int) -> None:
    try:
        if ip_address(text).version == version:
            return
    except ValueError:
        pass
    raise ValueError(f"not an IPv{version} address: {text!r}")


def _is_label(label: str) -> bool:
    """A host name's label (letters, digits, hyphens; an IPv4 address's numbers pass)."""
    return 0 < len(label) < 64 and label.replace("-", "").isalnum() and label.isascii()


KNOWN = frozenset(
    PREFIX + field.name.upper() for cls in (Config, ServerConfig) for field in fields(cls)
)


def unknown_settings(environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each ``WSGI_PROXY_*`` variable the proxy does not read, naming the
    known one it most likely meant."""
    env = os.environ if environ is None else environ
    warnings = []
    for name in sorted(env):
        if name.startswith(PREFIX) and name not in KNOWN:
            close = difflib.get_close_matches(name, KNOWN, n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]}?)" if close else ""
            warnings.append(f"{name} is not a setting of the proxy and is ignored{hint}")
    return warnings
