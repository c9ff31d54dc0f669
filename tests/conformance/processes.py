"""Child processes for the conformance run: started in their own process group, stopped by PID.

Each child gets a new session, so its process group id is its PID and everything it forks
(gunicorn's workers) stays in that group. `stop` signals that group only: nothing else on
the machine is touched, and a forked worker cannot outlive the test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class Child:
    """A started process, its log file and a name for messages."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(text)


def free_port() -> int:
    """A loopback port nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(
    name: str,
    argv: Sequence[str],
    log: Path,
    env: Mapping[str, str],
    cwd: Path | None = None,
    stdout: Path | None = None,
) -> Child:
    """Start `argv` in a new session; stderr, and stdout unless `stdout` is given, to `log`."""
    with log.open("wb") as err, ExitStack() as files:
        out = files.enter_context(stdout.open("wb")) if stdout else err
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    return Child(name, process, log)


@contextmanager
def serving(child: Child, port: int) -> Iterator[str]:
    """Wait until `child` listens on `port`, yield its base URL, stop it whatever happens."""
    try:
        wait_for_port(child, port)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(child)


def wait_for_port(child: Child, port: int, timeout: float = 30.0) -> None:
    """Return once 127.0.0.1:`port` accepts; fail the test if `child` exits or never listens."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            pytest.fail(
                f"{child.name} exited with {child.process.returncode} before listening on "
                f"127.0.0.1:{port}:\n{child.log_tail()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(
        f"{child.name} not accepting on 127.0.0.1:{port} after {timeout} s:\n{child.log_tail()}"
    )


def stop(child: Child, grace: float = 10.0) -> None:
    """TERM the child's process group, wait up to `grace` seconds, then KILL what is left."""
    _signal_group(child, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        child.process.wait(timeout=grace)
    # the leader may be gone while forked members (gunicorn workers) still run
    _signal_group(child, signal.SIGKILL)
    child.process.wait()


def _signal_group(child: Child, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):  # the whole group has exited already
        os.killpg(child.process.pid, sig)
