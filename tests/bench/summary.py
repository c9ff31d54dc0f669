"""The benchmark's closing summary: each measure beside its target, and whether it is met."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.load import fmt


@dataclass(frozen=True)
class Targets:
    hit_ratio: float = 0.8  # proxy / bare app, HITs of 1 KiB and 64 KiB
    hit_ratio_large: float = 0.9  # the same, 1 MiB (sendfile)
    p99_ratio: float = 1.5  # proxy p99 / bare app p99, HITs at 64 connections
    herd_slowest_s: float = 0.6  # 50 concurrent GETs of one cold URL, origin 0.5 s
    distinct_slowest_s: float = 1.5  # 50 concurrent GETs of different slow URLs
    pass_ratio: float = 0.9  # proxy / passthru, an uncacheable 1 KiB
    baseline_ratio: float = 0.95  # against --baseline: no regression beyond the noise
    size_ratio: float = 0.9  # HIT req/s with many entries stored / with ~100
    first_byte_ms: float = 20.0  # 512 MiB body, MISS and HIT
    growth_mib: float = 32.0  # the proxy's process tree while streaming it (RSS and PSS)


def summary_rows(results: dict[str, Any], targets: Targets) -> list[dict[str, Any]]:
    """One dict per measure: what, measured (text), target (text), met (True/False/None
    when there is no target)."""
    rows: list[dict[str, Any]] = []

    def add(what: str, measured: str, target: str = "", met: bool | None = None) -> None:
        rows.append({"measure": what, "measured": measured, "target": target, "met": met})

    load_rows = [*results.get("load", []), *results.get("size", {}).get("rows", [])]
    for r in load_rows:
        what = f"{r['test']}, c{r['conns']}: {r['a']} / {r['b']} req/s"
        detail = f"{fmt(r['ratio'])} (p99 x{fmt(r['p99_ratio'])}, CPU/req x{fmt(r['cpu_ratio'])})"
        limit = _ratio_target(r, targets)
        if limit is None:
            add(what, detail)
        else:
            add(what, detail, f">= {limit}", r["ratio"] is not None and r["ratio"] >= limit)
        if r["group"] == "hit" and r["conns"] >= 64:
            p99, most = r["p99_ratio"], targets.p99_ratio
            add(f"{r['test']}, c{r['conns']}: p99 proxy / bare", f"x{fmt(p99)}",
                f"<= x{most}", p99 is not None and p99 <= most)  # fmt: skip
    if load_rows:
        errors = sum(r["errors"] for r in load_rows)
        add("wrk errors (non-2xx, socket), all load rows", str(errors), "0", errors == 0)
        unexpected: dict[str, int] = {}
        for r in load_rows:
            for outcome, count in r["unexpected"].items():
                unexpected[outcome] = unexpected.get(outcome, 0) + count
        add(
            "proxy outcomes other than hit (pass for pass 1k), from its metrics",
            str(unexpected or "none"),
            "none",
            not unexpected,
        )
    if "size" in results:
        size = results["size"]
        add(f"fill {size['entries']} entries (Store API)", f"{size['fill_s']} s")
        add(
            "big proxy's first eviction scan (off the measurement)",
            f"{size['scan_files']} files in {size['scan_s']} s",
        )
    for label, res in results.get("stream", {}).items():
        name = f"512 MiB {label.upper()}"
        expected = label.upper()
        whole = res["whole"] and res["x_cache"] == expected
        add(f"{name}: X-Cache, body whole", f"{res['x_cache']}, {res['bytes']} bytes",
            f"{expected}, {512 << 20}", whole)  # fmt: skip
        ttfb = res["first_byte_ms"]
        add(f"{name}: first byte", f"{ttfb} ms", f"<= {targets.first_byte_ms:g} ms",
            ttfb is not None and ttfb <= targets.first_byte_ms)  # fmt: skip
        add(f"{name}: total", f"{res['total_s']} s ({res['mib_per_s']} MiB/s)")
        for kind in ("rss", "pss"):
            growth = res[f"{kind}_growth_mib"]
            add(f"{name}: {kind.upper()} growth, proxy tree", f"{growth} MiB",
                f"< {targets.growth_mib:g} MiB", growth < targets.growth_mib)  # fmt: skip
    if "herd" in results:
        h, d = results["herd"], results["distinct_misses"]
        add("herd: origin requests for 50 concurrent cold GETs", str(h["origin_requests"]),
            "1", h["origin_requests"] == 1)  # fmt: skip
        add("herd: slowest answer (origin takes 0.5 s)", f"{h['slowest_s']} s",
            f"<= {targets.herd_slowest_s} s", h["slowest_s"] <= targets.herd_slowest_s)  # fmt: skip
        add("distinct slow misses: origin requests", str(d["origin_requests"]))
        add("distinct slow misses: slowest answer", f"{d['slowest_s']} s",
            f"<= {targets.distinct_slowest_s} s",
            d["slowest_s"] <= targets.distinct_slowest_s)  # fmt: skip
    return rows


def _ratio_target(row: dict[str, Any], targets: Targets) -> float | None:
    """The least acceptable ratio for a load row, None where the issue sets none."""
    if row["group"] == "hit":
        return targets.hit_ratio_large if row["test"].endswith("1m") else targets.hit_ratio
    limits = {"pass": targets.pass_ratio, "size": targets.size_ratio}
    return limits.get(row["group"], targets.baseline_ratio if row["group"] == "baseline" else None)


def print_summary(results: dict[str, Any]) -> None:
    about = results["machine"]
    print("\n## Summary\n")
    print(f"`{results['command']}`  ")
    uncommitted = ", ".join(about["uncommitted"]) or "none"
    print(f"{about['cpu_model']}, {about['cpus']} CPUs, pinned: {about['pinned']}; commit "
          f"{about['commit']} at the start, uncommitted changes: {uncommitted}\n")  # fmt: skip
    codes = results.get("proxy_code", {})
    versions = sorted({code for name, code in codes.items() if name != "baseline"})
    if "baseline" in codes:
        print(f"baseline (--baseline): code {codes['baseline']}\n")
    if len(versions) > 1:
        print("**The proxy's code changed during the run** (the working tree is shared); "
              f"code per proxy: {results['proxy_code']}\n")  # fmt: skip
    print("| measure | measured | target | met |")
    print("|---|---|---|---|")
    for row in results["summary"]:
        met = {True: "yes", False: "**NO**", None: ""}[row["met"]]
        print(f"| {row['measure']} | {row['measured']} | {row['target']} | {met} |")
