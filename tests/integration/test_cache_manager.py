"""The cache manager (store/manager.py, server/cache_manager.py): a process of the gunicorn
master that keeps the cache folder's disk use, as du counts it, under WSGI_PROXY_MAX_SIZE,
outside the request workers. Real gunicorn with two workers, a real origin, the folder
measured as du measures it."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support import client
from support.checks import cache_breakdown, cache_bytes, poll
from support.cli import run_cli
from support.origin import Origin
from support.proxy import ProxyFactory, ProxyProcess, manager_pids, proxy_env

CACHED = [("Cache-Control", "max-age=600")]
BODY = b"m" * 6000  # two 4 KiB blocks with its header
# The folders alone take up to 1 MiB (256 first-level folders of 4 KiB): limits well above.
LIMIT = 8_000_000


def routes(origin: Origin, name: str, count: int) -> list[str]:
    return [origin.route(f"/{name}/{i}", headers=CACHED, body=BODY) for i in range(count)]


@contextmanager
def misses(proxy: ProxyProcess, paths: list[str], threads: int = 6) -> Iterator[list[int]]:
    """Clients asking for `paths` (each once, in turn) until the block ends: misses at the
    speed the proxy and the origin allow. Yields the count of answers so far."""
    done = [0]
    stop = threading.Event()
    lock = threading.Lock()
    cursor = iter(paths)

    def run() -> None:
        while not stop.is_set():
            with lock:
                path = next(cursor, None)
            if path is None:
                return
            assert client.request(proxy.port, "GET", path).status == 200
            with lock:
                done[0] += 1

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield done
    finally:
        stop.set()
        for worker in workers:
            worker.join()


def du_samples(proxy: ProxyProcess, seconds: float, interval: float = 0.2) -> list[int]:
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(cache_bytes(proxy.cache_dir))
        time.sleep(interval)
    return samples


def test_the_manager_is_the_masters_process_restarted_if_it_dies_and_stopped_with_it(
    proxy_factory: ProxyFactory,
) -> None:
    proxy = proxy_factory()
    assert poll(lambda: len(manager_pids(proxy.pid)) == 1, 10)
    (first,) = manager_pids(proxy.pid)
    os.kill(first, signal.SIGKILL)
    assert poll(lambda: manager_pids(proxy.pid) not in ([], [first]), 10), "not restarted"
    (second,) = manager_pids(proxy.pid)
    assert "cache manager" in proxy.stderr(80)
    proxy.stop()
    assert poll(lambda: not Path(f"/proc/{second}").exists(), 5), "outlived the server"


def test_a_manager_that_keeps_dying_is_started_again_less_and_less_often(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    """A manager killed soon after each start (as one that crashes at start exits): the
    master waits 1 s, then 2, 4, 8 ... before the next start, and says so; the proxy serves
    throughout. (The wait goes back to 1 s after a manager that lasted: unit-tested.)"""
    proxy = proxy_factory()
    path = origin.route("/restarts", headers=CACHED, body=BODY)
    killed: list[int] = []
    for _ in range(4):
        assert poll(lambda: manager_pids(proxy.pid) not in ([], killed[-1:]), 20), proxy.stderr()
        (manager,) = manager_pids(proxy.pid)
        os.kill(manager, signal.SIGKILL)
        killed.append(manager)
        reply = client.request(proxy.port, "GET", path)
        assert (reply.status, reply.body) == (200, BODY), reply.describe()

    def exits() -> list[str]:  # the master's lines (-9, or 0 where gunicorn reaped it first)
        return [line for line in proxy.stderr(200).splitlines() if ") exited (" in line]

    assert poll(lambda: len(exits()) == 4, 10), proxy.stderr()
    assert [line.rsplit(": ", 1)[1] for line in exits()] == [
        f"starting it again in {delay} s" for delay in (1, 2, 4, 8)
    ], exits()
    # Well within the 8 s: none yet (before, each came a second after the kill). Then it does.
    time.sleep(3)
    assert manager_pids(proxy.pid) == [], proxy.stderr(20)
    reply = client.request(proxy.port, "GET", path)
    assert (reply.status, reply.body) == (200, BODY), reply.describe()
    assert poll(lambda: manager_pids(proxy.pid) not in ([], killed[-1:]), 20), proxy.stderr()
    assert origin.count(path) == 1  # stored at the first request, hit since
    proxy.assert_alive()


def test_the_manager_ends_when_its_master_is_killed_even_as_it_starts(
    proxy_factory: ProxyFactory,
) -> None:
    """kill -9 of the master, at once and once the manager runs: the manager does not
    linger (reparented, it would keep the folder's lock from the next server's)."""
    for wait in (0.0, 2.0):
        proxy = proxy_factory(ready=wait > 0)
        if not wait:
            assert poll(lambda: bool(manager_pids(proxy.pid)), 10)  # noqa: B023
        time.sleep(wait)
        managers = manager_pids(proxy.pid)
        assert managers
        os.kill(proxy.pid, signal.SIGKILL)
        proxy.wait_exit(10)
        for pid in managers:
            assert poll(lambda: not _alive(pid), 5), f"manager {pid} outlived its master"  # noqa: B023


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_disk_use_stays_within_5_percent_of_the_limit_under_a_stream_of_misses(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    """Misses, six at a time, until they wrote three times the limit: du never reads more
    than 5 % over the limit once the first second has passed."""
    limit = LIMIT // 2
    proxy = proxy_factory({"WSGI_PROXY_MAX_SIZE": str(limit)})
    samples = []
    with misses(proxy, routes(origin, "stream", 3000)) as done:
        time.sleep(1.0)
        deadline = time.monotonic() + 120
        while done[0] * 8192 < 3 * limit and time.monotonic() < deadline:
            samples.append(cache_bytes(proxy.cache_dir))
            time.sleep(0.2)
        answered = done[0]
    assert answered * 8192 >= 3 * limit, f"only {answered} misses: the test proves nothing"
    assert max(samples) <= limit * 1.05, (max(samples), cache_breakdown(proxy.cache_dir))
    assert min(samples[len(samples) // 2 :]) >= limit * 0.8  # it does not empty the cache


def test_a_restart_on_a_folder_over_a_lower_limit_comes_down_within_seconds(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    proxy = proxy_factory({"WSGI_PROXY_MAX_SIZE": str(LIMIT)})
    paths = routes(origin, "before", 1200)
    with misses(proxy, paths) as done:
        assert poll(lambda: done[0] >= 1200, 60)
    full = cache_bytes(proxy.cache_dir)
    assert full > LIMIT * 0.6
    proxy.stop()

    lower = LIMIT * 3 // 8
    again = proxy_factory({"WSGI_PROXY_MAX_SIZE": str(lower)})
    with misses(again, routes(origin, "after", 2000)):
        time.sleep(2.0)
        samples = du_samples(again, 4.0)
    assert max(samples) <= lower * 1.05, (samples, cache_breakdown(again.cache_dir))


def test_the_workers_do_not_evict_the_manager_does(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    """With the manager stopped (SIGSTOP), misses take the folder over the limit: no worker
    evicts. Let go, it brings the folder back under the limit."""
    proxy = proxy_factory({"WSGI_PROXY_MAX_SIZE": str(LIMIT)})
    assert poll(lambda: len(manager_pids(proxy.pid)) == 1, 10)
    (manager,) = manager_pids(proxy.pid)
    os.kill(manager, signal.SIGSTOP)
    try:
        with misses(proxy, routes(origin, "stopped", 1500)) as done:
            assert poll(lambda: done[0] >= 1500, 60)
        over = cache_bytes(proxy.cache_dir)
        assert over > LIMIT * 1.2
    finally:
        os.kill(manager, signal.SIGCONT)
    assert poll(lambda: cache_bytes(proxy.cache_dir) <= LIMIT * 1.05, 10)


def test_without_the_proxys_hooks_one_worker_keeps_the_limit(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path
) -> None:
    """gunicorn started without -c gunicorn.conf.py: no manager process; one worker says so
    and runs the manager's rounds itself."""

    empty = tmp_path / "none.conf.py"  # else gunicorn reads ./gunicorn.conf.py
    empty.write_text("")

    def bare(port: int) -> list[str]:
        return [sys.executable, "-m", "gunicorn", "-c", str(empty), "wsgi_proxy:app", "-b",
                f"127.0.0.1:{port}", "--workers", "2", "--threads", "8"]  # fmt: skip

    proxy = proxy_factory({"WSGI_PROXY_MAX_SIZE": str(LIMIT)}, command=bare)
    with misses(proxy, routes(origin, "bare", 3000)) as done:
        assert poll(lambda: done[0] >= 3000, 90)
    assert manager_pids(proxy.pid) == []
    assert poll(lambda: cache_bytes(proxy.cache_dir) <= LIMIT * 1.05, 10), cache_breakdown(
        proxy.cache_dir
    )
    assert proxy.stderr(200).count("no cache manager process") == 1


def test_clear_answers_at_once_and_the_old_files_go_in_the_background(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path
) -> None:
    """While the server runs, its manager deletes the cleared folder; with no server, a
    process the CLI leaves behind does. Either way the answer does not wait for it, and
    what was cached is a MISS at once."""
    cache = tmp_path / "cleared"
    proxy = proxy_factory(cache_dir=cache)
    paths = routes(origin, "clear", 200)
    with misses(proxy, paths) as done:
        assert poll(lambda: done[0] >= 200, 60)
    env = proxy_env(origin.url, cache)
    cleared = run_cli(["--clear-cache"], env)
    assert cleared.returncode == 0, cleared.stderr
    assert proxy.get(paths[0]).x_cache == "MISS"
    assert poll(lambda: not list((cache / "v1").glob("trash.*")), 10)

    with misses(proxy, paths[1:100]) as done:
        assert poll(lambda: done[0] >= 99, 60)
    proxy.stop()
    before = cache_bytes(cache)
    cleared = run_cli(["--clear-cache"], env)
    assert cleared.returncode == 0, cleared.stderr
    assert poll(lambda: not list((cache / "v1").glob("trash.*")), 10)
    assert cache_bytes(cache) < before - 90 * 8192


def test_stats_reads_the_managers_figures_which_match_du(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path
) -> None:
    cache = tmp_path / "counted"
    proxy = proxy_factory({"WSGI_PROXY_MAX_SIZE": str(LIMIT)}, cache_dir=cache)
    # After the manager's first walk: what is published while it walks counts twice
    # (too much, never too little) until the next walk, which this test is not about.
    assert poll((cache / "v1" / "state" / "manager.json").exists, 10)
    with misses(proxy, routes(origin, "stats", 150)) as done:
        assert poll(lambda: done[0] >= 150, 60)
    time.sleep(0.5)
    done_stats = run_cli(["stats"], proxy_env(origin.url, cache))
    assert done_stats.returncode == 0, done_stats.stderr
    figures = dict(
        line.split("  # ", 1)[0].split("=", 1) for line in done_stats.stdout.splitlines()
    )
    assert figures["files"] == "150"
    # du of the folder (the manager counts from v1/ down), less what changes as the
    # manager writes its own state files.
    assert abs(int(figures["bytes"]) - cache_bytes(cache / "v1")) <= 2 * 4096, figures


def test_workers_stop_storing_while_the_manager_counts_the_folder_over_its_limit(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    """The manager behind (here stopped, its last count over the limit): misses pass
    through unstored, so the disk's use does not grow; once it counts again, they are
    stored again."""
    proxy = proxy_factory({"WSGI_PROXY_MAX_SIZE": str(LIMIT)})
    assert poll(lambda: len(manager_pids(proxy.pid)) == 1, 10)
    assert poll((proxy.cache_dir / "v1" / "state" / "manager.json").exists, 10)
    # Each worker builds its app (and its upkeep thread) at its first request.
    warm = origin.route("/warm", headers=[("Cache-Control", "no-store")], body=b"w")
    for _ in range(20):
        assert proxy.get(warm).status == 200
    (manager,) = manager_pids(proxy.pid)
    os.kill(manager, signal.SIGSTOP)
    try:
        usage = proxy.cache_dir / "v1" / "state" / "usage"
        usage.write_text(f"{int(LIMIT * 1.1)} 1000")  # as a manager that fell behind counts
        time.sleep(1.0)  # each worker reads it every half second
        (path,) = routes(origin, "paused", 1)
        assert [proxy.get(path).x_cache for _ in range(3)] == ["MISS"] * 3
        assert origin.count(path) == 3
        assert "responses are not stored until the cache manager has made room" in (
            proxy.stderr(50)
        )
    finally:
        os.kill(manager, signal.SIGCONT)
    assert poll(lambda: proxy.get(path).x_cache == "HIT", 10)


def manager_state(cache: Path) -> dict[str, object]:
    """What the cache manager last published (store/manager.py, ``_publish``)."""
    try:
        state = json.loads((cache / "v1" / "state" / "manager.json").read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def counted_by(cache: Path, proxy: ProxyProcess) -> dict[str, object]:
    """The figures of the manager that runs for ``proxy`` now, once it has counted."""
    managers: list[int] = []

    def published() -> bool:
        managers[:] = manager_pids(proxy.pid)
        state = manager_state(cache)
        return bool(state.get("loaded")) and state.get("pid") in managers

    assert poll(published, 20), (manager_state(cache), managers, proxy.stderr(30))
    return manager_state(cache)


def stored_files(cache: Path) -> int:
    return sum(1 for p in (cache / "v1" / "objects").rglob("*") if p.is_file())


def test_a_clean_stop_leaves_an_index_the_restart_starts_from_over_a_lower_limit(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path
) -> None:
    """SIGTERM to the master: its manager writes state/index. Started again over a lower
    limit, the new manager reads it (no walk), deletes it, and brings du under the limit
    at once; its count of files is the folder's."""
    cache = tmp_path / "indexed"
    index = cache / "v1" / "state" / "index"
    proxy = proxy_factory({"WSGI_PROXY_MAX_SIZE": str(LIMIT)}, cache_dir=cache)
    assert counted_by(cache, proxy)["loaded_from"] == "walk"
    with misses(proxy, routes(origin, "indexed", 1200)) as done:
        assert poll(lambda: done[0] >= 1200, 60)
    assert cache_bytes(cache) > LIMIT * 0.6
    proxy.stop()
    assert index.exists(), proxy.stderr(30)
    assert "files written to" in proxy.stderr(30)

    lower = LIMIT * 3 // 8
    again = proxy_factory({"WSGI_PROXY_MAX_SIZE": str(lower)}, cache_dir=cache)
    state = counted_by(cache, again)
    assert state["loaded_from"] == "index", again.stderr(30)
    assert not index.exists()
    assert poll(lambda: cache_bytes(cache) <= lower * 1.05, 10), cache_breakdown(cache)
    time.sleep(0.5)
    assert manager_state(cache)["files"] == stored_files(cache)


def test_a_killed_manager_leaves_no_index_and_its_replacement_walks(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path
) -> None:
    """The index a clean stop left is read once: the manager that read it, killed, leaves
    none, and the one the master starts in its place walks the folder."""
    cache = tmp_path / "killed"
    index = cache / "v1" / "state" / "index"
    proxy = proxy_factory({"WSGI_PROXY_MAX_SIZE": str(LIMIT)}, cache_dir=cache)
    counted_by(cache, proxy)
    with misses(proxy, routes(origin, "killed", 200)) as done:
        assert poll(lambda: done[0] >= 200, 60)
    proxy.stop()
    assert index.exists()

    again = proxy_factory({"WSGI_PROXY_MAX_SIZE": str(LIMIT)}, cache_dir=cache)
    assert counted_by(cache, again)["loaded_from"] == "index"
    (first,) = manager_pids(again.pid)
    with misses(again, routes(origin, "after", 50)) as done:
        assert poll(lambda: done[0] >= 50, 60)
    os.kill(first, signal.SIGKILL)
    assert poll(lambda: manager_pids(again.pid) not in ([], [first]), 10), "not restarted"
    state = counted_by(cache, again)
    assert state["loaded_from"] == "walk", again.stderr(30)
    assert not index.exists()
    assert state["files"] == stored_files(cache) == 250
