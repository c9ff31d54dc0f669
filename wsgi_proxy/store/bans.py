"""Bans: purges by prefix, tag (and by URL where it would scan) recorded at once and
applied lazily, at each lookup and by the lurker (lurker.py), as Varnish's bans are.

A ban is (time in ns, kind, value, host, origin, soft). A stored response is banned when a
ban is newer than the response's ``response_time`` and matches its key or its tags: a
response fetched (or revalidated by a 304) after the ban came from the origin after it.

Files, in ``v1/state`` (docs/cache-format.md):
- ``bans``: one JSON object a line, oldest first. A ban is appended whole, in one write on
  an ``O_APPEND`` descriptor; the lurker drops the bans it is done with by rewriting the
  file (a temporary file, then ``os.replace``). Both under ``bans.lock`` (never deleted).
- ``bans.gen``: an 8-byte generation counter (native byte order), bumped (under the lock)
  after each append or rewrite. Every process maps it, so reading it costs no syscall: a
  worker reads the ban file again only when the generation moved.

Invariants:
- A ban is in the file, and the generation bumped, before its purge answers: any lookup
  that starts after the answer reads the new generation, reloads, and sees the ban.
- A worker's memos (hot set, ready answers, held files) are trusted only while the
  generation they were checked at is the current one (``Hit.bans``, ``Ready.bans``).
- With no ban in the list, the check on the hit path is one read of the mapped counter.
- A ban file that cannot be read bans nothing new (logged): the cache keeps serving.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock

from wsgi_proxy.core import keys, sites
from wsgi_proxy.store.entry_file import TMP_PREFIX

log = logging.getLogger(__name__)

BanKind = Literal["url", "prefix", "tag", "all"]
LOCK_TIMEOUT = 10.0
GEN_SIZE = 8


@dataclass(frozen=True, slots=True)
class Ban:
    """One ban. ``value``: the target (url), target prefix (prefix) or tag; ``host``: the
    one host it covers (both schemes), None for every site; ``origin``: the origin URL the
    keys were made for (keys.split_key), None for tags and ``all``."""

    time_ns: int
    kind: BanKind
    value: str
    host: str | None = None
    origin: str | None = None
    soft: bool = False

    @property
    def label(self) -> str:
        """purge.py's metrics label: ``tag``, ``prefix-soft`` ..."""
        return self.kind + ("-soft" if self.soft else "")

    @property
    def time(self) -> float:
        return self.time_ns / 1e9

    def to_json(self) -> str:
        return json.dumps(
            {"t": self.time_ns, "kind": self.kind, "value": self.value, "host": self.host,
             "origin": self.origin, "soft": self.soft},
            separators=(",", ":"), ensure_ascii=False,
        )  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> Ban:
        """One line of the file; ``ValueError`` (or ``KeyError``, ``TypeError``) if not one."""
        data = json.loads(text)
        kind = data["kind"]
        if kind not in ("url", "prefix", "tag", "all"):
            raise ValueError(f"not a ban kind: {kind!r}")
        host, origin = data.get("host"), data.get("origin")
        return cls(int(data["t"]), kind, str(data["value"]),
                   None if host is None else str(host), None if origin is None else str(origin),
                   bool(data.get("soft", False)))  # fmt: skip


def matches(ban: Ban, key: str, tags: Iterable[str]) -> bool:
    """Does ``ban`` cover the stored response with primary key ``key`` and ``tags``
    (whatever its age: ``is_banned_by`` adds the time)?"""
    if ban.kind == "all":
        return True
    if ban.kind == "tag":
        return ban.value in tags
    parts = keys.split_key(key, ban.origin or "")
    if parts is None:
        return False
    target, site = parts
    if ban.host is not None and site not in {sites.Site(s, ban.host).url for s in sites.SCHEMES}:
        return False
    return target == ban.value if ban.kind == "url" else target.startswith(ban.value)


@dataclass(frozen=True, slots=True)
class BanList:
    """The bans in force at ``generation``, oldest first."""

    generation: int
    bans: tuple[Ban, ...] = ()
    newest: float = 0.0  # the newest ban's time, in seconds

    def verdict(self, meta: dict[str, Any]) -> Ban | None:
        """The ban that covers the stored response whose header is ``meta`` (a hard one
        first: it hides the response, a soft one only marks it), or None."""
        response_time = float(meta["response_time"])
        if response_time >= self.newest:
            return None  # the common case once bans exist: fetched after all of them
        found: Ban | None = None
        key, tags = str(meta.get("key", "")), meta.get("tags", ())
        for ban in self.bans:
            if ban.time > response_time and matches(ban, key, tags):
                if not ban.soft:
                    return ban
                found = found or ban
        return found


def ban_list(generation: int, bans: Sequence[Ban]) -> BanList:
    ordered = tuple(sorted(bans, key=lambda b: b.time_ns))
    return BanList(generation, ordered, ordered[-1].time if ordered else 0.0)


class Bans:
    """The ban list of one cache folder's ``state``, for one process (a worker, the CLI).
    Opens nothing until used."""

    def __init__(self, state: Path) -> None:
        self.path = state / "bans"
        self.gen_path = state / "bans.gen"
        self._lock_path = state / "bans.lock"
        self._counter: memoryview | None = None  # bans.gen, mapped
        self._warned = False
        self._current = BanList(-1)
        self._reload = threading.Lock()

    # ---- reading (every lookup) ---------------------------------------------------------

    def generation(self) -> int:
        """The shared generation counter: a read of mapped memory (-1 if it cannot be
        mapped, which makes every memo untrusted and every lookup reload)."""
        counter = self._counter
        if counter is None:
            counter = self._open_counter()
            if counter is None:
                return -1
        value: int = counter[0]
        return value

    def current(self) -> BanList:
        """The bans in force now: the list read at the current generation."""
        kept, counter = self._current, self._counter
        if counter is not None and counter[0] == kept.generation:
            return kept  # the hit path: one read of mapped memory
        generation = self.generation()
        with self._reload:
            if self._current.generation != generation or generation < 0:
                self._current = ban_list(generation, self.read())
            return self._current

    def read(self) -> list[Ban]:
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("cannot read the bans in %s: %s", self.path, exc)
            return list(self._current.bans)
        found = []
        for line in lines:
            try:
                found.append(Ban.from_json(line))
            except (ValueError, KeyError, TypeError):
                if line.strip():
                    log.warning("skipping an unreadable ban in %s: %r", self.path, line[:80])
        return found

    def _open_counter(self) -> memoryview | None:
        """``bans.gen`` mapped read-only (created if missing), as one native unsigned 64-bit
        int. Read-only: a writable mapping held for the process's life would keep the cache's
        disk from being remounted read-only; ``_bump`` writes with ``pwrite``, which the
        mapping sees at once (the same page cache)."""
        try:
            _ensure_size(self.gen_path)
            fd = os.open(self.gen_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self._cannot_map(exc)
            return None
        try:
            mapped = mmap.mmap(fd, GEN_SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
        except (OSError, ValueError) as exc:
            self._cannot_map(exc)
            return None
        finally:
            os.close(fd)
        # Never closed: the process keeps it, and a fork's child shares it (MAP_SHARED).
        self._counter = memoryview(mapped).cast("Q")
        return self._counter

    def _cannot_map(self, exc: Exception) -> None:
        """Said once a process: every lookup tries again (and reads the ban file)."""
        if not self._warned:
            log.warning("cannot map %s (%s): every lookup reads the bans", self.gen_path, exc)
            self._warned = True

    # ---- writing (purges, the lurker) ---------------------------------------------------

    def add(self, ban: Ban) -> None:
        """Append ``ban`` and bump the generation: from the return on, every lookup in
        every process sees it. Raises OSError (or filelock's Timeout) if it cannot."""
        line = (ban.to_json() + "\n").encode()
        with self._locked():
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                if os.write(fd, line) != len(line):
                    raise OSError(f"short write to {self.path}")
            finally:
                os.close(fd)
            self._bump()

    def drop(self, done: Iterable[Ban]) -> None:
        """Remove the bans in ``done`` from the file (those added since stay)."""
        gone = set(done)
        if not gone:
            return
        with self._locked():
            kept = [ban for ban in self.read() if ban not in gone]
            tmp = self.path.with_name(f"{TMP_PREFIX}bans.{os.getpid()}")
            try:
                tmp.write_text("".join(ban.to_json() + "\n" for ban in kept), encoding="utf-8")
                os.replace(tmp, self.path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            self._bump()

    def _locked(self) -> FileLock:
        return FileLock(self._lock_path, timeout=LOCK_TIMEOUT, thread_local=False,
                        preserve_lock_file=True)  # fmt: skip

    def _bump(self) -> None:
        counter = self._counter or self._open_counter()
        if counter is None:
            raise OSError(f"cannot map {self.gen_path}")
        fd = os.open(self.gen_path, os.O_WRONLY | os.O_CLOEXEC)
        try:  # under the lock: no other writer
            os.pwrite(fd, struct.pack("@Q", counter[0] + 1), 0)
        finally:
            os.close(fd)


def _ensure_size(path: Path) -> None:
    """``path`` at least ``GEN_SIZE`` bytes long (created, zero, if missing). Never shrunk:
    another process may have created it and bumped it already."""
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_size >= GEN_SIZE:
            return
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_size < GEN_SIZE:
            os.ftruncate(fd, GEN_SIZE)
    finally:
        os.close(fd)
