"""Assertions shared by the integration tests, with the whole response in the message."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from .client import Response

CacheResult = Literal["HIT", "MISS"]


def assert_response(
    reply: Response,
    *,
    cache: CacheResult,
    body: bytes | None = None,
    status: int = 200,
) -> None:
    """`reply` has this status, X-Cache, body (if given), and the proxy's Cache-Status and
    Via; a HIT also carries a whole-number Age."""
    shown = reply.describe()
    assert reply.status == status, shown
    assert reply.header_values("X-Cache") == [cache], shown
    cache_status = reply.header("Cache-Status") or ""
    assert cache_status.startswith("wsgi_proxy;"), shown
    assert "wsgi_proxy" in (reply.header("Via") or ""), shown
    if body is not None:
        assert reply.body == body, shown
    if cache == "HIT":
        ages = reply.header_values("Age")
        assert len(ages) == 1, shown
        assert ages[0].isdigit(), shown


def assert_proxy_error(reply: Response, status: int) -> None:
    """`reply` is the proxy's own short plain-text error with `status`."""
    shown = reply.describe()
    assert reply.status == status, shown
    assert (reply.header("Content-Type") or "").startswith("text/plain"), shown
    assert 0 < len(reply.body) < 1024, shown
    assert reply.header_values("X-Cache") == ["MISS"], shown
    assert (reply.header("Cache-Status") or "").startswith("wsgi_proxy;"), shown


def cache_bytes(folder: Path) -> int:
    """Disk use under `folder` as ``du -s -B1`` counts it: the allocated blocks of every
    file and folder, `folder` itself included (files vanishing meanwhile skipped)."""
    total = 0
    for path in [folder, *folder.rglob("*")]:
        try:
            total += path.lstat().st_blocks * 512
        except FileNotFoundError:
            continue
    return total


def cache_breakdown(folder: Path) -> dict[str, int]:
    """Bytes of regular files under `folder`, by their first two path components: what an
    assertion message shows when the total is too large."""
    sizes: dict[str, int] = {}
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                group = "/".join(path.relative_to(folder).parts[:2])
                sizes[group] = sizes.get(group, 0) + path.stat().st_size
        except FileNotFoundError:
            continue
    return sizes


def poll(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Whether `condition()` became true within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
