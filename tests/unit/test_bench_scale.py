"""The scale benchmark's pure parts (tests/bench/scale.py): reading wrk's and the CLI's
output, the sizes asked for, the hot set's URLs. No server, no wrk."""

from __future__ import annotations

import pytest
from bench.scale import (
    BUCKETS,
    HOT_URLS,
    PREFIX_BUCKETS,
    TAG_BUCKETS,
    _purged,
    hot_paths,
    parse_sizes,
    parse_wrk,
    stats_fields,
)

WRK_OUT = """\
Running 5s test @ http://127.0.0.1:40000/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    30.12ms   20.01ms   1.20s    90.00%
  Latency Distribution
     50%  {p50}
     75%   40.00ms
     90%   60.00ms
     99%  {p99}
  10123 requests in 5.00s, 11.50MB read
{extra}Requests/sec:   2024.60
Transfer/sec:      2.30MB
"""


@pytest.mark.parametrize(
    ("p50", "p99", "extra", "want"),
    [
        ("22.71ms", "85.88ms", "", (22.71, 85.88, 0)),
        ("950.00us", "1.02s ", "", (0.95, 1020.0, 0)),  # wrk pads seconds with a space
        ("1.50s ", "1.00m ", "", (1500.0, 60000.0, 0)),
        (
            "22.71ms",
            "85.88ms",
            "  Socket errors: connect 0, read 2, write 0, timeout 3\n"
            "  Non-2xx or 3xx responses: 4\n",
            (22.71, 85.88, 9),
        ),
    ],
)
def test_parse_wrk(p50: str, p99: str, extra: str, want: tuple[float, float, int]) -> None:
    res = parse_wrk(WRK_OUT.format(p50=p50, p99=p99, extra=extra))
    assert (res.p50_ms, res.p99_ms, res.errors) == want
    assert (res.rps, res.requests) == (2024.6, 10123)


def test_parse_wrk_without_figures_stops_the_run() -> None:
    with pytest.raises(SystemExit, match="wrk gave no result"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("1k,100k,1m", [1000, 100_000, 1_000_000]),
        ("1K, 10k,", [1000, 10_000]),
        ("2500,0.5m", [2500, 500_000]),
    ],
)
def test_parse_sizes(raw: str, want: list[int]) -> None:
    assert parse_sizes(raw) == want


@pytest.mark.parametrize("n", [200, 1000, 10_000, 100_000, 1_000_000])
def test_hot_paths_are_stored_and_never_purged(n: int) -> None:
    paths = hot_paths(n)
    ids = [int(p.rsplit("/", 1)[1]) for p in paths]
    purged = {*PREFIX_BUCKETS.values(), *TAG_BUCKETS.values()}
    assert len(set(paths)) == len(paths) == HOT_URLS
    assert all(0 <= i < n and i % BUCKETS not in purged for i in ids)
    assert all(p == f"/s/{i % BUCKETS:02d}/{i}" for p, i in zip(paths, ids, strict=True))


def test_stats_fields_drop_the_comments() -> None:
    out = (
        "cache_dir=/tmp/c  # the cache folder read\n"
        "files=1834  # responses stored (each Vary variant counts), counted now\n"
        "bytes=73400320  # their size on disk, headers included (70.0 MiB), counted now\n"
    )
    assert stats_fields(out) == {"cache_dir": "/tmp/c", "files": "1834", "bytes": "73400320"}


@pytest.mark.parametrize(
    ("answer", "want"),
    [
        ("purged 10", "10 purged"),
        ("purged 0\ncaching-proxy: nothing stored matched", "0 purged"),
        ("banned: entries stop being served now; reclaimed later", "banned"),
        ("", "no answer"),
    ],
)
def test_purge_answer_in_the_table(answer: str, want: str) -> None:
    assert _purged({"answer": answer}) == want
