"""Instructions per request, counted: one worker of each tree under valgrind's callgrind,
for a 1 KiB HIT and a 1 KiB pass-through from nginx. The count is the worker's total
after ``--warm`` + ``--requests`` requests less its total after ``--warm`` alone (two
runs), divided by ``--requests``: start-up and warm-up cancel out. A shared machine's
other jobs do not move it, so differences of a few percent, which req/s ratios cannot
tell from noise (performance.md), show.

    .venv/bin/python tests/bench/instructions.py --b ../baseline-checkout

Needs valgrind and nginx. Each tree runs under its own ``.venv`` if it has one. About
five minutes. Not a test: pytest collects nothing from here.
"""

from __future__ import annotations

import argparse
import http.client
import re
import shutil
import sys
import tempfile
import threading
from pathlib import Path

if __package__ in (None, ""):  # run as a script: ``bench`` is imported as the tests do
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import run
from bench.client import warm
from bench.pair import PATHS
from bench.procs import Services, free_port

CLIENTS = 4  # keep-alive connections, each sending its share of the requests in turn
KINDS = "pass,hit"  # of pair.py's PATHS: a 1 KiB pass-through and HIT


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, default=run.REPO, help="a tree (this one)")
    parser.add_argument("--b", type=Path, required=True, help="the tree to compare with")
    parser.add_argument("--requests", type=int, default=2000, help="requests counted (2000)")
    parser.add_argument("--warm", type=int, default=400, help="requests before (400)")
    parser.add_argument("--kinds", default=KINDS, help=f"of pair.py's PATHS ({KINDS})")
    return parser.parse_args(argv)


def send(port: int, path: str, count: int) -> None:
    """``count`` GETs of ``path``, over ``CLIENTS`` keep-alive connections at once."""

    def client(share: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for _ in range(share):
            conn.request("GET", path)
            conn.getresponse().read()
        conn.close()

    threads = [threading.Thread(target=client, args=(count // CLIENTS,)) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def worker_instructions(
    services: Services, tree: Path, origin: int, scratch: Path, kind: str, count: int
) -> int:
    """The instructions the one worker of ``tree``'s proxy ran, over its whole life, when
    sent ``count`` requests of ``kind`` (after the one that fills the cache)."""
    name = f"{tree.name}-{kind}-{count}"
    out = scratch / name
    out.mkdir()
    python = tree / ".venv" / "bin" / "python"
    port = free_port()
    argv = ["valgrind", "--tool=callgrind", "--trace-children=yes",
            f"--callgrind-out-file={out}/cg.%p",
            str(python if python.exists() else sys.executable), "-m", "gunicorn",
            "-c", "gunicorn.conf.py", "wsgi_proxy:app", "-b", f"127.0.0.1:{port}"]  # fmt: skip
    env = {
        "WSGI_PROXY_ORIGIN": f"http://127.0.0.1:{origin}",
        "WSGI_PROXY_CACHE_DIR": str(scratch / f"cache-{name}"),
        "WSGI_PROXY_METRICS_DIR": str(scratch / f"metrics-{name}"),
        "WSGI_PROXY_WORKERS": "1",
        "WSGI_PROXY_WORKER_TIMEOUT": "600",  # a worker under valgrind is slow to start
        "WSGI_PROXY_LOG_FORMAT": "off",
    }
    service = services.start(name, argv, port, cpus="0", env=env, cwd=tree)
    path, x_cache = PATHS[kind]
    warm(port, path, (scratch / "www" / path.lstrip("/")).read_bytes(), x_cache=x_cache)
    send(port, path, count)
    services.stop(service)
    counts = [_gunicorn_count(f.read_text(errors="replace")) for f in out.glob("cg.*")]
    found = [count for count in counts if count is not None]
    if not found:
        raise SystemExit(f"{name}: no gunicorn process's count in {out}")
    return max(found)  # the worker ran the requests: the master's count is far lower


def _gunicorn_count(callgrind_out: str) -> int | None:
    """The instructions counted in one process's callgrind file, if that process was
    gunicorn (not the cache manager the master starts)."""
    if not re.search(r"^cmd:.* -m gunicorn ", callgrind_out, re.M):
        return None
    total = re.search(r"^(?:summary|totals): (\d+)", callgrind_out, re.M)
    return int(total.group(1)) if total else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kinds = args.kinds.split(",")
    if unknown := set(kinds) - set(PATHS):
        raise SystemExit(f"--kinds: not in pair.py's PATHS: {', '.join(sorted(unknown))}")
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is needed (Debian: apt-get install valgrind)")
    scratch = Path(tempfile.mkdtemp(prefix="wsgi-proxy-instructions-"))
    run.make_www(scratch / "www", big=False)
    (scratch / "logs").mkdir()
    services = Services(scratch / "logs", pin=True)
    per_request: dict[tuple[str, str], float] = {}
    try:
        origin, _, _ = run.start_origin(services, scratch, scratch / "www", python_only=False)
        for kind in kinds:
            for label, tree in (("a", args.a.resolve()), ("b", args.b.resolve())):
                short = worker_instructions(services, tree, origin, scratch, kind, args.warm)
                long = worker_instructions(
                    services, tree, origin, scratch, kind, args.warm + args.requests
                )
                per_request[kind, label] = (long - short) / args.requests
    finally:
        services.stop_all()
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"a = {args.a}, b = {args.b}: instructions per request, one worker")
    print("| request | a | b | a / b |\n|---|---:|---:|---:|")
    for kind in kinds:
        a, b = per_request[kind, "a"], per_request[kind, "b"]
        print(f"| {kind} | {a:,.0f} | {b:,.0f} | {a / b:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
