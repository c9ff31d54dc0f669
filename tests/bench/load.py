"""wrk runs, two servers side by side: each ``Pair`` row runs the same wrk load against
server ``a`` and reference ``b`` in every round, the order alternating between rounds and
rows; its ratios are medians of the per-round ratios a/b."""

from __future__ import annotations

import re
import statistics
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.client import outcome_delta, settled_outcomes
from bench.procs import Service, settle_cpu, tree_cpu_seconds

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


@dataclass
class WrkResult:
    rps: float
    p99_ms: float | None
    requests: int
    errors: int  # non-2xx/3xx answers and socket errors, as wrk counts them
    cpu_ms: float | None = None  # the server's CPU time (all its processes) per request
    outcomes: dict[str, int] = field(default_factory=dict)  # the proxy's count, by outcome


@dataclass
class Pair:
    """One row: the same load on ``a`` and on ``b``. ``path`` is the URL's path, or the
    URL wrk is given when ``script`` (a wrk Lua script choosing the paths) is set.
    ``expect`` names the cache outcome each proxy must report for every request (None for
    a server that is not the proxy)."""

    group: str
    test: str
    conns: int
    a: Service
    b: Service
    path: str
    script: Path | None = None
    expect: tuple[str | None, str | None] = (None, None)
    a_runs: list[WrkResult] = field(default_factory=list)
    b_runs: list[WrkResult] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        runs = list(zip(self.a_runs, self.b_runs, strict=True))
        ratios = [a.rps / b.rps for a, b in runs if b.rps]
        return {
            "group": self.group,
            "test": self.test,
            "conns": self.conns,
            "a": self.a.name,
            "b": self.b.name,
            "a_rps": _median([r.rps for r in self.a_runs]),
            "b_rps": _median([r.rps for r in self.b_runs]),
            "ratio": _median(ratios),
            "ratio_min": min(ratios, default=None),
            "ratio_max": max(ratios, default=None),
            "ratios": [round(r, 4) for r in ratios],
            "a_p99_ms": _median([r.p99_ms for r in self.a_runs]),
            "b_p99_ms": _median([r.p99_ms for r in self.b_runs]),
            "p99_ratio": _median([a.p99_ms / b.p99_ms for a, b in runs if a.p99_ms and b.p99_ms]),
            "a_cpu_ms": _median([r.cpu_ms for r in self.a_runs]),
            "b_cpu_ms": _median([r.cpu_ms for r in self.b_runs]),
            "cpu_ratio": _median([a.cpu_ms / b.cpu_ms for a, b in runs if a.cpu_ms and b.cpu_ms]),
            "errors": sum(r.errors for r in (*self.a_runs, *self.b_runs)),
            "unexpected": self.unexpected(),
        }

    def unexpected(self) -> dict[str, int]:
        """Cache outcomes other than the expected one, summed over the runs (e.g. a miss
        in a HIT row); empty when all were as expected or nothing was checked."""
        seen: dict[str, int] = {}
        for runs, expect in ((self.a_runs, self.expect[0]), (self.b_runs, self.expect[1])):
            if expect is None:
                continue
            for run in runs:
                for outcome, count in run.outcomes.items():
                    if outcome != expect:
                        seen[outcome] = seen.get(outcome, 0) + count
        return seen


def _median(values: list[float] | list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def run_pairs(pairs: list[Pair], rounds: int, duration: int, pin: bool) -> None:
    """Every row in every round, ``a`` and ``b`` back to back, alternating who goes first."""
    for rnd in range(rounds):
        for i, pair in enumerate(pairs):
            sides = [(pair.a, pair.a_runs, pair.expect[0]), (pair.b, pair.b_runs, pair.expect[1])]
            if (rnd + i) % 2:
                sides.reverse()
            for service, runs, expect in sides:
                res = measured_wrk(service, pair, duration, pin, checked=expect is not None)
                runs.append(res)
                odd = {k: v for k, v in res.outcomes.items() if k != expect} if expect else {}
                print(
                    f"  [round {rnd}] {pair.test:>10} c{pair.conns:<3} {service.name:<12} "
                    f"{res.rps:9.0f} req/s  p99 {fmt(res.p99_ms, 1):>7} ms  "
                    f"CPU {fmt(res.cpu_ms, 3)} ms/req"
                    + (f"  wrk errors {res.errors}" if res.errors else "")
                    + (f"  NOT {expect}: {odd}" if odd else ""),
                    flush=True,
                )


def measured_wrk(
    service: Service, pair: Pair, duration: int, pin: bool, *, checked: bool
) -> WrkResult:
    """``run_wrk``, plus the server's process-tree CPU time per request and, for a proxy,
    its requests by cache outcome during the run (read from its metrics, outside the
    timed window, once they have settled)."""
    outcomes_before = settled_outcomes(service.port) if checked else None
    before = tree_cpu_seconds(service.proc.pid)
    res = run_wrk(service.port, pair.path, pair.conns, duration, pin, pair.script)
    after = tree_cpu_seconds(service.proc.pid)
    if before is not None and after is not None and res.requests:
        res.cpu_ms = (after - before) * 1000 / res.requests
    settle_cpu(service.proc.pid)  # the next run starts on an idle CPU
    if checked:
        res.outcomes = outcome_delta(outcomes_before, settled_outcomes(service.port))
    return res


def run_wrk(
    port: int, path: str, conns: int, duration: int, pin: bool, script: Path | None = None
) -> WrkResult:
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", "--timeout", "10s"]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(f"http://127.0.0.1:{port}{path}")
    if pin:
        argv = ["taskset", "-c", "1", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    out = done.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
    count = re.search(r"(\d+) requests in", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if rps is None:
        raise SystemExit(f"wrk gave no result:\n{out}\n{done.stderr}")
    errors = int(non2xx.group(1)) if non2xx else 0
    errors += sum(map(int, sock.groups())) if sock else 0
    return WrkResult(
        rps=float(rps.group(1)),
        p99_ms=float(p99.group(1)) * _UNITS[p99.group(2)] if p99 else None,
        requests=int(count.group(1)) if count else 0,
        errors=errors,
    )


def wrk_headers(headers: Mapping[str, str]) -> str:
    """Lua lines adding ``headers`` to every request of a wrk script."""
    return "".join(f'wrk.headers["{name}"] = "{value}"\n' for name, value in headers.items())


def rotation_script(
    folder: Path,
    paths: list[str],
    headers: Mapping[str, str] | None = None,
    extra: str = "",
    name: str = "rotate.lua",
) -> Path:
    """A wrk Lua script (``folder``/``name``) sending GETs to ``paths`` in turn (one wrk
    thread: one cycle), each with ``headers`` added, and ``extra`` Lua after."""
    listed = ",\n".join(f'  "{p}"' for p in paths)
    script = folder / name
    script.write_text(
        wrk_headers(headers or {}) + f"local paths = {{\n{listed}\n}}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i % #paths + 1\n"
        '  return wrk.format("GET", paths[i])\n'
        "end\n" + extra
    )
    return script


def print_group(title: str, rows: list[dict[str, Any]]) -> None:
    """A markdown table of one group's rows (all with the same ``a`` and ``b`` roles)."""
    a, b = rows[0]["a"], rows[0]["b"]
    print(f"\n{title}\n")
    print(
        f"| test | conns | {a} req/s | {b} req/s | {a}/{b} (min-max) | {a} p99 ms "
        f"| {b} p99 ms | p99 {a}/{b} | {a} CPU ms/req | {b} CPU ms/req | CPU {a}/{b} "
        "| wrk errors | unexpected outcomes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        spread = f"{fmt(r['ratio'])} ({fmt(r['ratio_min'])}-{fmt(r['ratio_max'])})"
        print(
            f"| {r['test']} | {r['conns']} | {fmt(r['a_rps'], 0)} | {fmt(r['b_rps'], 0)}"
            f" | {spread} | {fmt(r['a_p99_ms'], 1)} | {fmt(r['b_p99_ms'], 1)}"
            f" | {fmt(r['p99_ratio'])} | {fmt(r['a_cpu_ms'], 3)} | {fmt(r['b_cpu_ms'], 3)}"
            f" | {fmt(r['cpu_ratio'])} | {r['errors']} | {r['unexpected'] or 'none'} |"
        )


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
