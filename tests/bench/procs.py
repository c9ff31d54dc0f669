"""The benchmark's processes: start each in its own session, stop it by process group, and
read what its process tree costs (CPU time, memory) from Linux /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType


@dataclass
class Service:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # what the run set, not all of environ


@dataclass
class Services:
    """Every process this run started, each the leader of its own process group."""

    logs: Path
    pin: bool
    started: list[Service] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: list[str],
        port: int,
        *,
        cpus: str,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Service:
        """Start ``argv`` (under ``taskset -c cpus`` when pinning; taskset execs, so the pid
        is the server's) with ``env`` added to this environment; wait for ``port``."""
        full = ["taskset", "-c", cpus, *argv] if self.pin else argv
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                full,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
                cwd=cwd,
            )
        service = Service(name, port, proc, log, argv, dict(env or {}))
        self.started.append(service)
        if not wait_port(port, proc, 30):
            tail = log.read_text(errors="replace")[-2000:]
            raise SystemExit(f"{name} did not start on port {port}; its log:\n{tail}")
        return service

    def stop(self, service: Service) -> None:
        stop_group(service.proc)
        self.started.remove(service)

    def stop_all(self) -> None:
        for service in reversed(self.started):
            stop_group(service.proc)
        self.started.clear()


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group, SIGKILL to what is left after 5 s."""
    pgid = proc.pid  # start_new_session: the child leads its own group
    _signal_group(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    _signal_group(pgid, signal.SIGKILL)  # workers a master left behind, if any
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        print(f"warning: process {proc.pid} did not exit", file=sys.stderr)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def exit_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that stops everything


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


# ---- /proc --------------------------------------------------------------------------------


def _proc_stats() -> dict[int, list[str]]:
    """Each process's /proc/<pid>/stat fields after the command name (field 3 onwards)."""
    stats: dict[int, list[str]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return stats
    for entry in entries:
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        stats[int(entry)] = stat[stat.rindex(")") + 2 :].split()
    return stats


def _tree(root: int, stats: dict[int, list[str]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    if root not in stats:
        return []
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def tree_pids(root: int) -> list[int]:
    """``root`` and its descendants (empty if ``root`` is gone)."""
    return _tree(root, _proc_stats())


def tree_cpu_seconds(root: int) -> float | None:
    """User + system CPU seconds of ``root`` and its descendants, or None."""
    stats = _proc_stats()
    pids = _tree(root, stats)
    if not pids:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return sum(int(stats[p][11]) + int(stats[p][12]) for p in pids) / tick


def settle_cpu(root: int, timeout: float = 5.0) -> None:
    """Wait until the tree under ``root`` is idle (at most a clock tick of CPU time in
    0.2 s): a server may still answer requests a load generator sent before it stopped."""
    last = tree_cpu_seconds(root)
    end = time.monotonic() + timeout
    while last is not None and time.monotonic() < end:
        time.sleep(0.2)
        now = tree_cpu_seconds(root)
        if now is None or now - last <= 1.5 / os.sysconf("SC_CLK_TCK"):
            return
        last = now


def memory_kib(pids: list[int]) -> tuple[int, int]:
    """(RSS, PSS) in KiB summed over ``pids`` (smaps_rollup)."""
    rss = pss = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue  # exited meanwhile
        for line in text.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss, pss
