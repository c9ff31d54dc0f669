"""gunicorn's settings for the proxy, shared by ``gunicorn.conf.py`` and the CLI, its server
hooks, and the programmatic gunicorn application the CLI runs."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from wsgi_proxy import tuning
from wsgi_proxy.core.config import Config
from wsgi_proxy.core.server_config import ServerConfig, unknown_settings
from wsgi_proxy.ops.access_log import ACCESS_LOG_FORMAT
from wsgi_proxy.server.listening import JsonLinesLogger, TextLogger, check_addresses
from wsgi_proxy.tuning.gunicorn_sockets import shared_socket_where_needed

# Settings of gunicorn_settings() that the oldest supported gunicorn (23.0) does not have,
# with the version that brought each: a gunicorn without one lacks what it turns off, so it
# is left out there, as gunicorn itself leaves out the names of a settings file it does
# not know (gunicorn.conf.py).
NEWER_SETTINGS = {"control_socket_disable": "25.1"}
# The gunicorn that brought ``wsgi.early_hints``, through which the proxy passes the
# origin's 103s on (WSGI_PROXY_EARLY_HINTS); an older one has no way to send them.
EARLY_HINTS_SINCE = "25.0"


def gunicorn_settings(server: ServerConfig) -> dict[str, Any]:
    """gunicorn settings from ``server``. Why each default, see gunicorn.conf.py."""
    return {
        "bind": [server.bind],
        "worker_class": worker_class(),
        "workers": server.workers,
        "threads": server.threads,
        "timeout": server.worker_timeout,
        "graceful_timeout": server.graceful_timeout,
        "keepalive": server.keepalive,
        "backlog": server.backlog,
        # A socket per worker needs the seam's check of what the master holds.
        "reuse_port": server.reuse_port and tuning.is_tuned("gunicorn"),
        "limit_request_line": server.max_url_length,
        "limit_request_fields": server.max_headers,
        "limit_request_field_size": server.max_header_size,
        "worker_connections": 1000,
        # The scheme is the proxy's to decide (sites.py, from the trusted proxy's
        # X-Forwarded-Proto): gunicorn reads no scheme header and maps no forwarder
        # header (SCRIPT_NAME and the like) into the environ, from anyone. Whom it would
        # trust with them is then moot: "*" spares gunicorn 27 parsing the peer's address
        # on every request (about 3 % of a HIT's instructions; docs/performance.md).
        "secure_scheme_headers": {},
        "forwarder_headers": "",
        "forwarded_allow_ips": "*",
        "preload_app": False,
        # gunicorn 25.1+ opens a control socket at one path per user: two instances would
        # clobber each other's. Ops steer the proxy with signals (systemd), not gunicornc.
        # (Older gunicorns have neither the socket nor the setting: NEWER_SETTINGS.)
        "control_socket_disable": True,
        "on_starting": on_starting,
        "on_reload": on_reload,
        "child_exit": child_exit,
        "pre_request": pre_request,
        "when_ready": when_ready,
        "on_exit": on_exit,
        "accesslog": None if server.log_format == "off" else "-",
        "access_log_format": ACCESS_LOG_FORMAT,
        "logger_class": JsonLinesLogger if server.log_format == "json" else TextLogger,
    }


def worker_class() -> str:
    """The tuned worker where the seam is on for the installed gunicorn, else gunicorn's
    own gthread worker (tuning/__init__.py)."""
    if tuning.is_tuned("gunicorn"):
        return "wsgi_proxy.server.worker.ProxyWorker"
    return "wsgi_proxy.server.plain_worker.PlainWorker"


def on_starting(server: Any) -> None:
    """Validate the proxy's settings, cache folder and listen addresses in the master,
    before it binds, reports ready or forks a worker, so a bad value or an address in use
    stops start-up with one clear error naming the variable or the address; warn about
    WSGI_PROXY_* names that are no setting; record in the cache folder what the CLI needs
    to know of this server (store/server_record.py)."""
    from wsgi_proxy.ops.metrics import prepare_master, reset_metrics_dir  # noqa: PLC0415
    from wsgi_proxy.store.cache import check_folder  # noqa: PLC0415
    from wsgi_proxy.store.server_record import write_record  # noqa: PLC0415

    for warning in unknown_settings():
        server.log.warning(warning)
    config = Config.from_env()
    check_folder(config.cache_dir)
    # The addresses before anything this server writes: an instance refused for a port
    # another one serves must leave that one's record and metric files alone.
    on_reload(server)
    check_addresses(server, share_port=ServerConfig.from_env().share_port)
    try:
        write_record(config)  # what the CLI needs to know of this server (purge, stats)
    except OSError as exc:
        server.log.warning("cannot record the settings in %s: %s", config.cache_dir, exc)
    reset_metrics_dir(config.metrics_dir)
    prepare_master()
    _warn_of_versions(server, config)


def _warn_of_versions(server: Any, config: Config) -> None:
    """What the installed library versions leave out (the seam's tunings, 103s)."""
    for line in tuning.report():
        server.log.warning(line)
    if config.early_hints and not tuning.is_at_least("gunicorn", EARLY_HINTS_SINCE):
        server.log.warning(
            "WSGI_PROXY_EARLY_HINTS=on, but gunicorn %s cannot send an interim response "
            "(wsgi.early_hints came with %s): 103s are read past, not passed on",
            tuning.installed("gunicorn"),
            EARLY_HINTS_SINCE,
        )


def on_reload(server: Any) -> None:
    """In the master, at start and after each reload: one socket shared by the workers
    where a socket per worker cannot work (tuning/gunicorn_sockets.py)."""
    if tuning.is_tuned("gunicorn"):
        shared_socket_where_needed(server)


# The master's cache manager process (server/cache_manager.py), once started.
_manager: list[Any] = []


def when_ready(server: Any) -> None:
    """In the master, before it forks the first worker: start the cache manager's process,
    which keeps the cache folder under its limit outside the workers."""
    from wsgi_proxy.server.cache_manager import ManagerProcess  # noqa: PLC0415

    if not _manager:
        manager = ManagerProcess(server.log)
        manager.start()
        _manager.append(manager)


def on_exit(server: Any) -> None:
    """In the master, as it exits: stop the cache manager."""
    for manager in _manager:
        manager.stop()


def pre_request(worker: Any, req: Any) -> None:
    """Nothing. gunicorn's own hook logs each request's method and path at debug level,
    which the access log has already (0.7 % of a HIT's instructions)."""


def child_exit(server: Any, worker: Any) -> None:
    """In the master, when a worker has exited: its pool's gauges no longer count, and it
    counts in ``wsgi_proxy_worker_exits_total``. Any failure is only logged: gunicorn stops
    the master on an exception from a hook."""
    from wsgi_proxy.ops.metrics import count_worker_exit, mark_worker_dead  # noqa: PLC0415

    try:
        folder = Config.from_env().metrics_dir
        count_worker_exit(folder)
        mark_worker_dead(folder, worker.pid)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        server.log.warning("cannot forget worker %s's metrics: %s", worker.pid, exc)


class GunicornApp(BaseApplication):  # type: ignore[misc]
    """gunicorn run from Python by ``caching-proxy``, with the settings above."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.settings.items():
            if key in NEWER_SETTINGS and key not in self.cfg.settings:
                continue  # this gunicorn is older than the setting (cfg.set would refuse it)
            self.cfg.set(key, value)

    def load(self) -> Any:
        import wsgi_proxy  # noqa: PLC0415 - loaded in the worker, after the fork

        return wsgi_proxy.app
