#!/usr/bin/env python3
"""Load benchmark: the proxy against bare gunicorn apps, side by side, in one run.

    .venv/bin/python tests/bench/run.py [--rounds 3] [--duration 5] [--conns 16,64]
        [--entries 100000] [--no-size] [--no-stream] [--json results.json]

Starts, on free loopback ports and in a scratch folder:
- an origin: nginx from the system if installed (``--python-origin`` to skip it), else
  ``bench_origin.py`` (a threaded Python server); ``/slow/*`` always goes to
  ``bench_origin.py``, which answers after 0.5 s and counts its requests. It serves
  ``/c/*`` (``max-age=3600``), ``/nostore/1k.bin`` (``no-store``) and a sparse 512 MiB
  ``/big/512m.bin`` (``max-age=3600``);
- the proxy: ``gunicorn -c gunicorn.conf.py wsgi_proxy:app`` with the repository's settings
  (and ``WSGI_PROXY_ADMIN_ALLOW=127.0.0.1``, so the bench can read its metrics);
- the ceilings, ``bench_app.py`` under gunicorn gthread, 2 workers x 4 threads: ``app``
  serves the same bytes from memory (the ceiling for a HIT), ``passthru`` forwards every
  GET to the origin through a pooled urllib3 client (the ceiling for a pass-through).
  They run under the repository's ``gunicorn.conf.py`` too (its access log, logger and
  request limits), with worker class and counts set on their command line: the ratios
  compare the apps, not the server settings. The shared benchmark's ``gu-*`` ceilings get
  the same, since gunicorn reads ``./gunicorn.conf.py`` and that benchmark runs from the
  project's root.

With ``taskset`` and 2+ CPUs the servers run on CPU 0 and wrk and the origin on CPU 1, so
figures are per core. Absolute figures drift on a shared machine: read the ratios, each
taken from two wrk runs seconds apart in the same round (order alternating), the median
over the rounds. Then, in turn:

1. Load (wrk -t1, keep-alive, at each connection count): 1 KiB, 64 KiB and 1 MiB HITs,
   proxy against ``app``; ``pass 1k``, an uncacheable 1 KiB, proxy against ``passthru``;
   and, for context, ``filewrap`` against ``app`` at 1 MiB: what sendfile leaves of the
   ceiling in a bare app.
   Each proxy run is checked against the proxy's own metrics: every request must have been
   a hit (a pass for ``pass 1k``).
2. Herd: 50 concurrent GETs of one cold URL whose origin answers after 0.5 s (origin
   requests seen, slowest answer), and 50 concurrent GETs of 50 different slow URLs
   (slowest answer: the proxy's thread pool against a slow origin).
3. Cache size (``--no-size`` to skip): two more proxies, one whose cache folder was filled
   beforehand with ``--entries`` 1 KiB entries through the project's Store API (timed), one
   empty; 100 URLs are stored in both, and wrk rotates over them (a Lua script) on each.
   Every worker's eviction thread scans the whole folder on its first tick, so the run
   waits until those scans are over before measuring (their duration is printed).
4. Streaming (``--no-stream`` to skip): a fresh proxy with ``WSGI_PROXY_MAX_SIZE=2G`` (so
   the 512 MiB body is stored) fetches it twice, MISS then HIT, by a raw socket reading in
   1 MiB blocks: time to first body byte, total time, and the growth of the proxy's process
   tree memory (RSS and PSS over master and workers, sampled every 50 ms).

The end is a markdown summary with the targets beside the measured values; ``--json``
writes everything. Every process started here runs in its own session and is stopped by
process group, also on Ctrl-C or SIGTERM. Not a test: pytest collects nothing from here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: ``bench`` is imported as the tests do
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import fill, streaming
from bench.client import cache_outcomes, concurrent_gets, distinct_misses, get, herd, warm
from bench.load import Pair, print_group, rotation_script, run_pairs, run_wrk
from bench.nginx_origin import nginx_binary, start_nginx
from bench.procs import Service, Services, exit_on_signal, free_port
from bench.summary import Targets, print_summary, summary_rows

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SIZES = (("1k", 1024), ("64k", 64 << 10), ("1m", 1 << 20))
SLOW_DELAY = 0.5
HOT_URLS = 100  # URLs stored in both proxies of the cache-size test
BIG_PATH = "/big/512m.bin"
BIG_SIZE = 512 << 20
GUNICORN = [sys.executable, "-m", "gunicorn"]
# As the shared benchmark's gu-raw-gthread-w2t4 (and gu-passthru-gthread-w2t4).
BARE_SETTINGS = [
    *("-k", "gthread", "-w", "2", "--threads", "4", "--keep-alive", "30", "--backlog", "2048"),
    *("--log-level", "warning", "--no-control-socket"),
]
# Every proxy here: its metrics (requests by cache outcome) readable from loopback.
PROXY_ENV = {"WSGI_PROXY_ADMIN_ALLOW": "127.0.0.1"}
# The code each proxy started with (``code_state``), by service name.
PROXY_CODE: dict[str, str] = {}

# The origin's paths: cached, never stored, the large file, and slow (bench_origin.py).
ORIGIN_LOCATIONS = """\
    location /c/ {{ add_header Cache-Control "max-age=3600"; }}
    location /nostore/ {{ add_header Cache-Control "no-store"; }}
    location /big/ {{ add_header Cache-Control "max-age=3600"; }}
    location /slow/ {{ proxy_pass http://127.0.0.1:{slow}; proxy_buffering off; }}
"""


# ---- servers ------------------------------------------------------------------------------


def start_origin(
    services: Services, scratch: Path, www: Path, *, python_only: bool
) -> tuple[int, int, str]:
    """(origin port, port counting slow requests, description)."""
    slow_port = free_port()
    origin_script = str(HERE / "bench_origin.py")
    slow_argv = [sys.executable, origin_script, str(slow_port), str(www), str(SLOW_DELAY)]
    nginx = None if python_only else nginx_binary()
    if nginx is None:
        services.start("origin", slow_argv, slow_port, cpus="1")
        why = "--python-origin" if python_only else "nginx not installed"
        return slow_port, slow_port, f"Python threaded server, bench_origin.py ({why})"
    services.start("slow-origin", slow_argv, slow_port, cpus="1")
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True, check=False)
    locations = ORIGIN_LOCATIONS.format(slow=slow_port)
    port = start_nginx(services, nginx, scratch / "nginx", www, locations)
    described = version.stderr.strip().removeprefix("nginx version: ")
    return port, slow_port, f"nginx ({described}), bench_origin.py for /slow/"


def start_proxy(
    services: Services,
    name: str,
    origin_port: int,
    cache: Path,
    args: argparse.Namespace,
    settings: dict[str, str] | None = None,
    tree: Path = REPO,
) -> Service:
    """The proxy as deployed: gunicorn with the gunicorn.conf.py of ``tree`` (this
    repository, or ``--baseline``), ``settings`` then ``--proxy-env`` (which wins) as
    WSGI_PROXY_* variables, ``--proxy-arg`` added. Another tree runs under its own
    ``.venv`` if it has one; gunicorn, started in ``tree``, imports its ``wsgi_proxy``."""
    port = free_port()
    env = {
        "WSGI_PROXY_ORIGIN": f"http://127.0.0.1:{origin_port}",
        "WSGI_PROXY_CACHE_DIR": str(cache),
        **PROXY_ENV,
        **(settings or {}),
        **dict(item.split("=", 1) for item in args.proxy_env),
    }
    python = tree / ".venv" / "bin" / "python"
    gunicorn = [str(python), "-m", "gunicorn"] if tree != REPO and python.exists() else GUNICORN
    argv = [*gunicorn, "-c", "gunicorn.conf.py", *args.proxy_arg, "wsgi_proxy:app"]
    argv += ["-b", f"127.0.0.1:{port}"]
    code = code_state(tree)  # the working tree may change during a run: what this one loads
    service = services.start(name, argv, port, cpus="0", env=env, cwd=tree)
    PROXY_CODE[name] = code["version"]
    return service


def start_bare(services: Services, name: str, app: str, www: Path, origin_port: int) -> Service:
    """A ceiling from bench_app.py, as the shared benchmark's gu-*-gthread-w2t4."""
    port = free_port()
    argv = [*GUNICORN, "-c", str(REPO / "gunicorn.conf.py"), "--chdir", str(HERE),
            "-b", f"127.0.0.1:{port}", *BARE_SETTINGS, app]  # fmt: skip
    env = {"BENCH_WWW": str(www), "BENCH_ORIGIN": f"http://127.0.0.1:{origin_port}"}
    return services.start(name, argv, port, cpus="0", env=env)


def describe(service: Service) -> str:
    settings = " ".join(f"{k}={v}" for k, v in service.env.items() if k.startswith("WSGI_"))
    code = f" [code {PROXY_CODE[service.name]}]" if service.name in PROXY_CODE else ""
    return f"  {service.name} (pid {service.proc.pid}){code}: {settings} {shlex.join(service.argv)}"


# ---- phases -------------------------------------------------------------------------------


def load_phase(
    args: argparse.Namespace, servers: dict[str, Service], bodies: dict[str, bytes], pin: bool
) -> list[dict[str, Any]]:
    """HITs against the bare app and pass-through against the passthru app, one loop."""
    proxy, bare, passthru = servers["proxy"], servers["bare"], servers["passthru"]
    sizes = [name for name, _ in SIZES if name in args.sizes.split(",")]
    pairs = [
        Pair("hit", f"HIT {name}", c, proxy, bare, f"/c/{name}.bin", expect=("hit", None))
        for c in args.conn_counts
        for name in sizes
    ]
    if "filewrap" in servers:  # how much of the 1 MiB ceiling sendfile itself leaves
        pairs += [
            Pair("sendfile", "HIT 1m", c, servers["filewrap"], bare, "/c/1m.bin")
            for c in args.conn_counts
        ]
    if not args.no_pass:
        pairs += [
            Pair("pass", "pass 1k", c, proxy, passthru, "/nostore/1k.bin", expect=("pass", None))
            for c in args.conn_counts
        ]
    if "baseline" in servers:  # the same rows, against another checkout of the proxy
        baseline = servers["baseline"]
        pairs += [
            Pair(
                "baseline",
                f"HIT {name}",
                c,
                proxy,
                baseline,
                f"/c/{name}.bin",
                expect=("hit", "hit"),
            )
            for c in args.conn_counts
            for name in sizes
        ]
        if not args.no_pass:
            pairs += [
                Pair(
                    "baseline",
                    "pass 1k",
                    c,
                    proxy,
                    baseline,
                    "/nostore/1k.bin",
                    expect=("pass", "pass"),
                )
                for c in args.conn_counts
            ]
    for pair in pairs:
        expected = bodies[pair.path]
        for side, expect in ((pair.a, pair.expect[0]), (pair.b, pair.expect[1])):
            x_cache = {"hit": "HIT", "pass": "MISS"}.get(expect or "")
            warm(side.port, pair.path, expected, x_cache=x_cache)
    print(
        f"\nload: wrk -t1 --latency, keep-alive, {args.rounds} rounds x {args.duration} s per "
        "server and row, the two servers alternating",
        flush=True,
    )
    run_pairs(pairs, args.rounds, args.duration, pin)
    return [pair.summary() for pair in pairs]


def size_phase(
    args: argparse.Namespace,
    services: Services,
    scratch: Path,
    origin_port: int,
    hot: dict[str, bytes],
    pin: bool,
) -> dict[str, Any]:
    """HIT throughput with ``--entries`` entries stored against ~100, 100 URLs rotating."""
    origin_url = f"http://127.0.0.1:{origin_port}"
    hot_paths = sorted(hot)
    fields = fill.origin_fields(origin_port, hot_paths[0])
    targets = [f"/c/fill-{i}" for i in range(args.entries)]
    big_cache = scratch / "cache-big"
    print(f"\ncache size: filling {big_cache} with {args.entries} entries ...", flush=True)
    fill_s = fill.fill(big_cache, origin_url, targets, fields, 1024)
    print(f"  filled in {fill_s:.1f} s ({args.entries / fill_s:.0f} entries/s)", flush=True)
    # Both proxies alike; room for the filled entries without eviction (4 KiB a file).
    max_size = f"{max(1 << 10, (args.entries * 4096 >> 20) * 2)}M"
    settings = {"WSGI_PROXY_MAX_SIZE": max_size}
    started = time.time()
    big = start_proxy(services, "proxy-big", origin_port, big_cache, args, settings)
    small = start_proxy(services, "proxy-small", origin_port, scratch / "cache-small", args,
                        settings)  # fmt: skip
    print(describe(big), describe(small), sep="\n")
    for target in (targets[0], targets[-1]):  # the proxy finds what fill() stored
        status, found, _ = get(big.port, target, headers=fill.FILL_HOST_FIELDS)
        if found.get("x-cache") != "HIT":
            raise SystemExit(f"{target}: {status}, X-Cache {found.get('x-cache')}, not a HIT: "
                             "the filled entries are not where the proxy looks")  # fmt: skip
    for service in (big, small):
        for path in hot:
            get(service.port, path)  # a MISS, stored
        for path, body in hot.items():
            warm(service.port, path, body, x_cache="HIT")
    script = rotation_script(scratch, hot_paths)
    for service in (big, small):  # every worker gets requests: its app starts
        run_wrk(service.port, "/", max(args.conn_counts), 2, pin, script)
    print("  waiting for the cache managers' first walks of their folders ...", flush=True)
    scan = fill.wait_for_scans(big_cache, started)
    fill.wait_for_scans(scratch / "cache-small", started)
    print(f"  last scan of the big cache: {scan.files} files in {scan.seconds} s", flush=True)
    pairs = [
        Pair("size", "HIT 1k x100 URLs", c, big, small, "/", script, expect=("hit", "hit"))
        for c in args.conn_counts
    ]
    print(f"  wrk rotating over {len(hot_paths)} URLs, HITs in both proxies", flush=True)
    run_pairs(pairs, args.rounds, args.duration, pin)
    walk = fill.last_walk(big_cache)
    rescanned = walk is not None and walk.finished_at > scan.finished_at
    if rescanned:
        print("  note: the big proxy's cache manager walked the folder again meanwhile")
    for service in (big, small):
        services.stop(service)
    return {
        "entries": args.entries,
        "hot_urls": len(hot_paths),
        "fill_s": round(fill_s, 2),
        "max_size": max_size,
        "scan_files": scan.files,
        "scan_s": scan.seconds,
        "rescanned_during_load": rescanned,
        "rows": [pair.summary() for pair in pairs],
    }


def stream_phase(
    args: argparse.Namespace, services: Services, scratch: Path, origin_port: int
) -> dict[str, Any]:
    """The 512 MiB body through a fresh proxy, MISS then HIT."""
    settings = {"WSGI_PROXY_MAX_SIZE": "2G"}
    proxy = start_proxy(services, "proxy-stream", origin_port, scratch / "cache-stream", args,
                        settings)  # fmt: skip
    print(f"\nstreaming {BIG_PATH} ({BIG_SIZE >> 20} MiB) through a fresh proxy, MISS then HIT")
    print(describe(proxy), flush=True)
    for _ in range(3):  # every worker builds its app before the measurement
        concurrent_gets(proxy.port, ["/c/1k.bin"] * 16)
    time.sleep(2)  # the evictors' first ticks
    results: dict[str, Any] = {}
    for label in ("miss", "hit"):
        res = streaming.fetch(proxy.port, BIG_PATH, proxy.proc.pid)
        results[label] = res
        print(
            f"  {label}: {res['status']} X-Cache {res['x_cache']}, {res['bytes']} bytes"
            f"{'' if res['whole'] else ' (NOT WHOLE)'}, first byte {res['first_byte_ms']} ms, "
            f"total {res['total_s']} s ({res['mib_per_s']} MiB/s), RSS {res['rss_before_mib']}"
            f" -> peak {res['rss_peak_mib']} MiB (+{res['rss_growth_mib']}), PSS "
            f"{res['pss_before_mib']} -> peak {res['pss_peak_mib']} MiB "
            f"(+{res['pss_growth_mib']})"
            + ("" if res["same_processes"] else "  (its processes changed meanwhile)"),
            flush=True,
        )
        time.sleep(1)
    services.stop(proxy)
    return results


def herd_phase(args: argparse.Namespace, proxy: Service, count_port: int) -> dict[str, Any]:
    h = herd(proxy.port, count_port, args.herd_n)
    d = distinct_misses(proxy.port, count_port, args.herd_n)
    print(
        f"\nherd: {args.herd_n} concurrent GETs of one cold URL, origin answers in "
        f"{SLOW_DELAY} s: origin requests {h['origin_requests']}, slowest "
        f"{h['slowest_s']} s, median {h['median_s']} s, statuses {h['statuses']}"
    )
    print(
        f"distinct misses: {args.herd_n} concurrent GETs of different slow URLs: "
        f"origin requests {d['origin_requests']}, slowest {d['slowest_s']} s, "
        f"median {d['median_s']} s, statuses {d['statuses']}",
        flush=True,
    )
    return {"herd": h, "distinct_misses": d}


# ---- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every wrk run (3)")
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run (5)")
    ap.add_argument("--conns", default="16,64", help="wrk connection counts (16,64)")
    ap.add_argument("--sizes", default="1k,64k,1m", help="HIT sizes to load (1k,64k,1m)")
    ap.add_argument("--entries", type=int, default=100_000, help="entries of the big cache")
    ap.add_argument("--herd-n", type=int, default=50, help="concurrent requests in the herd")
    ap.add_argument("--no-load", action="store_true", help="skip the HIT and pass wrk runs")
    ap.add_argument("--no-pass", action="store_true", help="skip the pass-through rows")
    ap.add_argument("--no-herd", action="store_true", help="skip the slow-origin checks")
    ap.add_argument("--no-size", action="store_true", help="skip the cache-size test")
    ap.add_argument("--no-stream", action="store_true", help="skip the 512 MiB body")
    ap.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    ap.add_argument("--python-origin", action="store_true", help="do not use nginx as origin")
    ap.add_argument(
        "--proxy-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for every proxy, e.g. WSGI_PROXY_THREADS=8 (repeatable)",
    )
    ap.add_argument(
        "--proxy-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an extra gunicorn argument for the proxy, e.g. --access-logfile=/dev/null",
    )
    ap.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="another checkout of the proxy (with its own .venv, or this Python's packages): "
        "started beside this one, every HIT and pass-through row runs against it too",
    )
    ap.add_argument("--json", type=Path, help="also write the results to this file")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (logs)")
    args = ap.parse_args(argv)
    if args.baseline is not None and not (args.baseline / "wsgi_proxy").is_dir():
        ap.error(f"--baseline {args.baseline}: no wsgi_proxy/ there")
    args.conn_counts = [int(c) for c in args.conns.split(",") if c]
    if args.entries < 1:
        ap.error("--entries must be at least 1")
    return args


def make_www(www: Path, *, big: bool) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The origin's files; (path -> body of the small ones, path -> body of the hot set)."""
    for sub in ("c", "nostore", "big"):
        (www / sub).mkdir(parents=True)
    bodies = {f"/c/{name}.bin": os.urandom(size) for name, size in SIZES}
    hot = {f"/c/hot-{i:03d}.bin": os.urandom(1024) for i in range(HOT_URLS)}
    bodies["/nostore/1k.bin"] = os.urandom(1024)
    for path, body in (*bodies.items(), *hot.items()):
        (www / path.lstrip("/")).write_bytes(body)
    if big:
        with (www / BIG_PATH.lstrip("/")).open("wb") as file:
            file.truncate(BIG_SIZE)  # sparse: zeros that cost no disk and no time
    return bodies, hot


def machine() -> dict[str, Any]:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, **code_state()}


def code_state(tree: Path = REPO) -> dict[str, Any]:
    """The proxy's code in the working tree ``tree``: the commit, the files with
    uncommitted changes, and ``version``, the commit plus a digest of those changes if any."""
    git = ["git", "-C", str(tree)]
    paths = ["--", "wsgi_proxy", "gunicorn.conf.py"]
    head = _output([*git, "rev-parse", "--short", "HEAD"]).strip()
    dirty = _output([*git, "status", "--porcelain", *paths])
    changed = sorted(line[3:] for line in dirty.splitlines() if line.strip())
    version = head
    if changed:
        diff = _output([*git, "diff", "HEAD", *paths]).encode()
        version += f"+{hashlib.sha256(diff).hexdigest()[:8]}"
    return {"commit": head, "uncommitted": changed, "version": version}


def _output(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None and not (args.no_load and args.no_size):
        raise SystemExit("wrk is not installed (Debian: apt-get install -y wrk)")
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, exit_on_signal)

    command = shlex.join(sys.orig_argv)
    about = machine()
    print(f"command: {command}  (in {Path.cwd()})")
    print(f"machine: {about['cpu_model']}, {about['cpus']} CPUs")
    print(f"code: commit {about['commit']}, uncommitted changes in: "
          f"{', '.join(about['uncommitted']) or 'none'}")  # fmt: skip
    scratch = Path(tempfile.mkdtemp(prefix="wsgi-proxy-bench-"))
    bodies, hot = make_www(scratch / "www", big=not args.no_stream)
    (scratch / "logs").mkdir()
    services = Services(scratch / "logs", pin)
    results: dict[str, Any] = {"command": command, "machine": {**about, "pinned": pin}}
    results["settings"] = {
        k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"
    }
    try:
        origin_port, count_port, origin_desc = start_origin(
            services, scratch, scratch / "www", python_only=args.python_origin
        )
        servers = {
            "proxy": start_proxy(services, "proxy", origin_port, scratch / "cache", args),
            "bare": start_bare(services, "bare", "bench_app:app", scratch / "www", origin_port),
            "passthru": start_bare(
                services, "passthru", "bench_app:passthru", scratch / "www", origin_port
            ),
        }
        if args.baseline is not None:
            cache = scratch / "baseline-cache"
            tree = args.baseline.resolve()
            servers["baseline"] = start_proxy(
                services, "baseline", origin_port, cache, args, tree=tree
            )
        if "1m" in args.sizes.split(",") and not args.no_load:
            servers["filewrap"] = start_bare(
                services, "filewrap", "bench_app:filewrap", scratch / "www", origin_port
            )
        print(f"origin: {origin_desc}")
        print("pinning: " + ("servers on CPU 0; wrk and origin on CPU 1" if pin else "none"))
        for service in services.started:
            print(describe(service))
        results["origin"] = origin_desc
        results["services"] = {s.name: s.argv for s in services.started}
        if cache_outcomes(servers["proxy"].port) is None:
            print("warning: the proxy's metrics are closed: cache outcomes are not checked")

        if not args.no_load:
            results["load"] = load_phase(args, servers, bodies, pin)
        if not args.no_herd:
            results.update(herd_phase(args, servers["proxy"], count_port))
        if not args.no_size:
            results["size"] = size_phase(args, services, scratch, origin_port, hot, pin)
        if not args.no_stream:
            results["stream"] = stream_phase(args, services, scratch, origin_port)
    finally:
        services.stop_all()
        if args.keep:
            print(f"scratch folder kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    results["proxy_code"] = dict(PROXY_CODE)
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def report(results: dict[str, Any]) -> None:
    """The detailed tables, then the summary with the targets."""
    load = results.get("load", [])
    if load or "size" in results:
        print("\nratios: medians of per-round ratios; CPU: the server's process tree per request")
    groups = (
        ("hit", "HIT: proxy against bench_app:app (gthread 2x4, the bytes from memory)"),
        ("sendfile", "sendfile in a bare app: bench_app:filewrap against bench_app:app"),
        ("pass", "pass-through (no-store): proxy against bench_app:passthru (pooled urllib3)"),
        ("baseline", "the proxy against --baseline (another checkout), the same rows"),
    )
    for group, title in groups:
        rows = [r for r in load if r["group"] == group]
        if rows:
            print_group(title, rows)
    if "size" in results:
        size = results["size"]
        title = (
            f"cache size: {size['hot_urls']} URLs, HITs in both, proxy with {size['entries']} "
            f"more entries (filled in {size['fill_s']} s) against one with none"
        )
        print_group(title, size["rows"])
    results["summary"] = summary_rows(results, Targets())
    print_summary(results)


if __name__ == "__main__":
    sys.exit(main())
