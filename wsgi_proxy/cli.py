"""The ``caching-proxy`` command (also ``python -m wsgi_proxy``).

    caching-proxy [PORT] [--port N] [--origin URL] [--cache-dir DIR] [--host H]
    caching-proxy --clear-cache [--cache-dir DIR]
    caching-proxy --version
    caching-proxy check-config
    caching-proxy purge URL | --prefix P | --tag T | --all  [--soft] [--cache-dir DIR]
    caching-proxy stats [--cache-dir DIR]

Flags override the ``WSGI_PROXY_*`` variables, which the command otherwise shares with the
app: it sets them in its own environment, so gunicorn's workers read the same values.

``purge``, ``stats`` and ``--clear-cache`` work on the folder a server uses: they need its
cache folder (``--cache-dir`` or ``WSGI_PROXY_CACHE_DIR``), refuse a folder no server has
used, and take the rest (the origins its entries were stored for, the size limit) from
what the server recorded there at start-up (store/server_record.py), so the caller need
not restate how the server was started. In a cluster (``WSGI_PROXY_PEERS``,
``WSGI_PROXY_REDIS_URL``, from the environment) ``purge`` reaches every node.

Exit codes (docs/operations.md): 0 done; 1 a failure (a setting ``check-config`` refuses,
a folder that cannot be cleared, a node that failed a purge); 2 wrong usage, an invalid
setting, or no cache at the folder given; 3 a URL purge that matched nothing stored
(a ban, by prefix or tag, cannot know its count at once: 0).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from wsgi_proxy.core.config import PREFIX, Config
from wsgi_proxy.core.errors import ConfigError
from wsgi_proxy.core.server_config import ServerConfig, describe_server, unknown_settings

if TYPE_CHECKING:
    from wsgi_proxy.store.cache import Store
    from wsgi_proxy.store.purge import Purge
    from wsgi_proxy.store.server_record import ServerRecord

NOTHING_PURGED = 3


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["check-config"]:
        return check_config(args[1:])
    if args[:1] == ["purge"]:
        return purge(args[1:])
    if args[:1] == ["stats"]:
        return stats(args[1:])
    options = _parser().parse_args(args)
    port = options.port_flag or options.port
    if port is not None:
        os.environ[PREFIX + "BIND"] = f"{options.host}:{port}"
    if options.origin is not None:
        os.environ[PREFIX + "ORIGIN"] = options.origin
    _set_cache_dir(options.cache_dir)
    if options.workers is not None:
        os.environ[PREFIX + "WORKERS"] = str(options.workers)
    if options.clear_cache:
        return clear_cache()
    try:
        Config.from_env()
        server = ServerConfig.from_env()
    except ConfigError as exc:
        print(f"caching-proxy: error: {exc}", file=sys.stderr)
        return 2
    return serve(server)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caching-proxy",
        description="An HTTP caching reverse proxy.\n"
        "Subcommands (each with --help): check-config, purge, stats.\n"
        "Exit codes: docs/operations.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,  # --version on one line
    )
    parser.add_argument("port", nargs="?", type=_port, help="port to listen on")
    parser.add_argument("--port", dest="port_flag", type=_port, help="port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--origin", help=f"origin URL ({PREFIX}ORIGIN)")
    _cache_dir_flag(parser)
    parser.add_argument("--workers", type=int, help=f"worker processes ({PREFIX}WORKERS)")
    parser.add_argument(
        "--clear-cache",
        action="store_true",
        help="empty a server's cache folder (safe while it serves), then exit",
    )
    parser.add_argument("--version", action="version", version=version_line())
    return parser


def _cache_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cache-dir",
        help=f"the server's cache folder (default: {PREFIX}CACHE_DIR, or its default)",
    )


def _set_cache_dir(cache_dir: str | None) -> None:
    if cache_dir is not None:
        os.environ[PREFIX + "CACHE_DIR"] = cache_dir


def version_line() -> str:
    """This version, and those of the interpreter and the libraries it runs on."""
    from wsgi_proxy import tuning  # noqa: PLC0415

    libraries = ", ".join(
        f"{name} {tuning.installed(name)}" for name in ("gunicorn", "urllib3", "werkzeug")
    )
    python = tuning.installed("python")
    return f"caching-proxy {tuning.installed('wsgi_proxy')} (Python {python}, {libraries})"


def _port(raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise argparse.ArgumentTypeError(f"invalid port: {raw!r}")
    return int(raw)


def serve(server: ServerConfig) -> int:
    from wsgi_proxy.server.settings import GunicornApp, gunicorn_settings  # noqa: PLC0415

    GunicornApp(gunicorn_settings(server)).run()
    return 0


def check_config(args: list[str]) -> int:
    """Print every setting, the app's and the server's; exit 1 naming the first invalid
    one, or a cache folder the server could not use. Changes nothing on disk."""
    from wsgi_proxy.store.folder_check import folder_state  # noqa: PLC0415

    argparse.ArgumentParser(
        prog="caching-proxy check-config",
        description="Validate every WSGI_PROXY_* setting of this environment, the app's and "
        "the server's, as the server would at start-up, and print them; warn about "
        "WSGI_PROXY_* names that are no setting (typos). Changes nothing on disk. "
        "Exit 0 if the server would start, 1 if not (the reason on stderr).",
    ).parse_args(args)
    for warning in unknown_settings():
        print(f"caching-proxy: warning: {warning}", file=sys.stderr)
    try:
        config = Config.from_env()
        server = ServerConfig.from_env()
    except ConfigError as exc:
        print(f"caching-proxy: invalid setting {exc}", file=sys.stderr)
        return 1
    for name, value in [*config.describe(), *describe_server(server)]:
        print(f"{name}={value}")
    folder = folder_state(config.cache_dir)
    print(f"# cache folder: {folder.detail}")
    if not folder.usable:
        print(
            f"caching-proxy: invalid setting {PREFIX}CACHE_DIR: {config.cache_dir} {folder.detail}",
            file=sys.stderr,
        )
        return 1
    return 0


def _open_server_folder() -> tuple[Config, Store, ServerRecord | None] | None:
    """The settings, the store and the server's record of the cache folder a server uses;
    None, said on stderr, when the settings are invalid or no server used the folder.
    Nothing is created."""
    from wsgi_proxy.store.cache import Store  # noqa: PLC0415
    from wsgi_proxy.store.folder_check import has_cache  # noqa: PLC0415
    from wsgi_proxy.store.server_record import read_record  # noqa: PLC0415

    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"caching-proxy: error: {exc}", file=sys.stderr)
        return None
    if not has_cache(config.cache_dir):
        print(
            f"caching-proxy: error: no cache at {config.cache_dir}: give the folder the "
            f"server uses with --cache-dir or {PREFIX}CACHE_DIR",
            file=sys.stderr,
        )
        return None
    record = read_record(config.cache_dir)
    stripes, variants = (
        (record.lock_stripes, record.max_variants)
        if record
        else (config.lock_stripes, config.max_variants)
    )
    return config, Store(config.cache_dir, lock_stripes=stripes, max_variants=variants), record


def clear_cache() -> int:
    opened = _open_server_folder()
    if opened is None:
        return 2
    config, store, _record = opened
    from wsgi_proxy.store.eviction import manager_lock  # noqa: PLC0415

    try:
        trash = store.clear()
    except OSError as exc:
        print(f"caching-proxy: error: cannot clear {config.cache_dir}: {exc}", file=sys.stderr)
        return 1
    if not manager_lock(store).is_held_elsewhere():
        # No cache manager runs to delete the old files: a process of their own does,
        # in the background (a server started meanwhile counts them until they are gone).
        subprocess.Popen(  # noqa: S603 - this interpreter, a fixed script
            [sys.executable, "-c", _SWEEP, str(trash)],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    print(f"cleared {config.cache_dir}: the old files are deleted in the background")
    return 0


_SWEEP = "import os, shutil, sys; os.nice(10); shutil.rmtree(sys.argv[1], ignore_errors=True)"


def _purge_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caching-proxy purge",
        description="Remove (or, with --soft, mark stale) stored responses in the cache "
        "folder of a running or stopped server; every worker sees it at once. The origins "
        "come from what the server recorded in the folder. A purge by prefix or tag (and "
        "by URL when the folder's list of sites is incomplete) records a ban: it answers "
        "at once, the server stops serving what it covers and removes it in the "
        "background. Exit 0 when something was purged or a ban recorded, "
        f"{NOTHING_PURGED} when a URL purge found nothing stored, 2 on wrong usage or no "
        "cache at the folder, 1 when a cluster node failed.",
    )
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
    _cache_dir_flag(parser)
    return parser


def purge(args: list[str]) -> int:
    """Purge from the shared folder directly, for every origin the server recorded."""
    from wsgi_proxy.store import purge as purging  # noqa: PLC0415

    parser = _purge_parser()
    options = parser.parse_args(args)
    order = _purge_order(parser, options)
    _set_cache_dir(options.cache_dir)
    opened = _open_server_folder()
    if opened is None:
        return 2
    config, store, record = opened
    origins = _origins(config, record)
    if config.peers or config.redis_url:
        from dataclasses import replace  # noqa: PLC0415

        from wsgi_proxy.cluster.nodes import Cluster  # noqa: PLC0415
        from wsgi_proxy.core.config import parse_origin  # noqa: PLC0415

        here = replace(config, origin=parse_origin(origins[-1]))
        report = Cluster(here, store).broadcast(order, issuer="cli")
        print(report.format())
        return 1 if report.failed else 0
    results = [purging.apply(store, origin, order) for origin in origins]
    if any(result.banned for result in results):
        # A ban cannot know its count at once: the lurker counts as it removes (operations.md).
        print(purging.BANNED)
        return 0
    purged = sum(result.purged for result in results)
    print(f"purged {purged}")
    if purged == 0:
        print(
            f"caching-proxy: nothing stored matched ({order.kind} {order.value!r}) in "
            f"{config.cache_dir}, for origin {', '.join(origins)}",
            file=sys.stderr,
        )
        return NOTHING_PURGED
    return 0


def _purge_order(parser: argparse.ArgumentParser, options: argparse.Namespace) -> Purge:
    """The purge the options ask for; a usage error (exit 2) unless exactly one."""
    from wsgi_proxy.store.purge import Purge, check  # noqa: PLC0415

    if sum(x is not None and x is not False for x in (options.url, options.prefix, options.tag,
                                                      options.all or None)) != 1:  # fmt: skip
        parser.error("give exactly one of URL, --prefix, --tag, --all")
    if options.url is not None:
        order = Purge("url", options.url, options.soft)
    elif options.prefix is not None:
        order = Purge("prefix", options.prefix, options.soft)
    elif options.tag is not None:
        order = Purge("tag", options.tag, options.soft)
    else:
        order = Purge("all", "", options.soft)
    try:
        check(order)
    except ValueError as exc:
        parser.error(str(exc))
    return order


def _origins(config: Config, record: ServerRecord | None) -> list[str]:
    """Every origin the folder's entries may be stored for: the server's record, and the
    origin this environment names (when it names one)."""
    origins = list(record.origins) if record else []
    named = (PREFIX + "ORIGIN") in os.environ or record is None
    if named and config.origin.url not in origins:
        origins.append(config.origin.url)
    return origins


def stats(args: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="caching-proxy stats",
        description="What the cache folder of a server holds now: each figure on one "
        "NAME=VALUE line, explained after a # (docs/operations.md). The folder is scanned: "
        "this takes a while on a large cache. Exit 2 when there is no cache at the folder.",
    )
    _cache_dir_flag(parser)
    _set_cache_dir(parser.parse_args(args).cache_dir)
    opened = _open_server_folder()
    if opened is None:
        return 2
    config, store, record = opened
    for line in stats_lines(config, store, record):
        print(line)
    return 0


def stats_lines(config: Config, store: Store, record: ServerRecord | None) -> list[str]:
    """The figures of ``stats``, each ``NAME=VALUE  # what it is``: the cache manager's
    (store/manager.py), with what the journal recorded since; nothing is scanned."""
    import time  # noqa: PLC0415

    from wsgi_proxy.store.eviction import manager_lock  # noqa: PLC0415
    from wsgi_proxy.store.manager import Usage, current_usage, read_state  # noqa: PLC0415

    state = read_state(store)
    usage = current_usage(store, state) if state else Usage(0, 0, 0, 0)
    limit = record.max_size if record else config.max_size
    source = "as the server was started" if record else "from this environment: no record"
    share = f"{100 * usage.total / limit:.1f} % of the limit" if limit else "no limit"
    origins = ", ".join(record.origins) if record else config.origin.url
    running = manager_lock(store).is_held_elsewhere()
    if state is None:
        counted = "never counted: no cache manager has run on this folder"
    else:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(state["updated"])))
        counted = (f"the cache manager (pid {state['pid']}) counts" if running
                   else f"as the cache manager counted at {when}; it does not run now")  # fmt: skip
    return [
        f"cache_dir={config.cache_dir}  # the cache folder read",
        f"origins={origins}  # the origins its entries were stored for",
        f"files={usage.files}  # responses and markers stored (each Vary variant counts), "
        f"{counted}",
        f"bytes={usage.total}  # disk use as du counts it ({_size(usage.total)}, {share}): "
        "the entries, their folders, the state and lock files",
        f"trash_bytes={usage.trash}  # of that, a cleared cache not yet deleted "
        f"({_size(usage.trash)})",
        f"limit_bytes={limit}  # {PREFIX}MAX_SIZE, {source} ({_size(limit)})",
        f"evicted={int(state['evicted']) if state else 0}  # files evicted to keep the limit "
        "since the cache manager started",
    ]


def _size(count: float) -> str:
    """``count`` bytes for a reader: 512 B, 1.5 MiB, 2.0 GiB (the largest unit)."""
    units = ["B", "KiB", "MiB", "GiB"]
    while count >= 1024 and len(units) > 1:
        count /= 1024
        units.pop(0)
    return f"{count:.0f} B" if units[0] == "B" else f"{count:.1f} {units[0]}"
