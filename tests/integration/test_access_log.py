"""The access log against what the client got: every line's byte count is the body bytes
sent, on every answer path (miss, hits from memory, from a file, from a held file, ready
answers, range, HEAD, 304, pass-through, the proxy's own errors), in both formats, with the
seam on and off; JSON lines carry typed fields. Real gunicorn with two workers."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.client import stream
from support.origin import Origin
from support.proxy import ProxyFactory, ProxyProcess

CACHED = [("Cache-Control", "max-age=600"), ("ETag", '"v1"')]
TOKEN = "log-token"
# Bodies kept in memory, sent from a file, held open by the worker, opened per answer
# (store/open_files.py, flow/ready_answers.py).
SIZES = [1000, 200_000, 1024 * 1024, 9_000_000]
GETS = 6  # enough for the hot set and the ready answers to take over (from the 2nd to 4th)
TEXT_LINE = re.compile(r'" (?P<status>\d+) (?P<bytes>\S+) "[^"]*" "(?P<agent>[^"]*)" cache=')


@dataclass(frozen=True)
class Sent:
    """One request of the table: the user agent that marks its log line, and the body
    bytes the client received."""

    agent: str
    status: int
    body_bytes: int


def body_of(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + b"x" * (size % 256)


def run_table(proxy: ProxyProcess, origin: Origin, tag: str) -> list[Sent]:
    """The requests of every path and size; each with its own User-Agent."""
    sent: list[Sent] = []

    def send(method: str, target: str, headers: list[tuple[str, str]] | None = None) -> None:
        agent = f"{tag}-{len(sent)}"
        reply = proxy.request(method, target, [("User-Agent", agent), *(headers or [])])
        assert reply.status < 500 or target.startswith("/_"), reply.describe()
        sent.append(Sent(agent, reply.status, len(reply.body)))

    for size in SIZES:
        path = origin.route(f"/{tag}/{size}", headers=CACHED, body=body_of(size))
        for _ in range(GETS):
            send("GET", path)
        send("HEAD", path)
        send("GET", path, [("Range", "bytes=10-99")])
        send("GET", path, [("Range", f"bytes=-{size // 3}")])
        send("GET", path, [("If-None-Match", '"v1"')])
        passed = origin.route(f"/{tag}/pass/{size}", headers=[("Cache-Control", "no-store")],
                              body=body_of(size))  # fmt: skip
        send("GET", passed)
        send("GET", passed)
    send("GET", "/_wsgi_proxy/metrics")  # the proxy's own 403, short text
    send("GET", "/%00bad")  # refused by the proxy: 400
    return sent


def log_lines(
    proxy: ProxyProcess, count: int, parse: Callable[[str], dict[str, Any] | None]
) -> dict[str, dict[str, Any]]:
    """The parsed access-log lines by user agent, once ``count`` of them are written (each
    worker writes its line once its answer is sent)."""
    deadline = time.monotonic() + 20
    found: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        found = {}
        for line in proxy.stdout_path.read_text().splitlines():
            parsed = parse(line)
            if parsed is not None:
                found[parsed["agent"]] = parsed
        if len(found) >= count:
            break
        time.sleep(0.1)
    return found


def parse_text(line: str) -> dict[str, Any] | None:
    match = TEXT_LINE.search(line)
    return None if match is None else match.groupdict()


def parse_json(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    record = json.loads(line)
    return {**record, "agent": record["user_agent"]}


@pytest.mark.parametrize("tuning", ["on", "off"])
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_logged_bytes_are_the_body_bytes_sent(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path, tuning: str, log_format: str
) -> None:
    proxy = proxy_factory(
        {"WSGI_PROXY_TUNING": tuning, "WSGI_PROXY_LOG_FORMAT": log_format},
        cache_dir=tmp_path / "cache",
    )
    sent = run_table(proxy, origin, f"{log_format}-{tuning}")
    parse = parse_json if log_format == "json" else parse_text
    lines = log_lines(proxy, len(sent), parse)
    wrong = [
        (s.agent, s.status, s.body_bytes, lines.get(s.agent, {}).get("bytes"))
        for s in sent
        if s.agent not in lines or str(lines[s.agent]["bytes"]) != str(s.body_bytes)
        or str(lines[s.agent]["status"]) != str(s.status)
    ]  # fmt: skip
    assert not wrong, f"(agent, status, body bytes received, bytes logged): {wrong}"


# (X-Forwarded-For as it arrives, the client's address the log names) with one trusted
# proxy in front: what that proxy appended, the test's own address when nothing arrived.
FORWARDED = [
    (None, "127.0.0.1"),
    ("203.0.113.9", "203.0.113.9"),
    ("198.51.100.1, 203.0.113.9", "203.0.113.9"),  # the first entry was the client's own
]


def test_json_lines_have_typed_fields_and_the_forwarded_client(
    proxy_factory: ProxyFactory, origin: Origin
) -> None:
    proxy = proxy_factory({"WSGI_PROXY_LOG_FORMAT": "json", "WSGI_PROXY_TRUSTED_PROXIES": "1"})
    for number, (forwarded, client) in enumerate(FORWARDED):
        path = origin.route(f"/json/{number}", headers=CACHED, body=b"j" * 10)
        fields = [("User-Agent", f"json-{number}")]
        if forwarded is not None:
            fields.append(("X-Forwarded-For", forwarded))
        assert proxy.get(path, fields).x_cache == "MISS"
        assert proxy.get(path, [(n, v.replace("json", "hit")) for n, v in fields]).status == 200
        sent_on = origin.last(path).header("X-Forwarded-For") or ""
        assert sent_on.split(", ")[0] == client  # the address the origin was told
    lines = log_lines(proxy, 2 * len(FORWARDED), parse_json)
    for number, (_forwarded, client) in enumerate(FORWARDED):
        miss, hit = lines[f"json-{number}"], lines[f"hit-{number}"]
        assert (miss["remote"], hit["remote"]) == (client, client)
        for record in (miss, hit):
            assert (record["status"], record["bytes"]) == (200, 10)
            stamp = datetime.fromisoformat(str(record["time"]))
            assert stamp.tzinfo is not None, record["time"]
            assert abs(stamp - datetime.now(UTC)) < timedelta(minutes=5)
            assert isinstance(record["ms"], int | float) and record["ms"] >= 0
            assert round(record["ms"], 1) == record["ms"]
        assert isinstance(miss["origin_ms"], int | float) and miss["origin_ms"] >= 0
        assert round(miss["origin_ms"], 1) == miss["origin_ms"]
        assert hit["origin_ms"] is None


@pytest.mark.parametrize("tuning", ["on", "off"])
def test_an_answer_cut_off_logs_what_went(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path, tuning: str
) -> None:
    """A client that reads the start of a large HIT and goes: the line counts the bytes
    sent before (more than it read, less than the body: the rest never left)."""
    size, read = 20 * 1024 * 1024, 64 * 1024
    proxy = proxy_factory({"WSGI_PROXY_TUNING": tuning}, cache_dir=tmp_path / "cache")
    path = origin.route("/cut", headers=CACHED, body=body_of(size))
    # Whole answers first: each worker checks a large body once, streaming it, and sends
    # it from the file from then on (with 2 workers, 8 answers reach both but for 1 in 128).
    wholes = [f"whole-{n}" for n in range(8)]
    for agent in wholes:
        assert len(proxy.get(path, [("User-Agent", agent)]).body) == size
    agents = [f"cut-{tuning}-{n}" for n in range(4)]
    for agent in agents:
        with stream(proxy.port, path, [("User-Agent", agent)]) as reply:
            assert reply.status == 200
            assert len(reply.read(read)) == read
    lines = log_lines(proxy, len(wholes) + len(agents), parse_text)
    assert [int(lines[agent]["bytes"]) for agent in wholes] == [size] * len(wholes)
    logged = [int(lines[agent]["bytes"]) for agent in agents if agent in lines]
    assert len(logged) == len(agents), lines.keys()
    assert all(read <= count < size for count in logged), logged


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_proxys_own_lines_go_to_gunicorns_error_log(
    proxy_factory: ProxyFactory, origin: Origin, log_format: str
) -> None:
    """The package's lines (here a purge's, at INFO) are written by gunicorn's error log, in
    its format and at its level; they reached Python's last resort before, which drops INFO
    and prints the rest without a time or a pid. A client's 4xx has its cause at debug level
    only: junk requests do not fill the error log."""
    proxy = proxy_factory({"WSGI_PROXY_LOG_FORMAT": log_format, "WSGI_PROXY_ADMIN_TOKEN": TOKEN})
    path = origin.route("/logged", headers=CACHED, body=b"logged")
    proxy.get(path)
    purged = proxy.request("PURGE", path, [("Authorization", f"Bearer {TOKEN}")])
    assert purged.status == 200, purged.describe()
    refused = proxy.get("/refused", [("Host", "not a host")])
    assert refused.status == 400, refused.describe()
    line = re.compile(
        rf"^\[[^]]+\] \[\d+\] \[INFO\] purge url '[^']*{path}': purged 1", re.MULTILINE
    )
    deadline = time.monotonic() + 10
    while not line.search(proxy.stderr(200)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert line.search(proxy.stderr(200)), proxy.stderr(20)
    assert "/refused" not in proxy.stderr(200)
