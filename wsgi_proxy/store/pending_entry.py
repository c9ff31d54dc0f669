"""An entry being written: the writer (entry_file.py) never calls back into the store; what
it reports is recorded in the store through this object, and nowhere else."""

from __future__ import annotations

from typing import Protocol

from wsgi_proxy.core import keys
from wsgi_proxy.store.entry_file import EntryWriter, Published
from wsgi_proxy.store.site_list import SiteList


class EntryRecords(Protocol):
    """What the store (cache.py's ``Store``) records of the entries written into it."""

    sites: SiteList

    def record(self, published: Published) -> None: ...
    def note_write_error(self, exc: OSError) -> None: ...
    def lose_fine_timestamps(self, exc: OSError) -> None: ...


class PendingEntry:
    """An entry being written, held by whoever streams its body (request/body_stream.py) and
    owned by the store: what its writer reports (a failed write, a refused mtime, what it
    published) is recorded here, in the store, and nowhere else."""

    __slots__ = ("store", "writer")

    def __init__(self, store: EntryRecords, writer: EntryWriter) -> None:
        self.store = store
        self.writer = writer

    def write(self, chunk: bytes) -> None:
        writer = self.writer
        writer.write(chunk)
        if writer.error is not None:
            self._note_failure()

    def copy_from(self, src_fd: int, offset: int, count: int, crc: int) -> None:
        self.writer.copy_from(src_fd, offset, count, crc)

    def commit(self) -> bool:
        """Publish the entry if its body is whole, and record it; True when published."""
        writer, store = self.writer, self.store
        sealed = writer.seal()
        if writer.coarse_mtime is not None:
            store.lose_fine_timestamps(writer.coarse_mtime)
        if not sealed:
            self._note_failure()
            return False
        if writer.meta.get("kind") == "response":
            # Its site listed first, before the entry can be found (site_list.py).
            try:
                store.sites.note(keys.site_of_key(str(writer.meta["key"])))
            except OSError as exc:
                writer.drop(exc)
                self._note_failure()
                return False
        published = writer.publish()
        if published is None:
            self._note_failure()
            return False
        store.record(published)
        return True

    def abort(self) -> None:
        self.writer.abort()

    def _note_failure(self) -> None:
        if self.writer.error is not None:
            self.store.note_write_error(self.writer.error)
