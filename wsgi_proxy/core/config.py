"""Configuration: read once from ``WSGI_PROXY_*`` environment variables, validated, frozen.

Invariants:
- This module and server_config.py are the only ones that read ``os.environ``.
- Every invalid value raises ``ConfigError`` naming the variable, at start-up, before any
  request is served.
- ``Config`` holds what the WSGI app needs; ``ServerConfig`` (server_config.py) holds
  gunicorn's settings, which ``gunicorn.conf.py`` and the CLI both use.
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
# How the admin token's placeholder in deploy/wsgi-proxy.env begins (parse_admin_token).
PLACEHOLDER_TOKEN = "change-me"  # noqa: S105 - a value refused, not a secret
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
    408, tuning/head_gathering.py), and may stall while sending its body or receiving the response
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
        max_size = read_setting(env, "MAX_SIZE", "1G", parse_size)
        cache_dir = read_setting(env, "CACHE_DIR", str(_default_cache_dir(env)), parse_dir)
        config = cls(
            origin=read_setting(env, "ORIGIN", "http://127.0.0.1:8000", parse_origin),
            cache_dir=cache_dir,
            metrics_dir=read_setting(env, "METRICS_DIR", f"{cache_dir}.metrics", parse_dir),
            max_size=max_size,
            max_object_size=read_setting(env, "MAX_OBJECT_SIZE", str(max_size // 2), parse_size),
            touch_interval=read_setting(env, "TOUCH_INTERVAL", "60", parse_seconds),
            connect_timeout=read_setting(env, "CONNECT_TIMEOUT", "5", parse_seconds),
            read_timeout=read_setting(env, "READ_TIMEOUT", "30", parse_seconds),
            client_timeout=read_setting(env, "CLIENT_TIMEOUT", "60", parse_seconds),
            max_body_size=read_setting(env, "MAX_BODY_SIZE", "100M", parse_size),
            lock_timeout=read_setting(env, "LOCK_TIMEOUT", "10", parse_seconds),
            pool_size=read_setting(env, "POOL_SIZE", "64", positive_int),
            lock_stripes=read_setting(env, "LOCK_STRIPES", "65536", positive_int),
            stale_if_error=read_setting(env, "STALE_IF_ERROR", "300", parse_seconds_or_zero),
            max_variants=read_setting(env, "MAX_VARIANTS", "32", positive_int),
            tag_header=read_setting(env, "TAG_HEADER", "Surrogate-Key", parse_token),
            admin_prefix=read_setting(env, "ADMIN_PREFIX", "/_wsgi_proxy", parse_path_prefix),
            admin_token=read_setting(env, "ADMIN_TOKEN", "", parse_admin_token),
            admin_allow=read_setting(env, "ADMIN_ALLOW", "", parse_networks),
            trusted_proxies=read_setting(env, "TRUSTED_PROXIES", "0", non_negative_int),
            allowed_hosts=read_setting(env, "ALLOWED_HOSTS", "", parse_allowed_hosts),
            via_name=read_setting(env, "VIA_NAME", "wsgi_proxy", parse_token),
            targeted_fields=read_setting(
                env, "TARGETED_FIELDS", "CDN-Cache-Control, Surrogate-Control", parse_field_list
            ),
            peers=read_setting(env, "PEERS", "", parse_base_urls),
            node_url=read_setting(env, "NODE_URL", "", parse_base_url_or_empty),
            redis_url=read_setting(env, "REDIS_URL", "", parse_redis_url),
            early_hints=read_setting(env, "EARLY_HINTS", "off", parse_on_off),
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


def parse_on_off(raw: str) -> bool:
    if raw not in ("on", "off"):
        raise ValueError("expected on or off")
    return raw == "on"


def read_setting(env: Mapping[str, str], name: str, default: str, parse: Callable[[str], T]) -> T:
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


def parse_admin_token(raw: str) -> str:
    """The admin token as given; the placeholder of deploy/wsgi-proxy.env (``change-me``...)
    is refused: left in place, it would open metrics and purge to anyone who read that
    file."""
    if raw.strip().lower().startswith(PLACEHOLDER_TOKEN):
        raise ValueError("still the example file's placeholder: set a long random string")
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


def non_negative_int(raw: str) -> int:
    if raw.strip() == "0":
        return 0
    return positive_int(raw)


def positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("expected a whole number") from None
    if value <= 0:
        raise ValueError("expected a whole number larger than 0")
    return value
