"""Two checkouts of the proxy alone side by side: the same wrk runs against each, the order
alternating between rounds, nothing else on the servers' CPU (run.py's ``--baseline``
runs beside the three ceiling apps and the proxy's other rows).

    .venv/bin/python tests/bench/pair.py --b ../base --rounds 10
    .venv/bin/python tests/bench/pair.py --b ../base --scrape    # outcomes checked, as run.py

Each checkout runs under its own ``.venv`` if it has one (as ``run.py --baseline``), in
front of one nginx origin. Rows: ``pass`` (a no-store 1 KiB), ``hit``, ``hit64k`` or
``hit1m`` (a stored 1 KiB, 64 KiB, 1 MiB), with a connection count; each row run as
run.py runs its rows (load.py's ``run_pairs``): the figure is the median of the rounds'
req/s ratios a/b, with CPU per request.
Not a test: pytest collects nothing from here.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: ``bench`` is imported as the tests do
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import run
from bench.client import warm
from bench.load import Pair, print_group, run_pairs
from bench.procs import Services

PATHS = {
    "pass": ("/nostore/1k.bin", "MISS"),
    "hit": ("/c/1k.bin", "HIT"),
    "hit64k": ("/c/64k.bin", "HIT"),
    "hit1m": ("/c/1m.bin", "HIT"),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, default=run.REPO, help="checkout a (this one)")
    parser.add_argument("--b", type=Path, required=True, help="checkout b, the reference")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rows", default="pass:64,hit:64,pass:16", help="kind:connections,...")
    parser.add_argument(
        "--scrape",
        action="store_true",
        help="read the metrics before and after each run, checking every request's outcome, "
        "as run.py does",
    )
    parser.add_argument("--proxy-env", action="append", default=[], metavar="NAME=VALUE")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = argparse.Namespace(proxy_env=args.proxy_env, proxy_arg=[])
    scratch = Path(tempfile.mkdtemp(prefix="wsgi-proxy-pair-"))
    bodies, _ = run.make_www(scratch / "www", big=False)
    (scratch / "logs").mkdir()
    services = Services(scratch / "logs", True)
    rows = [(kind, int(conns)) for kind, conns in (r.split(":") for r in args.rows.split(","))]
    try:
        origin, _, _ = run.start_origin(services, scratch, scratch / "www", python_only=False)
        a, b = (
            run.start_proxy(services, name, origin, scratch / f"cache-{name}", settings, tree=tree)
            for name, tree in (("a", args.a.resolve()), ("b", args.b.resolve()))
        )
        for side in (a, b):
            for path, x_cache in PATHS.values():
                warm(side.port, path, bodies[path], x_cache=x_cache)
        outcome = {kind: "pass" if kind == "pass" else "hit" for kind in PATHS}
        pairs = [
            Pair("pair", kind, conns, a, b, PATHS[kind][0],
                 expect=(outcome[kind], outcome[kind]) if args.scrape else (None, None))
            for kind, conns in rows
        ]  # fmt: skip
        run_pairs(pairs, args.rounds, args.duration, pin=True)
    finally:
        services.stop_all()
        shutil.rmtree(scratch, ignore_errors=True)
    title = f"a = {args.a}, b = {args.b}: {args.rounds} rounds x {args.duration} s"
    print_group(title, [pair.summary() for pair in pairs])
    return 0


if __name__ == "__main__":
    sys.exit(main())
