"""Configuration parsing: every bad value names its variable."""

from __future__ import annotations

import inspect
import os
import runpy
from pathlib import Path

import pytest
from gunicorn.config import Config as GunicornConfig
from gunicorn.workers import gthread

from wsgi_proxy.core.config import Config, Origin, parse_size
from wsgi_proxy.core.errors import ConfigError
from wsgi_proxy.core.server_config import ServerConfig
from wsgi_proxy.server.listening import JsonLinesLogger, TextLogger
from wsgi_proxy.server.settings import gunicorn_settings
from wsgi_proxy.server.worker import ProxyWorker
from wsgi_proxy.tuning.gunicorn_config import SettledConfig, settle
from wsgi_proxy.tuning.gunicorn_sockets import shared_socket_where_needed


def test_defaults_need_nothing() -> None:
    config = Config.from_env({"HOME": "/home/u"})
    assert config.origin == Origin("http", "127.0.0.1", 8000)
    assert config.cache_dir == Path("/home/u/.cache/wsgi_proxy")
    assert config.max_object_size <= config.max_size
    assert config.early_hints is False
    assert config.touch_interval == 60.0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1000", 1000), ("1k", 1024), ("2M", 2 * 1024**2), ("1G", 1024**3), ("3 MiB", 3 * 1024**2)],
)
def test_parse_size(raw: str, expected: int) -> None:
    assert parse_size(raw) == expected


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WSGI_PROXY_ORIGIN", "ftp://x"),
        ("WSGI_PROXY_ORIGIN", "http://x/path"),
        ("WSGI_PROXY_ORIGIN", "http://x:99999"),
        ("WSGI_PROXY_ORIGIN", "http://"),
        ("WSGI_PROXY_MAX_SIZE", "banana"),
        ("WSGI_PROXY_MAX_SIZE", "0"),
        ("WSGI_PROXY_MAX_OBJECT_SIZE", "-5"),
        ("WSGI_PROXY_READ_TIMEOUT", "soon"),
        ("WSGI_PROXY_CONNECT_TIMEOUT", "0"),
        ("WSGI_PROXY_LOCK_TIMEOUT", "nan"),
        ("WSGI_PROXY_POOL_SIZE", "1.5"),
        ("WSGI_PROXY_VIA_NAME", "two words"),
        ("WSGI_PROXY_EARLY_HINTS", "yes"),
        ("WSGI_PROXY_TOUCH_INTERVAL", "0"),
        ("WSGI_PROXY_TOUCH_INTERVAL", "a minute"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Config.from_env({"HOME": "/h", variable: value})
    assert raised.value.variable == variable
    assert variable in str(raised.value)


def test_object_size_may_not_exceed_cache_size() -> None:
    env = {"HOME": "/h", "WSGI_PROXY_MAX_SIZE": "1M", "WSGI_PROXY_MAX_OBJECT_SIZE": "2M"}
    with pytest.raises(ConfigError, match="WSGI_PROXY_MAX_OBJECT_SIZE"):
        Config.from_env(env)


def test_origin_authority_omits_default_port() -> None:
    assert Config.from_env({"HOME": "/h", "WSGI_PROXY_ORIGIN": "https://a.b"}).origin.url == (
        "https://a.b"
    )
    assert Config.from_env({"HOME": "/h", "WSGI_PROXY_ORIGIN": "http://a:81/"}).origin.url == (
        "http://a:81"
    )


def test_server_config_bad_worker_count() -> None:
    with pytest.raises(ConfigError, match="WSGI_PROXY_WORKERS"):
        ServerConfig.from_env({"WSGI_PROXY_WORKERS": "many"})


@pytest.mark.parametrize(
    ("value", "logger", "accesslog"),
    [("text", TextLogger, "-"), ("json", JsonLinesLogger, "-"), ("off", TextLogger, None)],
)
def test_log_format(value: str, logger: type, accesslog: str | None) -> None:
    settings = gunicorn_settings(ServerConfig.from_env({"WSGI_PROXY_LOG_FORMAT": value}))
    assert (settings["logger_class"], settings["accesslog"]) == (logger, accesslog)


def test_bad_log_format_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="WSGI_PROXY_LOG_FORMAT"):
        ServerConfig.from_env({"WSGI_PROXY_LOG_FORMAT": "xml"})


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (64, 4)),
        ({"WSGI_PROXY_THREADS": "2"}, (2, 2)),  # the default follows fewer threads
        ({"WSGI_PROXY_THREADS": "8", "WSGI_PROXY_ACTIVE_THREADS": "8"}, (8, 8)),
        ({"WSGI_PROXY_ACTIVE_THREADS": "1"}, (64, 1)),
    ],
)
def test_threads_and_active_threads(env: dict[str, str], expected: tuple[int, int]) -> None:
    server = ServerConfig.from_env(env)
    assert (server.threads, server.active_threads) == expected


@pytest.mark.parametrize("value", ["0", "9", "four"])
def test_bad_active_threads_name_the_variable(value: str) -> None:
    env = {"WSGI_PROXY_THREADS": "8", "WSGI_PROXY_ACTIVE_THREADS": value}
    with pytest.raises(ConfigError, match="WSGI_PROXY_ACTIVE_THREADS"):
        ServerConfig.from_env(env)


@pytest.mark.parametrize(("value", "expected"), [(None, True), ("on", True), ("off", False)])
def test_reuse_port(value: str | None, expected: bool) -> None:
    env = {} if value is None else {"WSGI_PROXY_REUSE_PORT": value}
    assert gunicorn_settings(ServerConfig.from_env(env))["reuse_port"] is expected


@pytest.mark.parametrize("value", ["yes", "1", "ON", ""])
def test_bad_reuse_port_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="WSGI_PROXY_REUSE_PORT"):
        ServerConfig.from_env({"WSGI_PROXY_REUSE_PORT": value})


class _Log:
    """What gunicorn's hooks log, by level."""

    def __init__(self) -> None:
        self.infos: list[str] = []
        self.warnings: list[str] = []

    def info(self, message: str, *args: object) -> None:
        self.infos.append(message % args)

    def warning(self, message: str, *args: object) -> None:
        self.warnings.append(message % args)


class _Arbiter:
    """What the hook reads of gunicorn's master: its settings, the sockets it holds, and
    the pid of the master that re-executed it (0 if none)."""

    def __init__(self, binds: list[str], reuse_port: bool, *, held: bool, master_pid: int):
        self.cfg = GunicornConfig()
        self.cfg.set("bind", binds)
        self.cfg.set("reuse_port", reuse_port)
        self.LISTENERS = [object()] if held else []
        self.master_pid = master_pid
        self.log = _Log()


TCP = ["127.0.0.1:8080"]
UNIX = ["unix:/run/wsgi-proxy.sock"]


@pytest.mark.parametrize(
    ("binds", "held", "master_pid", "systemd_fds", "reuse_port", "expected"),
    [
        (TCP, False, 0, None, True, True),
        (["127.0.0.1:8080", "[::1]:8080", ":8081"], False, 0, None, True, True),
        (TCP, False, 0, None, False, False),
        # Each worker would bind the path anew, taking it over from the one before.
        (UNIX, False, 0, None, True, False),
        ([*TCP, *UNIX], False, 0, None, True, False),
        (["fd://3"], False, 0, None, True, False),
        # Sockets the master holds would get connections nobody accepts.
        (TCP, False, 0, "self", True, False),  # passed by systemd
        (TCP, False, 0, "1", True, True),  # systemd's variables, for another process
        (TCP, False, 4242, None, True, False),  # re-executed by its old master (USR2)
        (TCP, True, 0, None, True, False),  # after a reload (variables gone by then)
    ],
)
def test_reuse_port_only_where_the_workers_bind_tcp_themselves(
    binds: list[str],
    held: bool,
    master_pid: int,
    systemd_fds: str | None,
    reuse_port: bool,
    expected: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """gunicorn's on_starting and on_reload hooks, as the master calls them."""
    monkeypatch.delenv("LISTEN_FDS", raising=False)
    monkeypatch.delenv("LISTEN_PID", raising=False)
    if systemd_fds is not None:
        monkeypatch.setenv("LISTEN_FDS", "1")
        monkeypatch.setenv("LISTEN_PID", str(os.getpid()) if systemd_fds == "self" else systemd_fds)
    master = _Arbiter(binds, reuse_port, held=held, master_pid=master_pid)
    shared_socket_where_needed(master)
    assert master.cfg.reuse_port is expected
    assert len(master.log.infos) == (1 if reuse_port and not expected else 0)


def test_the_worker_class_finds_what_it_uses_in_gunicorn() -> None:
    """server.ProxyWorker uses three private names of gunicorn's gthread worker."""
    assert isinstance(gthread.DEFAULT_WORKER_DATA_TIMEOUT, float)
    assert hasattr(gthread, "_DEFER")
    assert "self._accepting =" in inspect.getsource(gthread.ThreadWorker.set_accept_enabled)
    settings = gunicorn_settings(ServerConfig.from_env({}))
    assert settings["worker_class"] == f"{ProxyWorker.__module__}.{ProxyWorker.__name__}"


class _Master:
    def __init__(self) -> None:
        self.log = _Log()


class _Worker:
    pid = 4242


def test_a_dead_workers_gauges_are_forgotten_and_a_failure_only_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gunicorn's child_exit hook, as the master calls it."""
    monkeypatch.setenv("WSGI_PROXY_METRICS_DIR", str(tmp_path))
    hook = gunicorn_settings(ServerConfig.from_env({}))["child_exit"]
    mine, other = tmp_path / "gauge_livesum_4242.db", tmp_path / "gauge_livesum_4243.db"
    counters = tmp_path / "counter_4242.db"
    for path in (mine, other, counters):
        path.write_bytes(b"")
    master = _Master()
    hook(master, _Worker())
    assert (mine.exists(), other.exists(), counters.exists()) == (False, True, True)
    mine.mkdir()  # cannot be removed as a file: OSError
    hook(master, _Worker())
    assert len(master.log.warnings) == 1
    assert "4242" in master.log.warnings[0]


def _configs() -> tuple[GunicornConfig, GunicornConfig]:
    """Two alike gunicorn settings objects, the second settled, as the worker's."""
    pair = []
    for _ in range(2):
        cfg = GunicornConfig()
        for name, value in gunicorn_settings(ServerConfig.from_env({})).items():
            cfg.set(name, value)
        cfg.set("forwarded_allow_ips", "10.0.0.1,127.0.0.1")
        pair.append(cfg)
    settle(pair[1])
    return pair[0], pair[1]


def test_settled_settings_read_as_gunicorns() -> None:
    stock, settled = _configs()
    assert type(settled) is SettledConfig
    names = [*stock.settings, "is_ssl", "sendfile", "reuse_port", "address"]
    for _ in range(2):  # looked up, then kept
        for name in names:
            assert getattr(settled, name) == getattr(stock, name), name
    assert settled.limit_request_line == stock.limit_request_line
    assert "limit_request_line" in vars(settled)
    assert settled.forwarded_allow_networks() == stock.forwarded_allow_networks()
    with pytest.raises(AttributeError):
        settled.no_such_setting  # noqa: B018


@pytest.mark.parametrize(
    ("name", "value", "read", "expected"),
    [
        ("limit_request_line", 100, "limit_request_line", 100),
        ("certfile", "/etc/x.pem", "is_ssl", "/etc/x.pem"),
        ("sendfile", False, "sendfile", False),  # gunicorn's --no-sendfile
    ],
)
def test_a_settled_setting_set_again_is_read_anew(
    name: str, value: object, read: str, expected: object
) -> None:
    stock, settled = _configs()
    assert getattr(settled, read) == getattr(stock, read) != expected
    settled.set(name, value)
    stock.set(name, value)
    assert getattr(settled, read) == getattr(stock, read) == expected


def test_only_gunicorns_own_settings_object_is_settled() -> None:
    class Other(GunicornConfig):  # type: ignore[misc]
        pass

    other = Other()
    settle(other)
    assert type(other) is Other


def test_gunicorn_conf_sets_every_setting_of_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """gunicorn.conf.py names each setting by hand: one left out there is not applied."""
    for name in [k for k in os.environ if k.startswith("WSGI_PROXY_")]:
        monkeypatch.delenv(name)
    loaded = runpy.run_path(str(Path(__file__).resolve().parents[3] / "gunicorn.conf.py"))
    expected = gunicorn_settings(ServerConfig.from_env({}))
    assert {name: loaded.get(name) for name in expected} == expected
