"""gunicorn's settings for the proxy, shared by ``gunicorn.conf.py`` and the CLI, the
worker class, and the programmatic gunicorn application the CLI runs."""

from __future__ import annotations

import time
from functools import cached_property
from typing import Any

from gunicorn import config as gunicorn_config
from gunicorn import systemd
from gunicorn.app.base import BaseApplication

from wsgi_proxy import LazyApp, head_parser, response
from wsgi_proxy.config import Config, ServerConfig
from wsgi_proxy.gathering import GatheringWorker
from wsgi_proxy.logs import ACCESS_LOG_FORMAT, JsonLogger, ProxyLogger
from wsgi_proxy.pool import ElasticPool

# Seconds a stopping worker with its own listening socket still accepts: a reload's new
# workers bind theirs right after their fork, well within it (ProxyWorker.set_accept_enabled).
STOP_LINGER = 1.0


def gunicorn_settings(server: ServerConfig) -> dict[str, Any]:
    """gunicorn settings from ``server``. Why each default, see gunicorn.conf.py."""
    return {
        "bind": [server.bind],
        "worker_class": "wsgi_proxy.server.ProxyWorker",
        "workers": server.workers,
        "threads": server.threads,
        "timeout": server.worker_timeout,
        "graceful_timeout": server.graceful_timeout,
        "keepalive": server.keepalive,
        "backlog": server.backlog,
        "reuse_port": server.reuse_port,
        "limit_request_line": server.max_url_length,
        "limit_request_fields": server.max_headers,
        "limit_request_field_size": server.max_header_size,
        "worker_connections": 1000,
        # The scheme is the proxy's to decide (sites.py, from the trusted proxy's
        # X-Forwarded-Proto): gunicorn reads no scheme header, from anyone.
        "secure_scheme_headers": {},
        "preload_app": False,
        # gunicorn 25+ opens a control socket at one path per user: two instances would
        # clobber each other's. Ops steer the proxy with signals (systemd), not gunicornc.
        "control_socket_disable": True,
        "on_starting": on_starting,
        "on_reload": shared_socket_where_needed,
        "child_exit": child_exit,
        "accesslog": None if server.log_format == "off" else "-",
        "access_log_format": ACCESS_LOG_FORMAT,
        "logger_class": JsonLogger if server.log_format == "json" else ProxyLogger,
    }


def on_starting(server: Any) -> None:
    """Validate the proxy's settings and cache folder in the master, before any worker
    forks, so a bad value stops start-up with one clear error naming the variable."""
    from wsgi_proxy.metrics import reset_metrics_dir  # noqa: PLC0415
    from wsgi_proxy.store import check_folder  # noqa: PLC0415

    config = Config.from_env()
    check_folder(config.cache_dir)
    reset_metrics_dir(config.metrics_dir)
    shared_socket_where_needed(server)


def shared_socket_where_needed(server: Any) -> None:
    """``reuse_port`` off unless the workers are to bind every address themselves over
    TCP: with it each worker binds its own socket, so a Unix socket's path would be taken
    over by the last worker to bind it, and sockets the master holds (passed by systemd,
    inherited by a re-executed master, or made at a reload that changed the address)
    would get connections nobody accepts. In the master, at start (before any socket is
    made) and after each reload, which reads the settings again."""
    cfg = server.cfg
    if not cfg.reuse_port:
        return
    held = bool(server.LISTENERS) or server.master_pid != 0 or systemd.listen_fds(False) > 0
    if held or not all(isinstance(address, tuple) for address in cfg.address):
        server.log.info("WSGI_PROXY_REUSE_PORT: one socket shared by the workers (not a "
                        "TCP address, or sockets passed to the master)")  # fmt: skip
        cfg.set("reuse_port", False)


def child_exit(server: Any, worker: Any) -> None:
    """In the master, when a worker has exited: its pool's gauges no longer count. Any
    failure is only logged: gunicorn stops the master on an exception from a hook."""
    from wsgi_proxy.metrics import mark_worker_dead  # noqa: PLC0415

    try:
        mark_worker_dead(Config.from_env().metrics_dir, worker.pid)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        server.log.warning("cannot forget worker %s's metrics: %s", worker.pid, exc)


class SettledConfig(gunicorn_config.Config):  # type: ignore[misc]
    """gunicorn's settings object, each setting looked up once: gunicorn reads its settings
    about 25 times per request, each through ``Config.__getattr__`` (a miss of the normal
    lookup, then the setting's ``get()``): about a microsecond each (timeit), 2.4 for
    ``sendfile``, which also looks at the environment. A setting read is kept in the
    object's ``__dict__``, where the next read finds it; ``set`` forgets what was kept.
    A worker's settings do not change after its fork (a reload starts new workers)."""

    def __getattr__(self, name: str) -> Any:
        value = super().__getattr__(name)
        self.__dict__[name] = value  # not setattr: Config refuses it for a setting's name
        return value

    def set(self, name: str, value: Any) -> None:
        for kept in (name, "is_ssl", "sendfile"):
            self.__dict__.pop(kept, None)
        super().set(name, value)

    @cached_property
    def is_ssl(self) -> Any:
        return gunicorn_config.Config.is_ssl.fget(self)

    @cached_property
    def sendfile(self) -> Any:
        return gunicorn_config.Config.sendfile.fget(self)


def settle(cfg: Any) -> None:
    """Make ``cfg`` (gunicorn's ``Config``, nothing else) a ``SettledConfig``, in place:
    every holder of it (the worker, its logger, each request) reads it the faster way."""
    if type(cfg) is gunicorn_config.Config:
        cfg.__class__ = SettledConfig


class ProxyWorker(GatheringWorker):
    """gunicorn's gthread worker with the proxy's thread pool (pool.py): ``--threads``
    threads, of which WSGI_PROXY_ACTIVE_THREADS start and run requests at once; request
    heads bounded by WSGI_PROXY_CLIENT_TIMEOUT, no thread waiting on one (gathering.py); its
    responses written by ``response.LeanResponse``; the origin's response heads parsed by
    ``head_parser``; its settings read as a ``SettledConfig``."""

    _listeners_closed = False  # by set_accept_enabled, when stopping with reuse_port

    def init_process(self) -> None:
        # In this worker process only, after the fork.
        response.install()
        head_parser.install()
        settle(self.cfg)
        self.head_timeout = Config.from_env().client_timeout
        super().init_process()

    def get_thread_pool(self) -> ElasticPool:
        threads: int = self.cfg.threads
        active = min(ServerConfig.from_env().active_threads, threads)
        return ElasticPool(active, threads)

    def load_wsgi(self) -> None:
        """gunicorn's, then the app is told the pool, to report its counts in the metrics
        (not when the app is wrapped in middleware: the pool's gauges then stay at zero)."""
        super().load_wsgi()
        if isinstance(self.wsgi, LazyApp):
            self.wsgi.pool = self.tpool

    def set_accept_enabled(self, enabled: bool) -> None:
        """gunicorn's; but a stopping worker with its own listening socket (``reuse_port``)
        goes on accepting for ``STOP_LINGER`` seconds (answering with ``Connection:
        close``), long enough for a reload's new workers to bind theirs, then accepts what
        is queued and closes it, so that the kernel sends new connections to the others.
        Closed at once, a reload could leave no socket for a moment (connections refused);
        left open until the worker has finished its requests, it would keep getting its
        share of them and accept none (each reset in the end). A worker at its connection
        limit (not accepting) closes it without the wait."""
        if enabled or self.alive or not self.cfg.reuse_port or self._listeners_closed:
            super().set_accept_enabled(enabled)
            return
        if self._accepting:
            deadline = time.monotonic() + STOP_LINGER
            while (left := deadline - time.monotonic()) > 0:
                self.notify()
                self.wait_for_and_dispatch_events(timeout=left)
        super().set_accept_enabled(False)
        self._listeners_closed = True
        for listener in self.sockets:
            self._accept_queued(listener)
            listener.close()

    def _accept_queued(self, listener: Any) -> None:
        """Accept what the kernel has queued on ``listener``, as gunicorn's poller would,
        up to the backlog's length: gunicorn's ``accept`` takes one connection, if any."""
        for _ in range(self.cfg.backlog):
            before = self.nr_conns
            try:
                self.accept(listener)
            except OSError as exc:  # out of file descriptors or memory: the rest is reset
                self.log.warning("stopping: cannot accept what is queued: %s", exc)
                return
            if self.nr_conns == before:
                return


class GunicornApp(BaseApplication):  # type: ignore[misc]
    """gunicorn run from Python by ``caching-proxy``, with the settings above."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        import wsgi_proxy  # noqa: PLC0415 - loaded in the worker, after the fork

        return wsgi_proxy.app
