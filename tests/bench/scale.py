#!/usr/bin/env python3
"""Scale mode (issue 24): the proxy with 1,000 to 1,000,000 entries of 1 KiB.

    .venv/bin/python tests/bench/scale.py [--sizes 1k,100k,1m] [--duration 10]
        [--conns 64] [--json scale.json] [--markdown scale.md] [--no-pin] [--keep]

For each size N, in a scratch folder and on free loopback ports: nginx as the origin,
serving one 1 KiB file for every ``/s/<bb>/<i>`` (``Cache-Control: max-age=86400``,
``Surrogate-Key: b<bb>``, so the bucket ``bb = i % 100`` holds 1 % of the entries both as
a path prefix and as a tag); the proxy as run.py starts it (``gunicorn -c gunicorn.conf.py
wsgi_proxy:app``, two workers, default settings) with only ``WSGI_PROXY_MAX_SIZE``, an
admin token and ``WSGI_PROXY_ADMIN_ALLOW=127.0.0.1`` (the metrics) set. Every request
sends ``Host: bench.example``, so the entries survive the proxy's restarts on new ports.
Then, in order, on that proxy and its cache folder:

1. fill: wrk (one thread, ``--conns``) sends unique URLs ``/s/<bb>/0`` .. ``N-1`` from an
   empty cache, all through HTTP (``WSGI_PROXY_MAX_SIZE`` large enough that nothing is
   evicted). The proxy's metrics are polled every 0.5 s: the fill rate is its misses per
   second from the 1st second to the 1st + ``--duration`` (past each worker's start),
   and over the whole fill; wrk is stopped once N misses are counted (the URLs after N
   are hits on ``/s/00/0``). Once the rate is measured, when pinned, the proxy may use
   every CPU until the fill ends (its rate given apart; ``--fill-pinned`` keeps it on
   CPU 0): 1,000,000 misses at ~1,800/s take ~10 minutes;
2. hot: wrk rotating over 100 stored URLs, ``--duration`` s: req/s, p50, p99;
3. spread: wrk drawing URLs uniformly over all N (a Lua ``math.random``): req/s, p50, p99;
   every answer must be a hit (the proxy's metrics say);
4. memory: RSS (``VmRSS`` in /proc) of every child of the gunicorn master, by command line
   (workers, and any cache manager), and of the master;
5. ``caching-proxy stats --cache-dir`` wall time (and ``caching-proxy --version``'s, the
   interpreter's start-up, for comparison);
6. purges, each timed until its answer: through the admin endpoint (``POST
   /_wsgi_proxy/purge?url=|prefix=|tag=`` with the token) and through ``caching-proxy
   purge --cache-dir``, each on its own URL / bucket: one URL, a prefix covering 1 % (one
   bucket), a tag on 1 % (another bucket), a tag matching nothing. After each purge that
   matched, one purged URL is fetched: it must be a MISS. Then a tag on 1 % again (a
   third bucket) through the endpoint, 1 s into a hot-set wrk run: its time, and the
   hot set's p99 over that run. Then the hot set (``HOT_CONNS`` connections) beside
   unique misses at full speed (``--conns``), the limit far away: the reference for
   step 8;
7. hot set over eviction: the proxy is stopped and started again with the limit at half
   of what ``du`` counts for the folder: after 1 s of the hot set, unmeasured (each worker
   builds its app on its first request), the hot set runs while the proxy scans and
   evicts, first paced (``HOT_CONNS`` connections, each waiting ``PACED_DELAY_MS`` before
   each request: about 1,000 requests a second, a server with room to spare), then at
   full speed, each for ``--duration`` s; their p99 beside step 2's (the paced one's
   measured there too), and the disk bytes freed during each; then no load until the
   folder's disk use is within 5 % of the limit (at most ``--settle-cap`` s from the
   start): the time it took;
8. disk under misses: on that proxy (now at its limit, unless the cap was reached), wrk
   drives unique misses at full speed for ``--duration`` s, the hot set beside them as in
   step 6; the folder's disk use as ``du -s -B1`` counts it (blocks, every file) is
   sampled every second: the largest and last ratio to the limit, the largest after the
   first 5 s, and from when every sample was within 5 %;
9. restart over the limit: stopped, the limit lowered to half again, started, misses at
   once, ``--duration`` s at a time until the disk is within 5 % of the limit (or
   ``--settle-cap``), sampled likewise;
10. ``caching-proxy --clear-cache --cache-dir`` wall time, while the proxy serves, on what
    is left (its file count from ``stats`` just before); a stored URL must then be a MISS.

Every measurement is the proxy under test's. Pinning as run.py (proxy on CPU 0; wrk,
nginx and ``du`` on CPU 1) unless ``--no-pin``. The output is a markdown table, sizes as
columns (``--table FILE`` prints it again from a ``--json`` file), and ``--json`` the
details, du samples included. Every process is stopped by process group at the
end, also on Ctrl-C or an error, and the scratch folder (in ``$TMPDIR``; 1,000,000
entries take ~4.5 GB) removed (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: ``bench`` is imported as the tests do
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.client import ADMIN_PREFIX, cache_outcomes, outcome_delta, settled_outcomes
from bench.load import rotation_script, wrk_headers
from bench.nginx_origin import nginx_binary, start_nginx
from bench.procs import Service, Services, exit_on_signal, settle_cpu, tree_pids
from bench.run import PROXY_CODE, REPO, code_state, machine, start_proxy

HOST = "bench.example"  # every request's Host: the key stays the same across restarts
BODY_SIZE = 1024
HOT_URLS = 100
HOT_CONNS = 8  # the hot set's connections while misses run beside it
# The paced hot set: each of its connections waits this long before each request (wrk's
# ``delay``), about 1,000 requests a second in all, a sixth of what the proxy answers on
# its CPU: a server with room to spare, where a p99 is the work of a request and not a
# queue's length.
PACED_DELAY_MS = 8
SETTLED = 1.05  # disk use within 5 % of the limit (issue 24, item 2)
BUCKETS = 100
# The buckets purged (1 % of the entries each); the hot set lies in other buckets.
PREFIX_BUCKETS = {"admin": 7, "cli": 8}
TAG_BUCKETS = {"admin": 13, "cli": 14, "load": 21}
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}

# The Surrogate-Key of /s/<bb>/<i> is b<bb>: its bucket as a tag.
ORIGIN_HTTP = '  map $request_uri $skey { "~^/s/([0-9][0-9])/" "b$1"; default "none"; }\n'
ORIGIN_LOCATIONS = """\
    location /s/ {
      try_files /one.bin =404;
      add_header Cache-Control "max-age=86400";
      add_header Surrogate-Key $skey;
    }
"""


def path_of(i: int) -> str:
    return f"/s/{i % BUCKETS:02d}/{i}"


def parse_sizes(raw: str) -> list[int]:
    sizes = []
    for raw_item in raw.split(","):
        item = raw_item.strip().lower()
        if not item:
            continue
        mult = {"k": 1000, "m": 1_000_000}.get(item[-1], 1)
        number = item[:-1] if mult > 1 else item
        sizes.append(int(float(number) * mult))
    return sizes


def size_label(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}m"
    if n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


# ---- wrk ----------------------------------------------------------------------------------


@dataclass
class Wrk:
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    errors: int
    outcomes: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "rps": round(self.rps),
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "requests": self.requests,
            "errors": self.errors,
            "outcomes": self.outcomes,
        }


def parse_wrk(out: str) -> Wrk:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if rps is None:
        raise SystemExit(f"wrk gave no result:\n{out}")

    def pct(p: str) -> float | None:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
        return round(float(m.group(1)) * _UNITS[m.group(2)], 3) if m else None

    count = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    errors += sum(map(int, sock.groups())) if sock else 0
    return Wrk(float(rps.group(1)), pct("50"), pct("99"), int(count.group(1)) if count else 0,
               errors)  # fmt: skip


def wrk_argv(port: int, conns: int, seconds: float, script: Path, pin: bool) -> list[str]:
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency",
            "--timeout", "10s", "-s", str(script), f"http://127.0.0.1:{port}/"]  # fmt: skip
    return ["taskset", "-c", "1", *argv] if pin else argv


def run_wrk(port: int, conns: int, seconds: float, script: Path, pin: bool) -> Wrk:
    """One wrk run; the proxy's requests by cache outcome meanwhile (its metrics)."""
    before = settled_outcomes(port)
    argv = wrk_argv(port, conns, seconds, script, pin)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120,
                          check=False)  # fmt: skip
    res = parse_wrk(done.stdout + done.stderr)
    res.outcomes = outcome_delta(before, settled_outcomes(port))
    return res


def concurrent_wrk(port: int, runs: list[tuple[int, Path]], seconds: float, pin: bool
                   ) -> tuple[list[Wrk], dict[str, int]]:  # fmt: skip
    """wrk runs side by side, one per (connections, script); the proxy's requests by cache
    outcome meanwhile, all runs together."""
    before = settled_outcomes(port)
    procs: list[subprocess.Popen[str]] = []
    try:
        for conns, script in runs:
            argv = wrk_argv(port, conns, seconds, script, pin)
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))  # fmt: skip
        results = [parse_wrk(proc.communicate(timeout=seconds + 120)[0]) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results, outcome_delta(before, settled_outcomes(port))


_HEAD = wrk_headers({"Host": HOST})


def unique_script(folder: Path, name: str, start: int, stop: int | None) -> Path:
    """GETs of ``path_of(start)``, ``path_of(start + 1)`` ... (one wrk thread: each once);
    past ``stop``, ``path_of(0)`` over and over."""
    limit = (
        "" if stop is None else f'  if i >= {stop} then return wrk.format("GET", "/s/00/0") end\n'
    )
    script = folder / f"{name}.lua"
    script.write_text(
        _HEAD + f"local n = {start}\n"
        "request = function()\n"
        "  local i = n\n"
        "  n = n + 1\n" + limit + '  return wrk.format("GET", string.format("/s/%02d/%d", '
        f"i % {BUCKETS}, i))\n"
        "end\n"
    )
    return script


def paced_script(folder: Path, paths: list[str]) -> Path:
    """``rotation_script``'s GETs, each connection waiting ``PACED_DELAY_MS`` before each
    request (wrk times a request from its write: the wait is not in its latency)."""
    delay = f"delay = function()\n  return {PACED_DELAY_MS}\nend\n"
    return rotation_script(folder, paths, {"Host": HOST}, extra=delay, name="paced.lua")


def spread_script(folder: Path, n: int) -> Path:
    script = folder / "spread.lua"
    script.write_text(
        _HEAD + f"math.randomseed({secrets.randbelow(1 << 30)})\n"
        "request = function()\n"
        f"  local i = math.random(0, {n - 1})\n"
        f'  return wrk.format("GET", string.format("/s/%02d/%d", i % {BUCKETS}, i))\n'
        "end\n"
    )
    return script


def hot_paths(n: int) -> list[str]:
    """HOT_URLS stored URLs spread over the ids, none in a purged bucket."""
    purged = {*PREFIX_BUCKETS.values(), *TAG_BUCKETS.values()}
    step = max(1, n // HOT_URLS)
    ids = [i for i in range(0, n, step) if i % BUCKETS not in purged]
    extra = (i for i in range(n) if i % BUCKETS not in purged and i not in set(ids))
    while len(ids) < min(HOT_URLS, n):
        ids.append(next(extra))
    return [path_of(i) for i in ids[:HOT_URLS]]


# ---- the proxy from outside: HTTP, the CLI, /proc, du --------------------------------------


def request(
    port: int, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes, float]:
    """(status, fields, body, seconds until the whole answer)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        start = time.perf_counter()
        conn.request(method, path, headers={"Host": HOST, **(headers or {})})
        resp = conn.getresponse()
        body = resp.read()
        took = time.perf_counter() - start
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body, took
    finally:
        conn.close()


def tree_python(tree: Path) -> str:
    """The Python of ``tree``: its ``.venv``'s if it has one (as run.start_proxy picks)."""
    python = tree / ".venv" / "bin" / "python"
    return str(python) if tree != REPO and python.exists() else sys.executable


def cli(args: list[str], cache: Path, tree: Path) -> dict[str, Any]:
    """``caching-proxy <args> --cache-dir cache`` of ``tree`` (run in it, so its
    ``wsgi_proxy`` is imported), timed (wall, start-up included), without the caller's
    WSGI_PROXY_* settings: the folder's own record says what the server used."""
    argv = [tree_python(tree), "-m", "wsgi_proxy", *args, "--cache-dir", str(cache)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSGI_PROXY_")}
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=3600,
                          check=False, cwd=tree)  # fmt: skip
    took = time.perf_counter() - start
    return {"argv": shlex.join(["caching-proxy", *args, "--cache-dir", str(cache)]),
            "exit": done.returncode, "s": round(took, 3),
            "out": (done.stdout + done.stderr).strip()[-500:]}  # fmt: skip


def stats_fields(out: str) -> dict[str, str]:
    return dict(
        line.split("  #", 1)[0].strip().split("=", 1)
        for line in out.splitlines()
        if "=" in line.split("  #", 1)[0]
    )


def disk_bytes(folder: Path, pin: bool) -> int:
    """What the disk counts for the folder: ``du -s -B1`` (allocated blocks, every file)."""
    argv = ["du", "-s", "-B1", str(folder)]
    if pin:
        argv = ["taskset", "-c", "1", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    return int(done.stdout.split()[0]) if done.stdout.strip() else 0


class DiskSampler:
    """``disk_bytes`` every second (or as fast as du goes) in a thread, until stopped."""

    def __init__(self, folder: Path, pin: bool) -> None:
        self.folder, self.pin = folder, pin
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def __enter__(self) -> DiskSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            tick = time.monotonic()
            self.samples.append((round(tick - self._t0, 2), disk_bytes(self.folder, self.pin)))
            self._stop.wait(max(0.0, 1.0 - (time.monotonic() - tick)))

    def now(self) -> float:
        """The clock the samples are stamped with."""
        return round(time.monotonic() - self._t0, 2)

    def settled(self, limit: int) -> bool:
        """Is the last sample within ``SETTLED`` of ``limit``?"""
        return bool(self.samples) and self.samples[-1][1] <= limit * SETTLED

    def wait_settled(self, limit: int, cap: float) -> None:
        """Until a sample is within ``SETTLED`` of ``limit``, or ``cap`` seconds from the
        first sample."""
        while not self.settled(limit) and self.now() < cap:
            time.sleep(0.2)

    def freed(self, start: float, end: float) -> int:
        """Disk bytes freed between the samples nearest ``start`` and ``end``."""
        inside = [b for t, b in self.samples if start <= t <= end]
        return inside[0] - inside[-1] if len(inside) > 1 else 0

    def summary(self, limit: int, settle: float = 5.0) -> dict[str, Any]:
        ratios = [(t, b / limit) for t, b in self.samples]
        late = [r for t, r in ratios if t >= settle]
        # From the first sample within SETTLED after which every one is: None if never.
        settled_s = None
        for t, r in reversed(ratios):
            if r > SETTLED:
                break
            settled_s = t
        return {
            "limit_bytes": limit,
            "samples": len(ratios),
            "max_ratio": round(max(r for _, r in ratios), 3) if ratios else None,
            "max_ratio_after_5s": round(max(late), 3) if late else None,
            "final_ratio": round(ratios[-1][1], 3) if ratios else None,
            "settled_s": settled_s,
            "sampled_s": ratios[-1][0] if ratios else None,
            "series": [(t, b) for t, b in self.samples],
        }


def children_rss(master: int) -> dict[str, Any]:
    """RSS (KiB) of the gunicorn master and of each of its children, by command line."""

    def rss(pid: int) -> int | None:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            if ppid != master:
                continue
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        kids.append({"pid": int(entry), "cmdline": cmd.strip(), "rss_kib": rss(int(entry))})
    try:
        own = Path(f"/proc/{master}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        own = ""
    return {"master_rss_kib": rss(master), "master_cmdline": own,
            "children": sorted(kids, key=lambda k: k["pid"])}  # fmt: skip


# ---- one size -----------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    services: Services
    scratch: Path
    origin_port: int
    token: str
    pin: bool
    proxy: Service | None = None

    def start(self, cache: Path, max_size: int, name: str) -> Service:
        settings = {"WSGI_PROXY_MAX_SIZE": str(max_size), "WSGI_PROXY_ADMIN_TOKEN": self.token}
        self.proxy = start_proxy(self.services, name, self.origin_port, cache, self.args,
                                 settings, tree=self.args.tree)  # fmt: skip
        return self.proxy

    def stop(self) -> None:
        if self.proxy is not None:
            self.services.stop(self.proxy)
            self.proxy = None

    def wrk(self, conns: int, seconds: float, script: Path, *, settle: bool = True) -> Wrk:
        """``run_wrk``; then, if ``settle``, wait for the proxy's CPU to go idle."""
        assert self.proxy is not None
        res = run_wrk(self.proxy.port, conns, seconds, script, self.pin)
        if settle:
            settle_cpu(self.proxy.proc.pid)
        return res


def say(text: str) -> None:
    print(text, flush=True)


def set_affinity(root: int, cpus: set[int]) -> None:
    """Every thread of ``root`` and its descendants on ``cpus`` (threads made later take
    their creator's)."""
    for pid in tree_pids(root):
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cpus)


def fill(run: Run, n: int) -> dict[str, Any]:
    """Unique misses 0..n-1 at full speed through HTTP; the proxy's miss count polled every
    0.5 s. The fill rate is taken from 1 s to 1 + ``--duration`` s (past the workers'
    first requests); after that, when pinned and not ``--fill-pinned``, the proxy may use
    every CPU until the fill ends (the rest of the fill only; its rate is given apart)."""
    assert run.proxy is not None
    port, args, root = run.proxy.port, run.args, run.proxy.proc.pid
    script = unique_script(run.scratch, "fill", 0, n)
    before = cache_outcomes(port)
    if before is None:
        raise SystemExit("the proxy's metrics are closed: the fill cannot be followed")
    cap = n / 100 + 300  # seconds: far beyond any fill rate seen
    argv = wrk_argv(port, args.conns, cap, script, run.pin)
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)  # fmt: skip
    samples: list[tuple[float, int]] = []
    widened: tuple[float, int] | None = None
    misses, last_change, last = 0, start, -1
    try:
        while misses < n:
            time.sleep(0.5)
            now = cache_outcomes(port) or {}
            misses = now.get("miss", 0) - before.get("miss", 0)
            t = time.monotonic() - start
            samples.append((t, misses))
            if misses != last:
                last, last_change = misses, time.monotonic()
            if proc.poll() is not None or time.monotonic() - last_change > 60:
                raise SystemExit(f"the fill stalled at {misses} of {n} misses")
            wide = run.pin and not args.fill_pinned and widened is None
            if wide and t >= 1 + args.duration and misses < n:
                set_affinity(root, set(range(os.cpu_count() or 1)))
                widened = (t, misses)
        took = time.monotonic() - start
    finally:
        if widened is not None:
            set_affinity(root, {0})  # as run.py pins the servers
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # wrk prints its figures on SIGINT
        out, _ = proc.communicate(timeout=30)
    begin = next((s for s in samples if s[0] >= 1.0), samples[0])
    end = next((s for s in samples if s[0] >= begin[0] + args.duration), samples[-1])
    first_rate = (end[1] - begin[1]) / (end[0] - begin[0]) if end[0] > begin[0] else None
    outcomes = outcome_delta(before, settled_outcomes(port))
    res = parse_wrk(out) if "Requests/sec" in out else None
    result: dict[str, Any] = {
        "misses": misses,
        "s": round(took, 2),
        "rate": round(misses / took),
        "first_from_s": round(begin[0], 2),
        "first_to_s": round(end[0], 2),
        "first_rate": round(first_rate) if first_rate is not None else round(misses / took),
        "conns": args.conns,
        "outcomes": outcomes,
        "wrk_errors": res.errors if res else None,
        "rest_on_all_cpus": widened is not None,
    }
    if widened is not None:
        result["rest_rate"] = round((misses - widened[1]) / (took - widened[0]))
    return result


def purges(run: Run, n: int, cache: Path, hot: Path) -> dict[str, Any]:
    """Each purge through the admin endpoint and through the CLI, timed; a purged URL must
    then be a MISS. Then a tag on 1 % again through the endpoint, 1 s into a hot-set wrk
    run (``hot``), and that run's figures."""
    assert run.proxy is not None
    port = run.proxy.port
    auth = {"Authorization": f"Bearer {run.token}"}
    results: dict[str, Any] = {}

    def check_miss(path: str) -> str | None:
        status, fields, _, _ = request(port, "GET", path)
        return fields.get("x-cache") if status == 200 else f"status {status}"

    ids = {"admin": min(n - 1, 42), "cli": min(n - 1, 43)}
    for way in ("admin", "cli"):
        pb, tb = PREFIX_BUCKETS[way], TAG_BUCKETS[way]
        orders = [
            ("url", path_of(ids[way]), path_of(ids[way])),
            ("prefix", f"/s/{pb:02d}/", path_of(pb + BUCKETS if n > pb + BUCKETS else pb)),
            ("tag", f"b{tb:02d}", path_of(tb + BUCKETS if n > tb + BUCKETS else tb)),
            ("tag_none", f"nomatch-{way}", None),
        ]
        for kind, value, probe in orders:
            key = "tag" if kind == "tag_none" else kind
            if way == "admin":
                query = f"{ADMIN_PREFIX}/purge?{key}={value}"
                status, _, body, took = request(port, "POST", query, auth)
                entry = {"s": round(took, 4), "status": status,
                         "answer": body.decode(errors="replace").strip()}  # fmt: skip
            else:
                argv = ["purge", value] if kind == "url" else ["purge", f"--{key}", value]
                done = cli(argv, cache, run.args.tree)
                entry = {"s": done["s"], "exit": done["exit"], "answer": done["out"]}
            if probe is not None:
                entry["after"] = check_miss(probe)
            results[f"{way}_{kind}"] = entry
            say(f"  purge {way} {kind} {value}: {entry}")
    tag = f"b{TAG_BUCKETS['load']:02d}"
    argv = wrk_argv(port, run.args.conns, run.args.duration, hot, run.pin)
    load = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1)
        status, _, body, took = request(port, "POST", f"{ADMIN_PREFIX}/purge?tag={tag}", auth)
        wrk_out = load.communicate(timeout=run.args.duration + 120)[0]
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    bucket = TAG_BUCKETS["load"]
    probe = path_of(bucket + BUCKETS if n > bucket + BUCKETS else bucket)
    answer = body.decode(errors="replace").strip()
    entry = {"s": round(took, 4), "status": status, "answer": answer,
             "after": check_miss(probe), "hot": parse_wrk(wrk_out).as_json()}  # fmt: skip
    results["admin_tag_load"] = entry
    say(f"  purge admin tag {tag} under the hot set's load: {entry}")
    settle_cpu(run.proxy.proc.pid)
    return results


def disk_line(d: dict[str, Any]) -> str:
    return (f"{d['rps']} misses/s; disk/limit max {d['max_ratio']}, after 5 s "
            f"{d['max_ratio_after_5s']}, final {d['final_ratio']} (limit {d['limit_bytes']} B, "
            f"{d['samples']} samples)")  # fmt: skip


def one_size(args: argparse.Namespace, services: Services, scratch: Path, origin_port: int,
             pin: bool, out: dict[str, Any]) -> None:  # fmt: skip
    """Every step for ``out["entries"]`` entries, each result put in ``out`` as it comes."""
    n = out["entries"]
    label = size_label(n)
    folder = scratch / f"n{label}"
    folder.mkdir()
    cache = folder / "cache"
    run = Run(args, services, folder, origin_port, secrets.token_hex(24), pin)
    fill_limit = max(1 << 30, n * 16 << 10)  # no eviction while filling
    say(f"\n== {label}: {n} entries ==")
    proxy = run.start(cache, fill_limit, f"proxy-{label}")
    say(f"  proxy pid {proxy.proc.pid}, WSGI_PROXY_MAX_SIZE={fill_limit}")
    try:
        # 1. fill
        out["fill"] = fill(run, n)
        say(f"  fill: {out['fill']}")
        full = disk_bytes(cache, pin)
        out["disk_full_bytes"] = full
        # 2. hot set, 3. spread, 4. memory
        paths = hot_paths(n)
        hot = rotation_script(folder, paths, {"Host": HOST})
        run.wrk(args.conns, 2, hot)  # every worker has answered, its first scans begun
        time.sleep(2)
        out["hot"] = run.wrk(args.conns, args.duration, hot).as_json()
        say(f"  hot: {out['hot']}")
        paced = paced_script(folder, paths)
        out["hot_paced"] = run.wrk(HOT_CONNS, args.duration, paced).as_json()
        say(f"  hot, paced: {out['hot_paced']}")
        out["spread"] = run.wrk(args.conns, args.duration, spread_script(folder, n)).as_json()
        say(f"  spread: {out['spread']}")
        out["memory"] = children_rss(proxy.proc.pid)
        say(f"  memory: {out['memory']}")
        # 5. stats, 6. purges
        out["version_s"] = version_s(args.tree)
        stats = cli(["stats"], cache, args.tree)
        out["stats"] = {**stats, "fields": stats_fields(stats["out"])}
        say(f"  stats: {stats['s']} s, exit {stats['exit']}")
        out["purge"] = purges(run, n, cache, hot)

        # 6b. the hot set beside misses at full speed, the limit far away: no eviction
        first_id = n + 1_000_000_000  # URLs never asked before
        misses = unique_script(folder, "misses-far", 3 * first_id, None)
        (miss, hot_res), outcomes = concurrent_wrk(
            proxy.port, [(args.conns, misses), (HOT_CONNS, hot)], args.duration, pin
        )
        settle_cpu(proxy.proc.pid)
        out["hot_misses_far"] = {"misses": miss.as_json(), "hot": hot_res.as_json(),
                                 "outcomes": outcomes}  # fmt: skip
        say(f"  hot set ({HOT_CONNS} conns) beside {miss.rps:.0f} misses/s, no eviction: "
            f"p99 {hot_res.p99_ms} ms")  # fmt: skip

        # 7. restart over the limit, the hot set at once: paced, then at full speed; then
        # no load until the disk is within 5 % of the limit (or --settle-cap)
        run.stop()
        before = disk_bytes(cache, pin)
        limit = max(1 << 20, before // 2)
        proxy = run.start(cache, limit, f"proxy-{label}-evict")
        with DiskSampler(cache, pin) as sampler:
            # 1 s of the hot set first, unmeasured: each worker builds its app on its first
            # request, which is no scan's cost; no wait for an idle CPU after it.
            argv = wrk_argv(proxy.port, args.conns, 1, hot, pin)
            subprocess.run(argv, capture_output=True, timeout=120, check=False)
            t0 = sampler.now()
            slow = run.wrk(HOT_CONNS, args.duration, paced, settle=False)
            t1 = sampler.now()
            res = run.wrk(args.conns, args.duration, hot, settle=False)
            t2 = sampler.now()
            sampler.wait_settled(limit, args.settle_cap)
        out["hot_evicting_paced"] = {**slow.as_json(), "freed": sampler.freed(t0, t1),
                                     "window_s": [t0, t1]}  # fmt: skip
        evicting = {**res.as_json(), "disk_before": before, "freed": sampler.freed(t1, t2),
                    "window_s": [t1, t2], **sampler.summary(limit)}  # fmt: skip
        out["hot_evicting"] = evicting
        say(f"  hot while evicting (limit {limit}): paced p99 {slow.p99_ms} ms "
            f"({out['hot_evicting_paced']['freed']} B freed meanwhile), full speed p99 "
            f"{res.p99_ms} ms ({evicting['freed']} B freed); disk/limit max "
            f"{evicting['max_ratio']}, within {SETTLED} after {evicting['settled_s']} s, "
            f"final {evicting['final_ratio']}")  # fmt: skip
        settle_cpu(proxy.proc.pid)

        # 8. misses at full speed, the folder at its limit; the hot set beside them
        misses = unique_script(folder, "misses", first_id, None)
        with DiskSampler(cache, pin) as sampler:
            (miss, hot_res), outcomes = concurrent_wrk(
                proxy.port, [(args.conns, misses), (HOT_CONNS, hot)], args.duration, pin
            )
        settle_cpu(proxy.proc.pid)
        out["disk_misses"] = {**miss.as_json(), **sampler.summary(limit),
                              "hot": hot_res.as_json(), "all_outcomes": outcomes}  # fmt: skip
        say(f"  misses at the limit: {disk_line(out['disk_misses'])}; hot set beside them: "
            f"p99 {hot_res.p99_ms} ms")  # fmt: skip

        # 9. stop, lower the limit, start, misses at once
        run.stop()
        before = disk_bytes(cache, pin)
        limit = max(1 << 20, limit // 2)
        proxy = run.start(cache, limit, f"proxy-{label}-restart")
        misses = unique_script(folder, "misses-restart", 2 * first_id, None)
        runs: list[Wrk] = []
        with DiskSampler(cache, pin) as sampler:
            # --duration s at least, then on until within 5 % of the limit (or the cap)
            while not runs or (not sampler.settled(limit) and sampler.now() < args.settle_cap):
                runs.append(run.wrk(args.conns, args.duration, misses, settle=False))
        # The runs' rate together; no percentile of theirs makes one of the whole.
        res = Wrk(sum(r.requests for r in runs) / (args.duration * len(runs)), None, None,
                  sum(r.requests for r in runs), sum(r.errors for r in runs))  # fmt: skip
        out["disk_restart"] = {**res.as_json(), "disk_before": before, **sampler.summary(limit)}
        say(f"  restarted over the limit ({before} B on disk): {disk_line(out['disk_restart'])}")

        # 10. clear
        left = cli(["stats"], cache, args.tree)
        clear = cli(["--clear-cache"], cache, args.tree)
        _, fields, _, _ = request(proxy.port, "GET", paths[0])
        out["clear"] = {**clear, "files_before": stats_fields(left["out"]).get("files"),
                        "after": fields.get("x-cache")}  # fmt: skip
        say(
            f"  --clear-cache: {clear['s']} s, exit {clear['exit']}, "
            f"{out['clear']['files_before']} files before"
        )
    finally:
        run.stop()
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)


def version_s(tree: Path) -> float:
    """``caching-proxy --version`` wall time: the interpreter's and the CLI's start-up."""
    start = time.perf_counter()
    argv = [tree_python(tree), "-m", "wsgi_proxy", "--version"]
    subprocess.run(argv, capture_output=True, check=False, cwd=tree)
    return round(time.perf_counter() - start, 3)


# ---- the table ----------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    return (
        "-"
        if seconds is None
        else f"{seconds * 1000:.0f} ms"
        if seconds < 10
        else f"{seconds:.1f} s"
    )


def _purged(entry: dict[str, Any]) -> str:
    """``N purged`` from an answer ``purged N``, else the answer's first word (``banned``)."""
    answer = str(entry.get("answer", ""))
    m = re.search(r"purged (\d+)", answer)
    if m:
        return f"{m.group(1)} purged"
    words = answer.split(":", 1)[0].split(maxsplit=1)
    return words[0][:30] if words else "no answer"


def table_rows(results: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(measure, one cell per size)."""
    sizes = results["sizes"]

    def row(what: str, cell: Any) -> tuple[str, list[str]]:
        cells = []
        for r in sizes:
            try:
                cells.append(str(cell(r)))
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                cells.append("-")
        return what, cells

    def wrk_cell(key: str) -> Any:
        def cell(r: dict[str, Any]) -> str:
            w = r[key]
            odd = {k: v for k, v in w["outcomes"].items() if k != "hit"}
            note = f" (not hits: {odd})" if odd else ""
            errs = f" ({w['errors']} wrk errors)" if w["errors"] else ""
            return f"{w['rps']} req/s, p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms{note}{errs}"

        return cell

    def disk_cell(key: str) -> Any:
        def cell(r: dict[str, Any]) -> str:
            d = r[key]
            within = (f"within 5 % after {d['settled_s']:.0f} s" if d.get("settled_s") is not None
                      else f"not within 5 % in {d.get('sampled_s')} s")  # fmt: skip
            if key == "hot_evicting":
                return f"max {d['max_ratio']}, {within}, final {d['final_ratio']}"
            return (f"max {d['max_ratio']}, after 5 s {d['max_ratio_after_5s']}, {within}, "
                    f"final {d['final_ratio']} (limit {d['limit_bytes'] >> 20} MiB, "
                    f"{d['rps']} misses/s)")  # fmt: skip

        return cell

    def purge_cell(name: str) -> Any:
        def cell(r: dict[str, Any]) -> str:
            p = r["purge"][name]
            after = f", then {p['after']}" if "after" in p else ""
            return f"{_ms(p['s'])} ({_purged(p)}{after})"

        return cell

    def mem_cell(r: dict[str, Any]) -> str:
        memory = r["memory"]
        master = memory["master_cmdline"]
        parts = []
        for kid in memory["children"]:
            args = kid["cmdline"].split(" ", 1)[-1]  # without the interpreter's path
            what = "" if kid["cmdline"] == master else f" `{args[:60]}`"
            parts.append(f"{(kid['rss_kib'] or 0) / 1024:.0f}{what}")
        return f"{', '.join(parts)} (master {(memory['master_rss_kib'] or 0) / 1024:.0f})"

    def fill_cell(r: dict[str, Any]) -> str:
        f = r["fill"]
        rest = (f"; after the first part, proxy on all CPUs: {f['rest_rate']}/s"
                if f["rest_on_all_cpus"] else "")  # fmt: skip
        return f"{f['rate']}/s, {f['s']} s{rest}"

    def misses_hot_cell(r: dict[str, Any]) -> str:
        far, over = r["hot_misses_far"], r["disk_misses"]
        return (f"{far['hot']['p99_ms']} / {over['hot']['p99_ms']} ms (misses/s "
                f"{far['misses']['rps']} / {over['rps']})")  # fmt: skip

    def clear_cell(r: dict[str, Any]) -> str:
        c = r["clear"]
        return (f"{_ms(c['s'])} ({c['files_before']} files), exit {c['exit']}, a stored URL "
                f"then {c['after']}")  # fmt: skip

    def evicting_cell(key: str, idle: str) -> Any:
        def cell(r: dict[str, Any]) -> str:
            w = r[key]
            odd = {k: v for k, v in w["outcomes"].items() if k != "hit"}
            note = f" (not hits: {odd})" if odd else ""
            freed = f", {w['freed'] / 2**20:.0f} MiB freed meanwhile" if "freed" in w else ""
            return (f"{r[idle]['p99_ms']} / {w['p99_ms']} ms ({r[idle]['rps']} / {w['rps']} "
                    f"req/s{freed}){note}")  # fmt: skip

        return cell

    rows = [
        row("entries stored (`stats` files)", lambda r: r["stats"]["fields"]["files"]),
        row(
            "disk use when full (`du -s -B1`), per entry",
            lambda r: (
                f"{r['disk_full_bytes'] / 2**20:.0f} MiB, {r['disk_full_bytes'] // r['entries']} B"
            ),
        ),
        row(
            f"fill rate from empty, {results['settings']['duration']} s from the 1st (misses/s)",
            lambda r: r["fill"]["first_rate"],
        ),
        row("fill, whole (HTTP; misses/s, time)", fill_cell),
        row("hot set (100 URLs)", wrk_cell("hot")),
        row("spread over all entries", wrk_cell("spread")),
        row("RSS MiB of each child of the master (its command line if not the master's)", mem_cell),
        row("`caching-proxy stats`", lambda r: _ms(r["stats"]["s"])),
        row("`caching-proxy --version` (start-up alone)", lambda r: _ms(r["version_s"])),
    ]
    for way, title in (("admin", "admin endpoint"), ("cli", "`caching-proxy purge`")):
        for kind, what in (("url", "one URL"), ("prefix", "prefix, 1 %"), ("tag", "tag, 1 %"),
                           ("tag_none", "tag matching nothing")):  # fmt: skip
            rows.append(row(f"purge, {title}: {what}", purge_cell(f"{way}_{kind}")))
    under_load = purge_cell("admin_tag_load")
    rows.append(row("purge, admin endpoint: tag, 1 %, 1 s into a hot-set run (its p99)",
                    lambda r: f"{under_load(r)}, hot set p99 "
                              f"{r['purge']['admin_tag_load']['hot']['p99_ms']} ms"))  # fmt: skip
    rows += [
        row(f"hot set paced ({HOT_CONNS} conns, {PACED_DELAY_MS} ms between requests), p99 idle / "
            "just restarted over the limit (scan, eviction)",
            evicting_cell("hot_evicting_paced", "hot_paced")),
        row("hot set p99 idle / just restarted over the limit, after the paced run",
            evicting_cell("hot_evicting", "hot")),
        row("disk / limit, restarted over the limit: hot set, then no load",
            disk_cell("hot_evicting")),
        row(f"hot set p99 ({HOT_CONNS} conns) beside misses at full speed: limit far / over "
            "the limit (eviction)", misses_hot_cell),
        row("disk / limit under misses at full speed, from the limit",
            disk_cell("disk_misses")),
        row("disk / limit, restarted over the limit, misses at full speed (until within 5 %)",
            disk_cell("disk_restart")),
        row("`caching-proxy --clear-cache` (files before)", clear_cell),
    ]  # fmt: skip
    return rows


def markdown(results: dict[str, Any]) -> str:
    labels = [size_label(r["entries"]) for r in results["sizes"]]
    lines = [
        f"`{results['command']}`, {results['machine']['cpu_model']}, "
        f"{results['machine']['cpus']} CPUs, pinned: {results['pinned']}, commit "
        f"{results['machine']['version']}, {results['settings']['conns']} connections, "
        f"{results['settings']['duration']} s per run",
        "",
        "| measure | " + " | ".join(f"{x} entries" for x in labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for what, cells in table_rows(results):
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---- main ---------------------------------------------------------------------------------


def start_origin(services: Services, scratch: Path) -> int:
    nginx = nginx_binary()
    if nginx is None:
        raise SystemExit("nginx is not installed (Debian: apt-get install -y nginx)")
    www = scratch / "www"
    www.mkdir()
    (www / "one.bin").write_bytes(os.urandom(BODY_SIZE))
    return start_nginx(services, nginx, scratch / "nginx", www, ORIGIN_LOCATIONS, ORIGIN_HTTP)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="1k,100k,1m", help="entry counts (1k,100k,1m)")
    ap.add_argument("--duration", type=int, default=10,
                    help="seconds per wrk run, and of the fill rate's first part (10)")  # fmt: skip
    ap.add_argument("--conns", type=int, default=64, help="wrk connections (64)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    ap.add_argument("--fill-pinned", action="store_true",
                    help="keep the proxy on CPU 0 for the whole fill (by default it may use "
                         "every CPU once the fill rate is measured)")  # fmt: skip
    ap.add_argument("--proxy-env", action="append", default=[], metavar="NAME=VALUE",
                    help="an environment variable for every proxy (repeatable)")  # fmt: skip
    ap.add_argument("--proxy-arg", action="append", default=[], metavar="ARG",
                    help="an extra gunicorn argument for the proxy")  # fmt: skip
    ap.add_argument("--settle-cap", type=float, default=600, metavar="S",
                    help="after a restart over the limit, wait at most this long for the disk "
                         "to come within 5 %% of it (600)")  # fmt: skip
    ap.add_argument("--json", type=Path, help="write the results to this file")
    ap.add_argument("--markdown", type=Path, help="write the table to this file")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (logs)")
    ap.add_argument("--table", type=Path, metavar="JSON",
                    help="print the table of an earlier --json file, run nothing")  # fmt: skip
    ap.add_argument("--tree", type=Path, default=REPO, metavar="DIR",
                    help="measure the proxy (server and CLI) of another checkout, under its "
                         ".venv if it has one (default: this one)")  # fmt: skip
    args = ap.parse_args(argv)
    args.tree = args.tree.resolve()
    if not (args.tree / "wsgi_proxy").is_dir():
        ap.error(f"--tree {args.tree}: no wsgi_proxy/ there")
    args.size_list = parse_sizes(args.sizes)
    if not args.size_list or min(args.size_list) < 200:
        ap.error("--sizes: at least 200 entries each (1 % buckets must hold some)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table is not None:
        print(markdown(json.loads(args.table.read_text())), end="")
        return 0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, exit_on_signal)
    # Ctrl-C raises KeyboardInterrupt even where the shell started this with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    command = shlex.join(sys.orig_argv)
    about = {**machine(), **code_state(args.tree)}
    say(f"command: {command}\nmachine: {about['cpu_model']}, {about['cpus']} CPUs; code "
        f"{about['version']}; pinning: {pin}")  # fmt: skip
    scratch = Path(tempfile.mkdtemp(prefix="wsgi-proxy-scale-"))
    (scratch / "logs").mkdir()
    services = Services(scratch / "logs", pin)
    results: dict[str, Any] = {"command": command, "machine": about, "pinned": pin,
                               "settings": {"duration": args.duration, "conns": args.conns,
                                            "settle_cap": args.settle_cap,
                                            "sizes": args.size_list}, "sizes": []}  # fmt: skip
    try:
        origin_port = start_origin(services, scratch)
        for n in args.size_list:
            out: dict[str, Any] = {"entries": n}
            results["sizes"].append(out)  # in the table even if the run stops midway
            one_size(args, services, scratch, origin_port, pin, out)
    finally:
        services.stop_all()
        results["proxy_code"] = dict(PROXY_CODE)  # what each proxy started with
        if len(set(PROXY_CODE.values())) > 1:
            say(f"warning: the proxy's code changed during the run: {PROXY_CODE}")
        if args.keep:
            say(f"scratch folder kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
        if results["sizes"]:
            table = markdown(results)
            say("\n" + table)
            if args.markdown:
                args.markdown.write_text(table)
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit("interrupted: every process stopped, the scratch folder removed")
