"""The ``caching-proxy`` command (also ``python -m wsgi_proxy``).

    caching-proxy [PORT] [--port N] [--origin URL] [--cache-dir DIR] [--host H]
    caching-proxy --clear-cache
    caching-proxy check-config
    caching-proxy purge URL | --prefix P | --tag T | --all  [--soft]
    caching-proxy stats

In a cluster (``WSGI_PROXY_PEERS``, ``WSGI_PROXY_REDIS_URL``) ``purge`` reaches every node
and exits 1 if any of them failed.

Flags override the ``WSGI_PROXY_*`` variables, which the command otherwise shares with the
app: it sets them in its own environment, so gunicorn's workers read the same values.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from wsgi_proxy.core.config import PREFIX, Config, ServerConfig
from wsgi_proxy.core.errors import ConfigError

if TYPE_CHECKING:
    from wsgi_proxy.store.cache import Store


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["check-config"]:
        return check_config()
    if args[:1] == ["purge"]:
        return purge(args[1:])
    if args[:1] == ["stats"]:
        return stats()
    options = _parser().parse_args(args)
    port = options.port_flag or options.port
    if port is not None:
        os.environ[PREFIX + "BIND"] = f"{options.host}:{port}"
    if options.origin is not None:
        os.environ[PREFIX + "ORIGIN"] = options.origin
    if options.cache_dir is not None:
        os.environ[PREFIX + "CACHE_DIR"] = options.cache_dir
    if options.workers is not None:
        os.environ[PREFIX + "WORKERS"] = str(options.workers)
    try:
        config = Config.from_env()
        server = ServerConfig.from_env()
    except ConfigError as exc:
        print(f"caching-proxy: error: {exc}", file=sys.stderr)
        return 2
    if options.clear_cache:
        return clear_cache(config)
    return serve(server)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caching-proxy",
        description="An HTTP caching reverse proxy. Subcommands: check-config, purge, stats.",
    )
    parser.add_argument("port", nargs="?", type=_port, help="port to listen on")
    parser.add_argument("--port", dest="port_flag", type=_port, help="port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--origin", help=f"origin URL ({PREFIX}ORIGIN)")
    parser.add_argument("--cache-dir", help=f"cache folder ({PREFIX}CACHE_DIR)")
    parser.add_argument("--workers", type=int, help=f"worker processes ({PREFIX}WORKERS)")
    parser.add_argument(
        "--clear-cache", action="store_true", help="empty the cache (safe while serving)"
    )
    return parser


def _port(raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise argparse.ArgumentTypeError(f"invalid port: {raw!r}")
    return int(raw)


def serve(server: ServerConfig) -> int:
    from wsgi_proxy.server.settings import GunicornApp, gunicorn_settings  # noqa: PLC0415

    GunicornApp(gunicorn_settings(server)).run()
    return 0


def clear_cache(config: Config) -> int:
    from wsgi_proxy.store.cache import Store  # noqa: PLC0415

    store = Store(config.cache_dir, lock_stripes=config.lock_stripes, max_variants=1)
    try:
        store.clear()
    except OSError as exc:
        print(f"caching-proxy: error: cannot clear {config.cache_dir}: {exc}", file=sys.stderr)
        return 1
    print(f"cleared {config.cache_dir}")
    return 0


def check_config() -> int:
    """Print every setting; exit 1 naming the first invalid one."""
    from wsgi_proxy.store.cache import check_folder  # noqa: PLC0415

    try:
        config = Config.from_env()
        ServerConfig.from_env()
        check_folder(config.cache_dir)
    except ConfigError as exc:
        print(f"caching-proxy: invalid setting {exc}", file=sys.stderr)
        return 1
    for name, value in config.describe():
        print(f"{name}={value}")
    return 0


def _open_store() -> tuple[Config, Store] | None:
    from wsgi_proxy.store.cache import Store, check_folder  # noqa: PLC0415

    try:
        config = Config.from_env()
        check_folder(config.cache_dir)
    except ConfigError as exc:
        print(f"caching-proxy: error: {exc}", file=sys.stderr)
        return None
    store = Store(
        config.cache_dir, lock_stripes=config.lock_stripes, max_variants=config.max_variants
    )
    return config, store


def purge(args: list[str]) -> int:
    """Purge from the shared folder directly: every running worker sees it at once."""
    from wsgi_proxy.store import purge as purging  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="caching-proxy purge")
    parser.add_argument(
        "url",
        nargs="?",
        help="a path such as /a/b?c (all its variants, "
        "every host), or a URL such as https://shop.example/a (that host)",
    )
    parser.add_argument(
        "--prefix", help="every URL whose path starts with this (a path, or a URL for one host)"
    )
    parser.add_argument("--tag", help="every response tagged with this surrogate key")
    parser.add_argument("--all", action="store_true", help="everything")
    parser.add_argument("--soft", action="store_true", help="mark stale instead of removing")
    options = parser.parse_args(args)
    if sum(x is not None and x is not False for x in (options.url, options.prefix, options.tag,
                                                      options.all or None)) != 1:  # fmt: skip
        parser.error("give exactly one of URL, --prefix, --tag, --all")
    opened = _open_store()
    if opened is None:
        return 2
    config, store = opened
    if options.url is not None:
        order = purging.Purge("url", options.url, options.soft)
    elif options.prefix is not None:
        order = purging.Purge("prefix", options.prefix, options.soft)
    elif options.tag is not None:
        order = purging.Purge("tag", options.tag, options.soft)
    else:
        order = purging.Purge("all", "", options.soft)
    try:
        purging.check(order)
    except ValueError as exc:
        parser.error(str(exc))
    if config.peers or config.redis_url:
        from wsgi_proxy.cluster.nodes import Cluster  # noqa: PLC0415

        report = Cluster(config, store).broadcast(order, issuer="cli")
        print(report.format())
        return 1 if report.failed else 0
    print(f"purged {purging.apply(store, config.origin.url, order).purged}")
    return 0


def stats() -> int:
    from wsgi_proxy.store.eviction import cache_gauges, scan_objects  # noqa: PLC0415

    opened = _open_store()
    if opened is None:
        return 2
    config, store = opened
    scan = scan_objects(store.objects, time.time())
    print(f"cache_dir={config.cache_dir}")
    print(f"files={scan.entries}")
    print(f"bytes={scan.total}")
    print(f"limit_bytes={config.max_size}")
    for name, _doc, value in cache_gauges(store, config.max_size):
        if name == "wsgi_proxy_cache_bytes":
            print(f"counter_bytes={int(value)}")
    return 0
