"""Services from Debian's packages that the integration tests run on loopback: nginx (with a
site taken from deploy/) and redis-server. tests/run.sh installs both; a missing binary
fails the test rather than skipping it.

Each runs in its own session with its files in a test's temporary folder, and is stopped by
its PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import client


def binary(name: str) -> str:
    found = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )
    if found is None:
        pytest.fail(f"{name} is not installed: run tests/run.sh, which installs it")
    return found


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process's session, wait up to 5 s, then SIGKILL it."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


@dataclass
class Nginx:
    port: int
    process: subprocess.Popen[bytes]
    root: Path

    def get(self, target: str, headers: client.Headers = ()) -> client.Response:
        return client.request(self.port, "GET", target, headers, None, client.TIMEOUT)

    def request(
        self, method: str, target: str, headers: client.Headers = (), source: str | None = None
    ) -> client.Response:
        """``method`` ``target`` from ``source`` (another loopback address, as a client
        that is not this machine), or from 127.0.0.1."""
        return client.request(self.port, method, target, headers, None, client.TIMEOUT, source)

    def stop(self) -> None:
        stop_process(self.process)

    @classmethod
    def start(cls, site: str, port: int, root: Path) -> Nginx:
        """nginx with ``site`` (an http-level include) in ``root``, ready for requests."""
        root.mkdir(parents=True, exist_ok=True)
        (root / "site.conf").write_text(site)
        user = "user root;" if os.geteuid() == 0 else ""  # workers must reach the temp folder
        temps = " ".join(
            f"{kind}_temp_path {root / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (root / "nginx.conf").write_text(
            f"{user}\nworker_processes 1;\npid {root / 'nginx.pid'};\n"
            f"error_log {root / 'error.log'} warn;\nevents {{ worker_connections 512; }}\n"
            f"http {{ access_log {root / 'access.log'}; {temps} include {root / 'site.conf'}; }}\n"
        )
        command = [binary("nginx"), "-p", str(root), "-c", str(root / "nginx.conf"),
                   "-g", "daemon off;"]  # fmt: skip
        with (root / "stderr").open("wb") as stderr:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        nginx = cls(port, process, root)
        _wait_listening(port, process, (root / "stderr").read_text)
        return nginx


@dataclass
class RedisServer:
    """redis-server without persistence: a restart loses its data, as a crash would."""

    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no", "--dir", str(self.folder),
                   "--daemonize", "no", "--logfile", str(self.folder / "redis.log")]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        process = self.process
        _wait_listening(self.port, process, (self.folder / "redis.log").read_text)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


def _wait_listening(port: int, process: subprocess.Popen[bytes], output: object) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                stop_process(process)
                text = output() if callable(output) else ""
                pytest.fail(f"{process.args!r} did not start listening on {port}:\n{text}")
            time.sleep(0.02)
