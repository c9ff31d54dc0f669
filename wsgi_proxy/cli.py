"""The ``caching-proxy`` command (also ``python -m wsgi_proxy``).

    caching-proxy [PORT] [--port N] [--origin URL] [--cache-dir DIR] [--host H]
    caching-proxy --clear-cache
    caching-proxy check-config

Flags override the ``WSGI_PROXY_*`` variables, which the command otherwise shares with the
app: it sets them in its own environment, so gunicorn's workers read the same values.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from wsgi_proxy.config import PREFIX, Config, ServerConfig
from wsgi_proxy.errors import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["check-config"]:
        return check_config()
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
        description="An HTTP caching reverse proxy. Subcommand: check-config.",
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
    from wsgi_proxy.server import GunicornApp, gunicorn_settings  # noqa: PLC0415

    GunicornApp(gunicorn_settings(server)).run()
    return 0


def clear_cache(config: Config) -> int:
    from wsgi_proxy.store import Store  # noqa: PLC0415

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
    from wsgi_proxy.store import check_folder  # noqa: PLC0415

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
