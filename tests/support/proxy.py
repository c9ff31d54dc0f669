"""The proxy under test: real gunicorn (or the `wsgi_proxy` CLI) as a subprocess.

A `ProxyProcess` is started on a free loopback port with a clean environment (no
`WSGI_PROXY_*` variable leaks in from the caller but `WSGI_PROXY_TUNING`), its stdout and
stderr in files so a failure can show them. `stop()` sends SIGTERM to the process
started, waits, then SIGKILLs it, and SIGKILLs any of its recorded worker processes
(identified by PID and start time, so a reused PID is never hit) that outlived it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path

import pytest

from . import client

REPO = Path(__file__).resolve().parents[2]
STOP_GRACE = 5.0
READY_TIMEOUT = 30.0


def free_port() -> int:
    """A loopback port nothing listens on at this moment."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def gunicorn_command(port: int, workers: int = 2) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        str(REPO / "gunicorn.conf.py"),
        "wsgi_proxy:app",
        "-b",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
    ]


def proxy_env(
    origin_url: str, cache_dir: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The caller's environment without WSGI_PROXY_* (but WSGI_PROXY_TUNING, so the proxy's
    seam is on or off as ``tuning.is_tuned`` says in the tests: support/versions.py), then
    the test's settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("WSGI_PROXY_") or key == "WSGI_PROXY_TUNING"
    }
    env["WSGI_PROXY_ORIGIN"] = origin_url
    env["WSGI_PROXY_CACHE_DIR"] = str(cache_dir)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3, the state, first),
    or None if the PID is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in ticks), or None if the PID is gone."""
    fields = _stat_fields(pid)
    return None if fields is None else fields[19]


def process_states(pids: Iterable[int]) -> str:
    """Each PID with its state letter from /proc (R running, S sleeping, Z a zombie its
    parent has not reaped), for a failure message."""
    return " ".join(f"{pid}:{(_stat_fields(pid) or ['gone'])[0]}" for pid in pids)


MANAGER_MODULE = "wsgi_proxy.server.cache_manager"


def children_of(pid: int, *, managers: bool = False) -> list[int]:
    """PIDs of the live children of `pid`, from /proc/<pid>/task/*/children: a gunicorn
    master's workers, and its cache manager process only with `managers`."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return sorted(child for child in set(found) if managers or not is_manager(child))


def is_manager(pid: int) -> bool:
    """Is `pid` a cache manager process (server/cache_manager.py)?"""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return MANAGER_MODULE.encode() in command


def manager_pids(master: int) -> list[int]:
    return [pid for pid in children_of(master, managers=True) if is_manager(pid)]


def rss_bytes(pid: int) -> int | None:
    """VmRSS of `pid` in bytes, or None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


class ProxyProcess:
    """One started proxy: its port, cache folder, process and logs."""

    def __init__(
        self, argv: Sequence[str], env: Mapping[str, str], port: int, cache_dir: Path, logs: Path
    ) -> None:
        self.port = port
        self.cache_dir = cache_dir
        self.argv = list(argv)
        self.stderr_path = logs / f"proxy-{port}.stderr"
        self.stdout_path = logs / f"proxy-{port}.stdout"
        self._workers: dict[int, str] = {}
        with self.stderr_path.open("wb") as err, self.stdout_path.open("wb") as out:
            self.process = subprocess.Popen(
                self.argv,
                cwd=REPO,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self, lines: int = 40) -> str:
        text = self.stderr_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Return once the port accepts connections; fail with the stderr tail if the
        process exits first or never listens."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"proxy {self.argv} exited with {self.process.returncode} before "
                    f"listening on 127.0.0.1:{self.port}; stderr:\n{self.stderr()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return
            except OSError:
                time.sleep(0.05)
        pytest.fail(
            f"proxy not accepting on 127.0.0.1:{self.port} after {timeout} s; stderr:\n"
            f"{self.stderr()}"
        )

    def wait_exit(self, timeout: float) -> int | None:
        """The exit status once the process ends, or None if it still runs after `timeout`."""
        with suppress(subprocess.TimeoutExpired):
            return self.process.wait(timeout=timeout)
        return None

    def assert_alive(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(
                f"proxy on port {self.port} exited with {self.process.returncode}; stderr:\n"
                f"{self.stderr()}"
            )

    def quittable_workers(self) -> set[int]:
        """The workers that have set their signal handlers. A signal sent to a worker
        before that is lost (it runs the master's handler, inherited through the fork):
        gunicorn's behaviour. gunicorn sets them before it loads the application, whose
        threads (request durations, the thread pool) are the first a worker starts, on its
        first request."""
        ready = set()
        for pid in self.worker_pids(expected=0):
            with suppress(OSError):
                if len(os.listdir(f"/proc/{pid}/task")) > 1:
                    ready.add(pid)
        return ready

    def worker_pids(self, expected: int = 2, timeout: float = 15.0) -> list[int]:
        """The gunicorn workers (children of the master), once `expected` of them run."""
        deadline = time.monotonic() + timeout
        while True:
            pids = children_of(self.pid)
            for pid in pids:
                start = _start_time(pid)
                if start is not None:
                    self._workers.setdefault(pid, start)
            if len(pids) >= expected:
                return pids
            self.assert_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"{len(pids)} workers of {self.pid}, expected {expected}")
            time.sleep(0.05)

    def request(
        self,
        method: str,
        target: str,
        headers: client.Headers = (),
        body: bytes | Iterable[bytes] | None = None,
        timeout: float = client.TIMEOUT,
    ) -> client.Response:
        return client.request(self.port, method, target, headers, body, timeout)

    def get(
        self, target: str, headers: client.Headers = (), timeout: float = client.TIMEOUT
    ) -> client.Response:
        return client.request(self.port, "GET", target, headers, None, timeout)

    def stop(self) -> None:
        """SIGTERM, wait up to STOP_GRACE s, SIGKILL; then SIGKILL surviving workers (and
        cache manager)."""
        if self.process.poll() is None:
            with suppress(OSError):
                children = children_of(self.pid, managers=True)
                self._workers.update({pid: s for pid in children if (s := _start_time(pid))})
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_GRACE)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_GRACE)
        # gunicorn workers leave on their own once the master is gone; wait a little
        deadline = time.monotonic() + STOP_GRACE
        while self._survivors() and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self._survivors():
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _survivors(self) -> list[int]:
        return [pid for pid, start in self._workers.items() if _start_time(pid) == start]


CommandBuilder = Callable[[int], Sequence[str]]


class ProxyFactory:
    """Starts proxies for one test (or the session) and stops them all at teardown."""

    def __init__(self, default_origin: str, workdir: Path) -> None:
        self.default_origin = default_origin
        self.workdir = workdir
        self.started: list[ProxyProcess] = []

    def __call__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        origin: str | None = None,
        cache_dir: Path | None = None,
        command: CommandBuilder | None = None,
        ready: bool = True,
    ) -> ProxyProcess:
        """Start a proxy for `origin` (default: the session origin) on `cache_dir`
        (default: `<workdir>/cache`, shared by every proxy of this factory) with extra
        `env`; `command(port)` replaces the gunicorn command line. With `ready`, return
        once it accepts connections."""
        port = free_port()
        cache = cache_dir or self.workdir / "cache"
        full_env = proxy_env(origin or self.default_origin, cache, env or {})
        argv = (command or gunicorn_command)(port)
        started = ProxyProcess(argv, full_env, port, cache, self.workdir)
        self.started.append(started)
        if ready:
            started.wait_ready()
        return started

    def stop_all(self) -> None:
        for started in reversed(self.started):
            started.stop()
