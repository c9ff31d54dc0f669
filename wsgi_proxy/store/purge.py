"""Purging: remove, or mark stale ("soft"), stored responses by URL, prefix, tag or all.

Invariants:
- Works on the shared folder only, so a purge from any worker or from the CLI takes effect
  in every worker at once; it needs no lock (entries are replaced or unlinked atomically,
  bans appended whole).
- No purge reads the folder: a URL purge removes (or marks) that URL's files, for each
  site in the list of sites (site_list.py) or the one host it names, and counts them;
  a prefix or tag purge, a soft purge of everything, and a URL purge when the list of
  sites is incomplete, record a ban (bans.py) and answer at once: lookups stop serving
  what it covers from then on, and the lurker (lurker.py) removes or marks it in the
  background and counts it then.
- A soft purge keeps the body and marks the entry stale: the next request revalidates it,
  and it can still be served if the origin fails (stale-if-error).
- Every purge ``apply`` carries out is recorded in the list of the last purges
  (recent_purges.py), which the status page shows; a ban's record is ``pending`` until
  the lurker has finished with it and set its count.
- ``Purge`` is the one description of a purge order; the cluster (cluster/nodes.py) sends it to
  the other nodes and the purge log (purge_log.py) keeps it, both as ``Purge`` values.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, assert_never
from urllib.parse import urlencode

from wsgi_proxy.core import keys, sites
from wsgi_proxy.store.bans import Ban, BanKind
from wsgi_proxy.store.cache import Store
from wsgi_proxy.store.entry_file import TMP_PREFIX, CorruptEntry, entry_of, read_header
from wsgi_proxy.store.hits import Hit, identity_of
from wsgi_proxy.store.hot_set import stamp_of
from wsgi_proxy.store.recent_purges import PurgeRecord, RecentPurges
from wsgi_proxy.store.walk import walk_files

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """How many stored responses were removed or marked stale; for a ban (``banned``),
    none yet: the lurker counts them as it reaches them."""

    purged: int
    banned: bool = False

    def format(self) -> str:
        """The admin interface's and the CLI's answer."""
        return BANNED if self.banned else f"purged {self.purged}"


BANNED = "banned: entries stop being served now; removed in the background"


PurgeKind = Literal["url", "prefix", "tag", "all"]
_KINDS: tuple[PurgeKind, ...] = ("url", "prefix", "tag", "all")
_YES = ("1", "true", "yes")


@dataclass(frozen=True, slots=True)
class Purge:
    """One purge order, as the admin interface, the CLI, the peers and the purge log
    carry it: ``value`` is the target, prefix or tag (empty for ``all``)."""

    kind: PurgeKind
    value: str
    soft: bool = False

    @property
    def is_ban(self) -> bool:
        """Is it always carried out as a ban (bans.py)? By prefix, by tag, and a soft purge
        of everything; a URL purge is one only where the list of sites is incomplete."""
        return self.kind in ("prefix", "tag") or (self.kind == "all" and self.soft)

    @property
    def label(self) -> str:
        """The metrics label: ``tag``, ``tag-soft`` ..."""
        return self.kind + ("-soft" if self.soft else "")

    def query(self) -> str:
        """The admin interface's query string for this purge."""
        pairs: list[tuple[str, str]] = [(self.kind, "1" if self.kind == "all" else self.value)]
        if self.soft:
            pairs.append(("soft", "1"))
        return urlencode(pairs)

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "value": self.value, "soft": self.soft})

    @classmethod
    def from_json(cls, text: str) -> Purge:
        """Parse ``to_json``'s output; ``ValueError`` if it is not one."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("kind") not in _KINDS:
            raise ValueError(f"not a purge: {text[:80]!r}")
        kind: PurgeKind = data["kind"]
        return cls(kind, str(data.get("value", "")), bool(data.get("soft", False)))

    @classmethod
    def from_query(cls, query: dict[str, list[str]]) -> Purge | None:
        """From the admin interface's parsed query; None when it names no purge."""
        soft = query.get("soft", ["0"])[0] in _YES
        for kind in ("url", "prefix", "tag"):
            if kind in query and query[kind][0]:
                return cls(kind, query[kind][0], soft)
        if query.get("all", ["0"])[0] in _YES:
            return cls("all", "", soft)
        return None


def check(purge: Purge) -> None:
    """``ValueError`` saying why, if ``purge``'s URL or prefix is neither a path nor an
    http(s) URL (the admin interface's 400, the CLI's error)."""
    if purge.kind in ("url", "prefix"):
        parse_purge_url(purge.value, prefix=purge.kind == "prefix")


def apply(store: Store, origin_url: str, purge: Purge) -> PurgeResult:
    """Carry out ``purge`` on this node's cache folder. One that fails ``check`` (from an
    older node, or the purge log) purges nothing, logged."""
    try:
        check(purge)
    except ValueError as exc:
        log.warning("purge %s ignored: %s", purge.label, exc)
        return PurgeResult(0)
    result, ban = _apply(store, origin_url, purge)
    if ban is None:
        record = PurgeRecord(time.time(), purge.kind, purge.value, purge.soft, result.purged)
    else:  # the lurker sets its count when it is done with the ban (lurker.py)
        record = PurgeRecord(ban.time, purge.kind, purge.value, purge.soft, 0, pending=True)
    RecentPurges(store.state).record(record)  # for the status page
    return result


def _apply(store: Store, origin_url: str, purge: Purge) -> tuple[PurgeResult, Ban | None]:
    """The purge's result, and the ban it recorded if it recorded one."""
    ban: Ban | None = None
    match purge.kind:
        case "url":
            result = purge_url(store, origin_url, purge.value, soft=purge.soft)
            if result is not None:
                return result, None
            target, _ = parse_purge_url(purge.value)
            ban = _ban("url", target, None, origin_url, purge.soft)
        case "prefix":
            target, host = parse_purge_url(purge.value, prefix=True)
            ban = _ban("prefix", target, host, origin_url, purge.soft)
        case "tag":
            ban = _ban("tag", purge.value, None, None, purge.soft)
        case "all":
            if not purge.soft:
                return purge_all(store), None
            ban = _ban("all", "", None, None, soft=True)
        case _:
            assert_never(purge.kind)
    store.bans.add(ban)
    log.info("ban recorded: %s %r", ban.label, ban.value)
    return PurgeResult(0, banned=True), ban


def _ban(kind: BanKind, value: str, host: str | None, origin: str | None, soft: bool) -> Ban:
    return Ban(time.time_ns(), kind, value, host, origin, soft)


def purge_url(store: Store, origin_url: str, url: str, *, soft: bool) -> PurgeResult | None:
    """The stored responses for one URL, every Vary variant included. ``url`` is a request
    target (``/path?q``: the entries of every site, found by the list of sites) or an
    absolute URL (``https://host/path?q``: that host's entries, for both schemes). None
    when the list of sites is incomplete: finding them would scan (a ban then)."""
    target, host = parse_purge_url(url)
    listed = _sites(store, host)
    if listed is None:
        return None
    count = 0
    for site in listed:
        primary = keys.primary_key(origin_url, target, site)
        path = store.primary_path(primary)
        paths = [path]
        variants = path.with_name(path.name + ".d")
        if variants.is_dir():
            paths += [
                Path(e.path) for e in os.scandir(variants) if not e.name.startswith(TMP_PREFIX)
            ]
        count += sum(_purge_file(store, p, soft=soft) for p in paths)
        if not soft:
            store.invalidate(primary)
    return PurgeResult(count)


def parse_purge_url(url: str, *, prefix: bool = False) -> tuple[str, str | None]:
    """(target, normalised host or None for every site) of a purge's URL or prefix."""
    if url.startswith("/"):
        return url, None
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in sites.SCHEMES:
        raise ValueError(f"not a path or an http(s) URL: {url[:80]!r}")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    host = sites.normalise_host(rest[:cut], scheme)
    if host is None or not host:
        raise ValueError(f"not a valid host in {url[:80]!r}")
    target = rest[cut:]
    if target.startswith("?") or (not target and not prefix):
        target = "/" + target
    return target, host


def _sites(store: Store, host: str | None) -> list[str] | None:
    """The sites a purge covers: ``host``'s for both schemes, else every listed site (None
    when the list is incomplete)."""
    if host is not None:
        return [sites.Site(scheme, host).url for scheme in sites.SCHEMES]
    return store.sites.sites()


def purge_all(store: Store) -> PurgeResult:
    """Everything, removed: the store's clear (an empty folder swapped in). The count is
    the files the cache manager last counted (state/usage): no walk of the folder."""
    count = store.usage.read_files()
    store.clear()
    return PurgeResult(count)


def _purge_file(store: Store, path: Path, *, soft: bool) -> int:
    if soft:
        return int(soft_purge(store, path))
    meta = read_meta(path)
    if meta is None or meta.get("kind") != "response":
        return 0
    store.remove(path)
    return 1


def read_meta(path: Path, *, remember: bool = True) -> dict[str, Any] | None:
    """The header block of the entry at ``path``, or None if it is gone or damaged
    (``remember``: entry_file.read_header's)."""
    try:
        with path.open("rb", buffering=0) as file:
            meta, _, _ = read_header(file, remember=remember)
    except (OSError, CorruptEntry, ValueError, KeyError, TypeError):
        return None
    return meta


def soft_purge(store: Store, path: Path, identity: tuple[int, int, int] | None = None) -> bool:
    """Mark the stored response at ``path`` stale, keeping it for revalidation: published
    anew under the same body (``Store.refresh``), as a 304 would be. With ``identity``
    (``hits.identity_of`` of the file whose header the caller judged), only that file: a
    response published there since came after the ban (a 304 refresh), and is left alone."""
    try:
        file = path.open("rb", buffering=0)
    except OSError:
        return False
    with file:
        try:
            if identity is not None and identity_of(os.fstat(file.fileno())) != identity:
                return False
            meta, offset, _ = read_header(file)
            if meta.get("kind") != "response":
                return False
            entry = replace(entry_of(meta), soft_purged=True)
            stamp = stamp_of(os.fstat(file.fileno()))
            hit = Hit(entry, str(path), file, offset, int(meta["body_crc"], 16), stamp)
        except (CorruptEntry, OSError, ValueError, KeyError, TypeError):
            return False
        store.refresh(hit, entry)
    return True


def _entry_files(store: Store) -> Iterator[Path]:
    for item in walk_files(store.objects):
        if not item.name.startswith(TMP_PREFIX):
            yield Path(item.path)
