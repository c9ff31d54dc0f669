"""Configuration: read once from ``WSGI_PROXY_*`` environment variables, validated, frozen.

Invariants:
- This is the only module that reads ``os.environ``.
- Every invalid value raises ``ConfigError`` naming the variable, at start-up, before any
  request is served.
- ``Config`` holds what the WSGI app needs; ``ServerConfig`` holds gunicorn's settings,
  which ``gunicorn.conf.py`` and the CLI both use.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from wsgi_proxy.core.errors import ConfigError
from wsgi_proxy.core.sites import parse_allowed_hosts

T = TypeVar("T")

PREFIX = "WSGI_PROXY_"
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kKmMgGtT]?)[iI]?[bB]?\s*$")
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


@dataclass(frozen=True, slots=True)
class Origin:
    """The one server every request is sent to."""

    scheme: str
    host: str
    port: int

    @property
    def authority(self) -> str:
        """``host[:port]`` as sent in ``Host``, the port left out when it is the default."""
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}"


@dataclass(frozen=True, slots=True)
class Config:
    """Settings of the WSGI app. Each field's variable is ``WSGI_PROXY_<FIELD NAME>``."""

    origin: Origin
    """WSGI_PROXY_ORIGIN: the origin server, ``http(s)://host[:port]`` without a path."""
    cache_dir: Path
    """WSGI_PROXY_CACHE_DIR: the cache folder shared by all workers."""
    metrics_dir: Path
    """WSGI_PROXY_METRICS_DIR: per-process metric files, summed at scrape time; emptied at
    start (default: beside the cache folder, ``<cache folder>.metrics``)."""
    max_size: int
    """WSGI_PROXY_MAX_SIZE: bytes the cache may keep on disk (k, M, G suffixes: 1024 powers)."""
    max_object_size: int
    """WSGI_PROXY_MAX_OBJECT_SIZE: the largest body stored; larger ones pass through."""
    touch_interval: float
    """WSGI_PROXY_TOUCH_INTERVAL: seconds between a stored file's LRU touches: a hit
    refreshes the file's mtime, which eviction goes by, when it is older than this. Each
    touch is a write to the disk; files used within it count as equally recent."""
    connect_timeout: float
    """WSGI_PROXY_CONNECT_TIMEOUT: seconds to connect to the origin before answering 502."""
    read_timeout: float
    """WSGI_PROXY_READ_TIMEOUT: seconds the origin may stay silent before answering 504."""
    client_timeout: float
    """WSGI_PROXY_CLIENT_TIMEOUT: seconds a client has to send its whole request head (then
    408, gathering.py), and may stall while sending its body or receiving the response
    before its connection is closed (it frees the thread)."""
    max_body_size: int
    """WSGI_PROXY_MAX_BODY_SIZE: the largest request body forwarded; larger ones get 413."""
    lock_timeout: float
    """WSGI_PROXY_LOCK_TIMEOUT: seconds a request waits for another worker fetching the same
    URL before it fetches itself."""
    pool_size: int
    """WSGI_PROXY_POOL_SIZE: origin connections kept open per worker."""
    lock_stripes: int
    """WSGI_PROXY_LOCK_STRIPES: number of lock files that URLs are spread over."""
    stale_if_error: float
    """WSGI_PROXY_STALE_IF_ERROR: seconds past its freshness that a stored response may
    still be served when the origin is unreachable, times out or answers 500/502/503/504,
    unless the response forbids stale use (0 turns it off; a larger ``stale-if-error``
    from the origin wins)."""
    max_variants: int
    """WSGI_PROXY_MAX_VARIANTS: stored variants (``Vary``) per URL; the oldest goes first."""
    tag_header: str
    """WSGI_PROXY_TAG_HEADER: origin response field with space-separated purge tags
    (surrogate keys); stored with the response, never sent on to clients."""
    admin_prefix: str
    """WSGI_PROXY_ADMIN_PREFIX: reserved path of the admin interface, never proxied."""
    admin_token: str
    """WSGI_PROXY_ADMIN_TOKEN: bearer token that opens metrics and purge (empty: none)."""
    admin_allow: tuple[IPv4Network | IPv6Network, ...]
    """WSGI_PROXY_ADMIN_ALLOW: comma-separated addresses or networks that may use metrics
    and purge without the token (empty: none). Health and readiness are always open."""
    trusted_proxies: int
    """WSGI_PROXY_TRUSTED_PROXIES: proxies in front (nginx: 1) whose ``X-Forwarded-For``
    entries are passed on, and whose ``X-Forwarded-Proto`` gives the scheme the client used;
    what the client itself wrote there is dropped. The admin interface's address check
    applies to every address on that path."""
    allowed_hosts: tuple[str, ...]
    """WSGI_PROXY_ALLOWED_HOSTS: comma-separated host names (``shop.example``, any port),
    ``.example.com`` (it and every name under it), ``*.example.com`` (the names under it)
    or ``*``; a request for any other host gets 421 and never reaches the origin (empty:
    every host, each cached apart)."""
    via_name: str
    """WSGI_PROXY_VIA_NAME: this proxy's name in ``Via`` and ``Cache-Status``, and its device
    token in ``Surrogate-Capability`` and ``;token``-targeted ``Surrogate-Control``."""
    targeted_fields: tuple[str, ...]
    """WSGI_PROXY_TARGETED_FIELDS: comma-separated targeted cache-control fields (RFC 9213)
    obeyed instead of Cache-Control, the first with a valid value wins. RFC 9213 fields
    (CDN-Cache-Control) are passed on to clients; Surrogate-Control is not."""
    peers: tuple[str, ...]
    """WSGI_PROXY_PEERS: comma-separated base URLs (``http://host:port``) of every node's
    admin interface, this one included; a purge is sent to all of them (empty: purges stay
    on this node)."""
    node_url: str
    """WSGI_PROXY_NODE_URL: this node's base URL as the other nodes reach it, one of
    ``peers``; names it in Redis (tag index, fetch locks). Required with ``redis_url``."""
    redis_url: str
    """WSGI_PROXY_REDIS_URL: the shared tier (``redis://host:port/db``): purge log, tag
    index, cross-node coalescing (empty: off)."""
    early_hints: bool
    """WSGI_PROXY_EARLY_HINTS: ``on`` passes the origin's ``103 Early Hints`` on to HTTP/1.1
    clients as interim responses; ``off`` (the default) drops them, as every other interim
    response is dropped. nginx before 1.29 and urllib3-based clients (pip, requests) take
    a 103 for the final response, so only turn it on where the clients in front take 1xx."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        """Read and validate every setting; raise ``ConfigError`` naming the first bad one."""
        env = os.environ if environ is None else environ
        max_size = _read(env, "MAX_SIZE", "1G", parse_size)
        cache_dir = _read(env, "CACHE_DIR", str(_default_cache_dir(env)), parse_dir)
        config = cls(
            origin=_read(env, "ORIGIN", "http://127.0.0.1:8000", parse_origin),
            cache_dir=cache_dir,
            metrics_dir=_read(env, "METRICS_DIR", f"{cache_dir}.metrics", parse_dir),
            max_size=max_size,
            max_object_size=_read(env, "MAX_OBJECT_SIZE", str(max_size // 2), parse_size),
            touch_interval=_read(env, "TOUCH_INTERVAL", "60", parse_seconds),
            connect_timeout=_read(env, "CONNECT_TIMEOUT", "5", parse_seconds),
            read_timeout=_read(env, "READ_TIMEOUT", "30", parse_seconds),
            client_timeout=_read(env, "CLIENT_TIMEOUT", "60", parse_seconds),
            max_body_size=_read(env, "MAX_BODY_SIZE", "100M", parse_size),
            lock_timeout=_read(env, "LOCK_TIMEOUT", "10", parse_seconds),
            pool_size=_read(env, "POOL_SIZE", "64", _positive_int),
            lock_stripes=_read(env, "LOCK_STRIPES", "65536", _positive_int),
            stale_if_error=_read(env, "STALE_IF_ERROR", "300", parse_seconds_or_zero),
            max_variants=_read(env, "MAX_VARIANTS", "32", _positive_int),
            tag_header=_read(env, "TAG_HEADER", "Surrogate-Key", parse_token),
            admin_prefix=_read(env, "ADMIN_PREFIX", "/_wsgi_proxy", parse_path_prefix),
            admin_token=env.get(PREFIX + "ADMIN_TOKEN", ""),
            admin_allow=_read(env, "ADMIN_ALLOW", "", parse_networks),
            trusted_proxies=_read(env, "TRUSTED_PROXIES", "0", _non_negative_int),
            allowed_hosts=_read(env, "ALLOWED_HOSTS", "", parse_allowed_hosts),
            via_name=_read(env, "VIA_NAME", "wsgi_proxy", parse_token),
            targeted_fields=_read(
                env, "TARGETED_FIELDS", "CDN-Cache-Control, Surrogate-Control", parse_field_list
            ),
            peers=_read(env, "PEERS", "", parse_base_urls),
            node_url=_read(env, "NODE_URL", "", parse_base_url_or_empty),
            redis_url=_read(env, "REDIS_URL", "", parse_redis_url),
            early_hints=_read(env, "EARLY_HINTS", "off", _on_off),
        )
        _check_cluster(config)
        if config.max_object_size > config.max_size:
            raise ConfigError(
                f"{PREFIX}MAX_OBJECT_SIZE",
                f"{config.max_object_size} is larger than {PREFIX}MAX_SIZE ({config.max_size})",
            )
        return config

    def describe(self) -> list[tuple[str, str]]:
        """Each setting as (variable, value), for ``check-config`` and the start-up log."""
        rows = []
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Origin):
                shown = value.url
            elif field.name == "admin_token":
                shown = "(set)" if value else "(none)"
            elif field.name == "redis_url":
                shown = _without_password(value) or "(off)"
            elif isinstance(value, tuple):
                shown = ", ".join(str(v) for v in value)
            else:
                shown = str(value)
            rows.append((PREFIX + field.name.upper(), shown))
        return rows


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """gunicorn's settings; ``gunicorn.conf.py`` turns them into gunicorn variables.

    The defaults were chosen for a proxy that mostly waits on disk and network: threads
    (gthread) hold slow origin requests without a process each; see gunicorn.conf.py.
    """

    bind: str
    """WSGI_PROXY_BIND: the address gunicorn listens on (a ``-b`` flag wins)."""
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
        threads = _read(env, "THREADS", "64", _positive_int)
        return cls(
            bind=_read(env, "BIND", "127.0.0.1:8080", parse_token),
            workers=_read(env, "WORKERS", "2", _positive_int),
            threads=threads,
            active_threads=_read(
                env, "ACTIVE_THREADS", str(min(4, threads)), _at_most(threads, "THREADS")
            ),
            worker_timeout=_read(env, "WORKER_TIMEOUT", "60", _positive_int),
            graceful_timeout=_read(env, "GRACEFUL_TIMEOUT", "30", _positive_int),
            keepalive=_read(env, "KEEPALIVE", "5", _positive_int),
            backlog=_read(env, "BACKLOG", "2048", _positive_int),
            reuse_port=_read(env, "REUSE_PORT", "on", _on_off),
            share_port=_read(env, "SHARE_PORT", "off", _on_off),
            max_url_length=_read(env, "MAX_URL_LENGTH", "8190", _url_length),
            max_headers=_read(env, "MAX_HEADERS", "100", _positive_int),
            max_header_size=_read(env, "MAX_HEADER_SIZE", "8190", _positive_int),
            tuning=_read(env, "TUNING", "on", _on_off),
            log_format=_read(env, "LOG_FORMAT", "text", _log_format),
        )


def _on_off(raw: str) -> bool:
    if raw not in ("on", "off"):
        raise ValueError("expected on or off")
    return raw == "on"


def _at_most(limit: int, name: str) -> Callable[[str], int]:
    """A positive integer no greater than ``limit``, the value of WSGI_PROXY_``name``."""

    def parse(raw: str) -> int:
        value = _positive_int(raw)
        if value > limit:
            raise ValueError(f"more than {PREFIX}{name} ({limit})")
        return value

    return parse


def _read(env: Mapping[str, str], name: str, default: str, parse: Callable[[str], T]) -> T:
    raw = env.get(PREFIX + name, default)
    try:
        return parse(raw)
    except ValueError as exc:
        raise ConfigError(PREFIX + name, f"{raw!r}: {exc}") from None


def _default_cache_dir(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "wsgi_proxy"


def parse_origin(raw: str) -> Origin:
    """``http(s)://host[:port]``; a path, query, fragment or user part is refused."""
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https"):
        raise ValueError("the scheme must be http or https")
    if not parts.hostname:
        raise ValueError("a host is required")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError("give only scheme://host[:port], without path, query or user")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    default_port = 443 if parts.scheme == "https" else 80
    return Origin(parts.scheme, parts.hostname, port or default_port)


def parse_size(raw: str) -> int:
    """A byte count: ``1048576``, ``512k``, ``100M``, ``2G`` (1024 powers)."""
    match = _SIZE_RE.match(raw)
    if match is None:
        raise ValueError("expected a size such as 1048576, 512k, 100M or 2G")
    size = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if size <= 0:
        raise ValueError("the size must be larger than 0")
    return size


def parse_seconds(raw: str) -> float:
    """A positive number of seconds, fractions allowed."""
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if not 0 < seconds < 86400 * 7:
        raise ValueError("expected more than 0 and less than a week of seconds")
    return seconds


def parse_seconds_or_zero(raw: str) -> float:
    """Like ``parse_seconds``, and 0 to turn the feature off."""
    if raw.strip() in ("0", "0.0"):
        return 0.0
    return parse_seconds(raw)


def parse_dir(raw: str) -> Path:
    if not raw.strip():
        raise ValueError("expected a folder path")
    return Path(raw).expanduser().absolute()


def parse_token(raw: str) -> str:
    if not raw or any(c.isspace() or ord(c) < 32 for c in raw):
        raise ValueError("expected a non-empty value without spaces")
    return raw


def parse_path_prefix(raw: str) -> str:
    if not raw.startswith("/") or raw == "/" or any(c in raw for c in "?# \t"):
        raise ValueError("expected a path such as /_wsgi_proxy")
    return raw.rstrip("/")


def parse_networks(raw: str) -> tuple[IPv4Network | IPv6Network, ...]:
    """Comma-separated addresses or CIDR networks."""
    return tuple(ip_network(item.strip(), strict=False) for item in raw.split(",") if item.strip())


def parse_field_list(raw: str) -> tuple[str, ...]:
    """Comma-separated header field names (tokens); may be empty."""
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    for name in names:
        if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise ValueError(f"{name!r} is not a header field name")
    return names


def parse_base_url(raw: str) -> str:
    """``http(s)://host[:port]`` without path, normalised (lower-case scheme and host)."""
    origin = parse_origin(raw)
    return f"{origin.scheme}://{origin.authority}".lower()


def parse_base_url_or_empty(raw: str) -> str:
    return parse_base_url(raw) if raw.strip() else ""


def parse_base_urls(raw: str) -> tuple[str, ...]:
    """Comma-separated base URLs, each once, in the order given; may be empty."""
    urls = [parse_base_url(item) for item in raw.split(",") if item.strip()]
    if len(set(urls)) != len(urls):
        raise ValueError("a URL is listed twice")
    return tuple(urls)


def parse_redis_url(raw: str) -> str:
    """Empty (off), or a URL the redis client takes: ``redis://``, ``rediss://``,
    ``unix://``."""
    raw = raw.strip()
    if not raw:
        return ""
    parts = urlsplit(raw)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("expected redis://host:port/db, rediss://... or unix:///path")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("a host is required")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    return raw


def _check_cluster(config: Config) -> None:
    if config.redis_url and not config.node_url:
        raise ConfigError(f"{PREFIX}NODE_URL", f"required when {PREFIX}REDIS_URL is set")
    if config.node_url and config.peers and config.node_url not in config.peers:
        raise ConfigError(f"{PREFIX}NODE_URL", f"{config.node_url} is not one of {PREFIX}PEERS")


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=user + netloc).geturl()


def _url_length(raw: str) -> int:
    value = _positive_int(raw)
    if value > 8190:
        raise ValueError("gunicorn accepts at most 8190")
    return value


def _log_format(raw: str) -> str:
    if raw not in ("text", "json", "off"):
        raise ValueError("expected text, json or off")
    return raw


def _non_negative_int(raw: str) -> int:
    if raw.strip() == "0":
        return 0
    return _positive_int(raw)


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("expected a whole number") from None
    if value <= 0:
        raise ValueError("expected a whole number larger than 0")
    return value
