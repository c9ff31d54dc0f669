"""The filesystem cache shared by every worker: entries, locks, size accounting, eviction.

Layout under the cache folder (the format is versioned by the ``v1`` folder and the magic):
    v1/objects/ab/<sha256 of primary key>          a response, a Vary marker or a pass marker
    v1/objects/ab/<sha256>.d/<sha256 of variant>   responses selected by Vary
    v1/locks/<n>.lock                              striped per-key locks (locks.py)
    v1/state/usage                                 bytes stored, shared by all workers

Invariants:
- An entry is one file: 16-byte prefix (magic, header length, header CRC-32), a JSON header
  block, then the body. It is written to a temporary file in the same folder and published
  with ``os.replace``, so a reader sees a whole entry or none; readers take no lock.
- A body is published only when all of it arrived; the header records its length and
  CRC-32, and a reader checks the length against the file size on every open. A file that
  fails the checks is removed and treated as a miss.
- Lock files are a bounded set and are never deleted: unlinking a held lock file would break
  mutual exclusion.
- Every disk error is contained here: the cache degrades to pass-through, never to an error
  for the client.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import secrets
import shutil
import struct
import threading
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from filelock import FileLock

from wsgi_proxy import keys
from wsgi_proxy.errors import ConfigError
from wsgi_proxy.headers import Headers
from wsgi_proxy.locks import KeyLock, key_lock
from wsgi_proxy.model import Entry, ResponseHead

log = logging.getLogger(__name__)

MAGIC = b"WSPX\x00\x01\r\n"
_PREFIX = struct.Struct(">8sII")
_LENGTH_WIDTH = 20
_FIRST_READ = 8192
TMP_PREFIX = ".tmp."
# Parsed header blocks each worker keeps (a few KiB each): the hot set skips JSON parsing.
_MEMO_SIZE = 4096
_VERIFIED_MAX = 65536
_CRC_BLOCK = 1 << 20
_ENTRY = "\0entry"  # where a decoded header keeps its Entry; the writer never uses it
# A hit refreshes the file's mtime (the LRU clock) at most this often, to spare a syscall.
TOUCH_INTERVAL = 60.0


@dataclass(frozen=True, slots=True)
class Hit:
    """An open stored response. ``file`` is unbuffered, at no particular position: read
    it at offsets. ``early`` holds the first body bytes, read with the header: the whole
    body of a small entry, which then needs no second read."""

    entry: Entry
    location: str  # the file's path; a str, as building a Path costs on every hit
    file: BinaryIO
    body_offset: int
    body_crc: int
    identity: tuple[int, int, int]  # device, inode and size of the file: which one it is
    early: bytes = b""

    @property
    def path(self) -> Path:
        return Path(self.location)

    def read(self, start: int, end: int) -> bytes:
        """Body bytes ``start`` to ``end`` (exclusive): from ``early`` when it holds them,
        else one positioned read (short only if the file was damaged since it was opened)."""
        if len(self.early) >= end:
            return self.early[start:end]
        return os.pread(self.file.fileno(), end - start, self.body_offset + start)

    def close(self) -> None:
        self.file.close()


@dataclass(frozen=True, slots=True)
class PassMarker:
    """The URL's last response was not storable: forward without waiting on a lock."""

    until: float


class Store:
    """The cache folder. Create it in each worker after the fork; it opens no file until
    used."""

    def __init__(self, root: Path, *, lock_stripes: int, max_variants: int) -> None:
        self.root = root / "v1"
        self.objects = self.root / "objects"
        self.locks = self.root / "locks"
        self.state = self.root / "state"
        self.lock_stripes = lock_stripes
        self.max_variants = max_variants
        self.usage = UsageCounter(self.state)
        self._objects = str(self.objects)
        self._locks = str(self.locks)
        self._verified: set[tuple[int, int, int, int]] = set()

    def prepare(self) -> None:
        """Create the folders (mode 0700); raise OSError if the folder cannot be used."""
        for folder in (self.objects, self.locks, self.state):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        probe = self.state / f"{TMP_PREFIX}probe.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()

    def primary_path(self, primary: str) -> Path:
        return Path(self._primary_location(primary))

    def _primary_location(self, primary: str) -> str:
        digest = keys.digest(primary)
        return os.path.join(self._objects, digest[:2], digest)

    # ---- reading ------------------------------------------------------------------------

    def lookup(self, primary: str, request_headers: Headers, now: float) -> Hit | PassMarker | None:
        """The stored response for ``primary`` whose Vary matches the request."""
        path = self._primary_location(primary)
        opened = self._open(path, primary, now)
        if opened is None:
            return None
        meta, file, offset, identity, early = opened
        kind = meta.get("kind")
        if kind == "response":
            crc = int(meta["body_crc"], 16)
            return Hit(_entry(meta), path, file, offset, crc, identity, early)
        file.close()
        if kind == "pass":
            until = float(meta["until"])
            return PassMarker(until) if until > now else None
        names = tuple(meta["names"])
        values = keys.vary_values(names, request_headers)
        variant_path = os.path.join(f"{path}.d", keys.variant_digest(values))
        opened = self._open(variant_path, primary, now)
        if opened is None:
            return None
        meta, file, offset, identity, early = opened
        entry = _entry(meta)
        if entry.vary != values:
            file.close()
            return None
        crc = int(meta["body_crc"], 16)
        return Hit(entry, variant_path, file, offset, crc, identity, early)

    def _open(
        self, path: str, primary: str, now: float
    ) -> tuple[dict[str, Any], BinaryIO, int, tuple[int, int, int], bytes] | None:
        try:
            file: BinaryIO = open(path, "rb", buffering=0)  # noqa: SIM115 - handed to the caller
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cache read failed for %s: %s", path, exc)
            return None
        try:
            meta, offset, early = _read_header(file)
            if meta.get("key") != primary:
                raise CorruptEntry("key mismatch")
            stat = os.fstat(file.fileno())
            if stat.st_size != offset + int(meta.get("body_length", "0")):
                raise CorruptEntry("length mismatch")
            if now - stat.st_mtime > TOUCH_INTERVAL:
                with contextlib.suppress(OSError):
                    os.utime(file.fileno())
        except (CorruptEntry, OSError, ValueError, KeyError, TypeError) as exc:
            file.close()
            log.warning("removing corrupt cache entry %s: %s", path, exc)
            self._remove(Path(path))
            return None
        return meta, file, offset, _identity(stat), early

    def is_verified(self, hit: Hit) -> bool:
        return (*hit.identity, hit.body_crc) in self._verified

    def verify(self, hit: Hit, body: bytes | None = None) -> bool:
        """Does ``hit``'s body match the CRC-32 its header records? ``body`` is the whole
        body if the caller read it already. Files are never changed in place, so each is
        checked once per worker and remembered. A mismatch (a machine crash can leave a
        published file with zeros: entries are not fsynced) removes the file."""
        stamp = (*hit.identity, hit.body_crc)
        if stamp in self._verified:
            return True
        length = hit.entry.body_length
        try:
            if body is not None and len(body) == length:
                crc = zlib.crc32(body)
            else:
                crc = _crc_of(hit.file.fileno(), hit.body_offset, length)
        except OSError as exc:
            log.warning("cannot check cache entry %s: %s", hit.location, exc)
            return False
        if crc != hit.body_crc:
            log.warning("removing cache entry %s: body checksum mismatch", hit.location)
            self.remove_if_same(hit)
            return False
        if len(self._verified) >= _VERIFIED_MAX:
            self._verified.clear()
        self._verified.add(stamp)
        return True

    def verify_later(self, hit: Hit) -> None:
        """``verify`` on a file of its own (for a background thread): ``hit``'s file is
        being sent to the client meanwhile."""
        try:
            file: BinaryIO = open(hit.location, "rb", buffering=0)  # noqa: SIM115
        except OSError:
            return
        with file:
            if _identity(os.fstat(file.fileno())) == hit.identity:
                self.verify(replace(hit, file=file))

    # ---- writing ------------------------------------------------------------------------

    def begin(
        self, entry: Entry, *, expected_length: int | None, max_body: int
    ) -> EntryWriter | None:
        """A writer for ``entry``'s body, or None when the disk refuses (logged). A response
        that varies goes to its variant's file, selected by ``entry.vary``."""
        path = self.primary_path(entry.key)
        if entry.vary:
            path = _variants_dir(path) / keys.variant_digest(entry.vary)
        meta = _meta_of(entry)
        try:
            return EntryWriter(self, path, meta, expected_length, max_body)
        except OSError as exc:
            log.warning("cannot write to the cache (%s): passing through", exc)
            return None

    def publish_marker(self, primary: str, meta: dict[str, Any]) -> None:
        """Publish a Vary or pass marker (a header-only entry) at the primary path."""
        writer = self.begin_raw(self.primary_path(primary), {"key": primary, **meta})
        if writer is not None:
            writer.commit()

    def begin_raw(self, path: Path, meta: dict[str, Any]) -> EntryWriter | None:
        try:
            return EntryWriter(self, path, meta, None, 0)
        except OSError as exc:
            log.warning("cannot write to the cache (%s)", exc)
            return None

    def after_publish(self, path: Path, entry_meta: dict[str, Any]) -> None:
        """Keep the folder consistent after ``path`` was published: a Vary marker for a
        variant (capped at ``max_variants``), no stale variants beside a plain entry."""
        primary_path = self.primary_path(entry_meta["key"])
        if path == primary_path:
            variants = _variants_dir(path)
            if entry_meta.get("kind") == "response" and variants.is_dir():
                self._remove_tree(variants)
            return
        names = [n for n, _ in entry_meta["vary"]]
        self.publish_marker(entry_meta["key"], {"kind": "vary", "names": names})
        self._cap_variants(path.parent)

    def _cap_variants(self, folder: Path) -> None:
        try:
            files = [e for e in os.scandir(folder) if not e.name.startswith(TMP_PREFIX)]
            if len(files) <= self.max_variants:
                return
            files.sort(key=lambda e: e.stat().st_mtime)
            for extra in files[: len(files) - self.max_variants]:
                self._remove(Path(extra.path))
        except OSError as exc:
            log.warning("variant cap failed in %s: %s", folder, exc)

    def refresh(self, hit: Hit, entry: Entry) -> None:
        """Publish ``hit``'s body under the updated header of ``entry`` (after a 304)."""
        writer = self.begin_raw(hit.path, _meta_of(entry))
        if writer is None:
            return
        try:
            src = hit.file.fileno()
            writer.copy_from(src, hit.body_offset, hit.entry.body_length, hit.body_crc)
            hit.file.seek(hit.body_offset)
        except OSError as exc:
            log.warning("cache refresh failed for %s: %s", hit.path, exc)
            writer.abort()
            return
        writer.commit()

    # ---- removal ------------------------------------------------------------------------

    def invalidate(self, primary: str) -> None:
        """Remove the stored responses for ``primary``, every variant included."""
        path = self.primary_path(primary)
        self._remove(path)
        variants = _variants_dir(path)
        if variants.is_dir():
            self._remove_tree(variants)

    def clear(self) -> None:
        """Empty the cache while workers serve: the objects folder is swapped for an empty
        one in one rename; open files stay readable; in-flight writes fail to publish."""
        self.prepare()
        trash = self.root / f"trash.{secrets.token_hex(6)}"
        os.rename(self.objects, trash)
        self.objects.mkdir(mode=0o700)
        shutil.rmtree(trash, ignore_errors=True)
        self.usage.reset(0)

    def read_meta(self, path: Path) -> dict[str, Any] | None:
        """The header block of the entry at ``path``, or None if it is gone or damaged."""
        try:
            with path.open("rb", buffering=0) as file:
                meta, _, _ = _read_header(file)
        except (OSError, CorruptEntry, ValueError, KeyError, TypeError):
            return None
        return meta

    def soft_purge(self, path: Path) -> bool:
        """Mark the stored response at ``path`` stale, keeping it for revalidation."""
        try:
            file = path.open("rb", buffering=0)
        except OSError:
            return False
        with file:
            try:
                meta, offset, _ = _read_header(file)
                if meta.get("kind") != "response":
                    return False
                entry = replace(_entry(meta), soft_purged=True)
                identity = _identity(os.fstat(file.fileno()))
                hit = Hit(entry, str(path), file, offset, int(meta["body_crc"], 16), identity)
            except (CorruptEntry, OSError, ValueError, KeyError, TypeError):
                return False
            self.refresh(hit, entry)
        return True

    def remove_if_same(self, hit: Hit) -> None:
        """Remove ``hit``'s file unless another entry was published there since."""
        with contextlib.suppress(OSError):
            if _identity(os.stat(hit.location)) == hit.identity:
                self._remove(Path(hit.location))

    def remove(self, path: Path) -> None:
        self._remove(path)

    def _remove(self, path: Path) -> None:
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cannot remove %s: %s", path, exc)
            return
        self.usage.add(-size)

    def _remove_tree(self, folder: Path) -> None:
        with contextlib.suppress(OSError):
            for item in os.scandir(folder):
                self._remove(Path(item.path))
            folder.rmdir()

    # ---- locks --------------------------------------------------------------------------

    def key_lock(self, primary: str, timeout: float) -> KeyLock:
        """The lock stripe for ``primary`` (shared with its variants), marked with its
        digest while held (locks.py)."""
        digest = keys.digest(primary)
        stripe = int(digest[:8], 16) % self.lock_stripes
        return key_lock(os.path.join(self._locks, f"{stripe}.lock"), digest, timeout)


def check_folder(cache_dir: Path) -> None:
    """Create and probe the cache folder; a ``ConfigError`` naming it if it is unusable."""
    try:
        Store(cache_dir, lock_stripes=1, max_variants=1).prepare()
    except OSError as exc:
        raise ConfigError(
            "WSGI_PROXY_CACHE_DIR", f"cannot use {cache_dir}: {exc.strerror or exc}"
        ) from None


class CorruptEntry(Exception):
    pass


class EntryWriter:
    """Streams one entry to a temporary file; ``commit`` publishes it, ``abort`` drops it."""

    def __init__(
        self,
        store: Store,
        path: Path,
        meta: dict[str, Any],
        expected_length: int | None,
        max_body: int,
    ) -> None:
        self.store = store
        self.path = path
        self.meta = meta
        self.expected_length = expected_length
        self.max_body = max_body
        self.length = 0
        self.crc = 0
        self.failed = False
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.tmp = path.parent / f"{TMP_PREFIX}{os.getpid()}.{secrets.token_hex(6)}"
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.header_size = len(self._header(0, 0))
        try:
            _write_all(self.fd, self._header(0, 0))
        except OSError:
            self.abort()
            raise

    def _header(self, length: int, crc: int) -> bytes:
        meta = {**self.meta, "body_length": f"{length:0{_LENGTH_WIDTH}d}", "body_crc": f"{crc:08x}"}
        block = json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode()
        return _PREFIX.pack(MAGIC, len(block), zlib.crc32(block)) + block

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``; past ``max_body`` or on a disk error the entry is dropped."""
        if self.failed:
            return
        self.length += len(chunk)
        if self.length > self.max_body:
            log.debug("not stored: body larger than %d bytes: %s", self.max_body, self.path)
            self.abort()
            return
        try:
            _write_all(self.fd, chunk)
        except OSError as exc:
            log.warning("cache write failed (%s): passing through", exc)
            self.abort()
            return
        self.crc = zlib.crc32(chunk, self.crc)

    def copy_from(self, src_fd: int, offset: int, count: int, crc: int) -> None:
        """Copy a body from another file inside the kernel."""
        self.max_body = count
        copied = 0
        while copied < count:
            sent = os.copy_file_range(src_fd, self.fd, count - copied, offset + copied)
            if sent == 0:
                raise OSError("source shorter than its recorded length")
            copied += sent
        # The body was checked when it was published; its checksum carries over.
        self.length = count
        self.crc = crc

    def commit(self) -> bool:
        """Publish the entry if the body is whole; True when published."""
        if self.failed:
            return False
        if self.expected_length is not None and self.length != self.expected_length:
            log.warning(
                "not stored: body of %d bytes, expected %d", self.length, self.expected_length
            )
            self.abort()
            return False
        try:
            header = self._header(self.length, self.crc)
            if len(header) != self.header_size:
                raise OSError("header size changed")  # cannot happen: fixed-width fields
            os.pwrite(self.fd, header, 0)
            os.close(self.fd)
            self.fd = -1
            try:
                replaced = self.path.stat().st_size
            except FileNotFoundError:
                replaced = 0
            os.replace(self.tmp, self.path)
        except OSError as exc:
            log.warning("cannot publish cache entry %s: %s", self.path, exc)
            self.abort()
            return False
        self.store.usage.add(self.header_size + self.length - replaced)
        self.store.after_publish(self.path, self.meta)
        return True

    def abort(self) -> None:
        self.failed = True
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(OSError):
            self.tmp.unlink()


class UsageCounter:
    """Bytes stored, shared by all workers in ``state/usage``. Each worker adds its deltas
    locally and ``flush`` folds them into the file under a lock; the evictor's scans reset
    it to the truth, so drift from crashes does not last."""

    def __init__(self, state: Path) -> None:
        self.path = state / "usage"
        self.lock_path = state / "usage.lock"
        self.pending = 0
        self._pending_lock = threading.Lock()

    def add(self, delta: int) -> None:
        with self._pending_lock:
            self.pending += delta

    def _lock(self) -> FileLock:
        return FileLock(self.lock_path, timeout=5, thread_local=False, preserve_lock_file=True)

    def flush(self) -> int:
        """Fold this worker's pending delta into the shared total; return the total."""
        with self._pending_lock:
            delta, self.pending = self.pending, 0
        with self._lock():
            total = max(0, self.read() + delta)
            _replace_text(self.path, str(total))
        return total

    def reset(self, total: int) -> None:
        with self._lock():
            _replace_text(self.path, str(total))

    def read(self) -> int:
        try:
            return int(self.path.read_text() or "0")
        except (FileNotFoundError, ValueError):
            return 0


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _variants_dir(primary_path: Path) -> Path:
    return primary_path.with_name(primary_path.name + ".d")


def _identity(stat: os.stat_result) -> tuple[int, int, int]:
    return stat.st_dev, stat.st_ino, stat.st_size


def _crc_of(fd: int, offset: int, length: int) -> int:
    crc, end = 0, offset + length
    while offset < end:
        block = os.pread(fd, min(_CRC_BLOCK, end - offset), offset)
        if not block:
            raise OSError(f"short body: {end - offset} bytes missing")
        crc = zlib.crc32(block, crc)
        offset += len(block)
    return crc


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_header(file: BinaryIO) -> tuple[dict[str, Any], int, bytes]:
    """The header block of the entry ``file`` is open on (read from its start), where the
    body begins, and the body bytes that came with the read. The returned dict is shared
    by every reader: never mutate it."""
    first = file.read(_FIRST_READ)
    if len(first) < _PREFIX.size:
        raise CorruptEntry("short prefix")
    _, length, _ = _PREFIX.unpack_from(first)
    end = _PREFIX.size + length
    if len(first) < end:
        first += file.read(end - len(first))
    return _decode_header(first[:end]), end, first[end:]


@functools.lru_cache(maxsize=_MEMO_SIZE)
def _decode_header(raw: bytes) -> dict[str, Any]:
    """Checks and parses prefix and header block. Memoised on the exact bytes, so a hot
    entry is checked and parsed once per worker, and any changed byte parses afresh."""
    magic, length, crc = _PREFIX.unpack_from(raw)
    if magic != MAGIC:
        raise CorruptEntry("bad magic or version")
    block = raw[_PREFIX.size :]
    if len(block) != length or zlib.crc32(block) != crc:
        raise CorruptEntry("header checksum mismatch")
    meta = json.loads(block)
    if not isinstance(meta, dict):
        raise CorruptEntry("header is not an object")
    if meta.get("kind") == "response":
        meta[_ENTRY] = _build_entry(meta)  # parsed once with the block, not on every hit
    return meta


def _entry(meta: dict[str, Any]) -> Entry:
    entry: Entry = meta[_ENTRY]
    return entry


def _meta_of(entry: Entry) -> dict[str, Any]:
    return {
        "kind": "response",
        "key": entry.key,
        "status": entry.head.status,
        "reason": entry.head.reason,
        "headers": [list(pair) for pair in entry.head.headers],
        "request_time": entry.request_time,
        "response_time": entry.response_time,
        "vary": [list(pair) for pair in entry.vary],
        "tags": list(entry.tags),
        "soft_purged": entry.soft_purged,
    }


def _build_entry(meta: dict[str, Any]) -> Entry:
    head = ResponseHead(
        int(meta["status"]),
        str(meta["reason"]),
        tuple((str(k), str(v)) for k, v in meta["headers"]),
    )
    return Entry(
        key=str(meta["key"]),
        head=head,
        request_time=float(meta["request_time"]),
        response_time=float(meta["response_time"]),
        vary=tuple((str(n), None if v is None else str(v)) for n, v in meta["vary"]),
        body_length=int(meta["body_length"]),
        tags=tuple(str(t) for t in meta.get("tags", ())),
        soft_purged=bool(meta.get("soft_purged", False)),
    )
