"""Purging: remove, or mark stale ("soft"), stored responses by URL, prefix, tag or all.

Invariants:
- Works on the shared folder only, so a purge from any worker or from the CLI takes effect
  in every worker at once; it needs no lock (entries are replaced or unlinked atomically).
- A URL purge touches only that URL's files; prefix and tag purges scan the folder, off the
  request path (admin endpoint or CLI), reading each entry's header block.
- A soft purge keeps the body and marks the entry stale: the next request revalidates it,
  and it can still be served if the origin fails (stale-if-error).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsgi_proxy import keys
from wsgi_proxy.store import TMP_PREFIX, Store


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """How many stored responses were removed or marked stale."""

    purged: int


def purge_url(store: Store, origin_url: str, target: str, *, soft: bool) -> PurgeResult:
    """The stored responses for one URL, every Vary variant included."""
    primary = keys.primary_key(origin_url, target)
    path = store.primary_path(primary)
    paths = [path]
    variants = path.with_name(path.name + ".d")
    if variants.is_dir():
        paths += [Path(e.path) for e in os.scandir(variants) if not e.name.startswith(TMP_PREFIX)]
    count = sum(_purge_file(store, p, soft=soft) for p in paths)
    if not soft:
        store.invalidate(primary)
    return PurgeResult(count)


def purge_prefix(store: Store, origin_url: str, prefix: str, *, soft: bool) -> PurgeResult:
    """Every stored response whose target starts with ``prefix``."""
    start = keys.primary_key(origin_url, prefix)
    return _purge_matching(store, lambda meta: str(meta.get("key", "")).startswith(start), soft)


def purge_tag(store: Store, tag: str, *, soft: bool) -> PurgeResult:
    """Every stored response the origin tagged with ``tag`` (``Surrogate-Key``)."""
    return _purge_matching(store, lambda meta: tag in meta.get("tags", ()), soft)


def purge_all(store: Store, *, soft: bool) -> PurgeResult:
    if not soft:
        count = sum(1 for _ in _entry_files(store))
        store.clear()
        return PurgeResult(count)
    return _purge_matching(store, lambda _meta: True, soft)


def _purge_matching(
    store: Store, matches: Callable[[dict[str, Any]], bool], soft: bool
) -> PurgeResult:
    count = 0
    for path in _entry_files(store):
        meta = store.read_meta(path)
        if meta is not None and meta.get("kind") == "response" and matches(meta):
            count += _purge_file(store, path, soft=soft)
    return PurgeResult(count)


def _purge_file(store: Store, path: Path, *, soft: bool) -> int:
    if soft:
        return int(store.soft_purge(path))
    meta = store.read_meta(path)
    if meta is None or meta.get("kind") != "response":
        return 0
    store.remove(path)
    return 1


def _entry_files(store: Store) -> Iterator[Path]:
    folders = [store.objects]
    while folders:
        folder = folders.pop()
        try:
            items = list(os.scandir(folder))
        except OSError:
            continue
        for item in items:
            if item.is_dir(follow_symlinks=False):
                folders.append(Path(item.path))
            elif not item.name.startswith(TMP_PREFIX):
                yield Path(item.path)
