"""Two checkouts of the proxy alone side by side: the same wrk runs against each, the order
alternating between rounds, nothing else on the servers' CPU (run.py's ``--baseline``
runs beside the three ceiling apps and the proxy's other rows).

    .venv/bin/python tests/bench/pair.py --b ../base --rounds 10
    .venv/bin/python tests/bench/pair.py --b ../base --scrape    # a metrics scrape first

Each checkout runs under its own ``.venv`` if it has one (as ``run.py --baseline``), in
front of one nginx origin. Rows: ``pass`` (a no-store 1 KiB) or ``hit`` (a stored 1 KiB),
with a connection count. The figure is the median of the rounds' req/s ratios a/b.
Not a test: pytest collects nothing from here.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: ``bench`` is imported as the tests do
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import run
from bench.client import cache_outcomes, warm
from bench.load import run_wrk
from bench.procs import Services, settle_cpu

PATHS = {"pass": ("/nostore/1k.bin", "MISS"), "hit": ("/c/1k.bin", "HIT")}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, default=run.REPO, help="checkout a (this one)")
    parser.add_argument("--b", type=Path, required=True, help="checkout b, the reference")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rows", default="pass:64,hit:64,pass:16", help="kind:connections,...")
    parser.add_argument("--scrape", action="store_true", help="read /metrics before each run")
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
    rps: dict[tuple[str, int], tuple[list[float], list[float]]] = {row: ([], []) for row in rows}
    try:
        origin, _, _ = run.start_origin(services, scratch, scratch / "www", python_only=False)
        sides = [
            run.start_proxy(services, name, origin, scratch / f"cache-{name}", settings, tree=tree)
            for name, tree in (("a", args.a.resolve()), ("b", args.b.resolve()))
        ]
        for side in sides:
            for path, x_cache in PATHS.values():
                warm(side.port, path, bodies[path], x_cache=x_cache)
        for rnd in range(args.rounds):
            for i, (kind, conns) in enumerate(rows):
                order = [0, 1] if (rnd + i) % 2 == 0 else [1, 0]
                for index in order:
                    side = sides[index]
                    if args.scrape:
                        cache_outcomes(side.port)
                    settle_cpu(side.proc.pid)
                    res = run_wrk(side.port, PATHS[kind][0], conns, args.duration, True)
                    rps[(kind, conns)][index].append(res.rps)
                    print(f"  [round {rnd}] {kind} c{conns} {side.name} {res.rps:.0f} req/s "
                          f"p99 {res.p99_ms} ms", flush=True)  # fmt: skip
    finally:
        services.stop_all()
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"\na = {args.a}, b = {args.b}, {args.rounds} rounds x {args.duration} s")
    for (kind, conns), (a, b) in rps.items():
        ratios = sorted(x / y for x, y in zip(a, b, strict=True) if y)
        print(f"{kind} c{conns}: a/b {statistics.median(ratios):.3f} "
              f"(rounds {', '.join(f'{r:.2f}' for r in ratios)})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
