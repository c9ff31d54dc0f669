"""The sites (``scheme://host``) this cache folder has stored responses for, so that a
purge of a path finds each site's entry by its key instead of scanning the folder.

A small text file beside the usage counter (``v1/state/sites``), one site a line, shared
by every worker and the CLI.

Invariants:
- The list is complete (every site with a stored response is on it) or says it is not (a
  ``*`` line); ``sites()`` answers None for an incomplete, missing or unreadable list,
  and purges then scan.
- A response's site is listed (``note``) just before the response is published, after its
  temporary file exists (entry_file.py): a clear (``reset`` then the folder's swap, in that
  order) either comes first, and the site goes to the new list, or comes after the note,
  and the response, in the old folder, is swept away with it.
- ``note`` decides against the file it appends to: it opens it, and reads it again when
  that file is another than the one it last read (replaced by a clear) or has grown
  (other workers' sites). A list deleted while serving becomes incomplete (``*``).
- Created by ``start`` when missing: empty for a cache folder without entries, else
  incomplete (a list lost, or a folder of a version without one) until a clear.
- Lines are appended whole with ``O_APPEND`` (one ``write`` of one short line), so
  workers appending at once never interleave; a line may appear twice.
- Bounded: past ``MAX_SITES`` sites, or for a site too long to be worth listing, a ``*``
  line says the list is incomplete, until a clear starts a new one.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from pathlib import Path

log = logging.getLogger(__name__)

MAX_SITES = 1000
MAX_LINE = 512
INCOMPLETE = "*"


class SiteList:
    """The file ``<state>/sites``; each worker remembers what it read of it."""

    def __init__(self, state: Path) -> None:
        self.path = state / "sites"
        self._known: set[str] = set()
        self._read_file: tuple[int, int] | None = None  # (device, inode) of what was read
        self._read_upto = 0  # bytes of it read
        self._lock = threading.Lock()

    def start(self, objects: Path) -> None:
        """Create the list if there is none (``Store.prepare``): empty for a cache folder
        without entries, else incomplete (lost, or made by an older version)."""
        if not self.path.exists():
            _create(self.path, "" if _is_empty(objects) else INCOMPLETE + "\n")

    def note(self, site: str) -> None:
        """Make sure ``site`` is listed (or the list marked incomplete). ``OSError`` when
        the list cannot be written: the response must then not be published."""
        with self._lock:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
            except FileNotFoundError:
                # Deleted while serving: which sites are stored is unknown now.
                _create(self.path, INCOMPLETE + "\n")
                return
            try:
                self._catch_up(fd)
                if site in self._known or INCOMPLETE in self._known:
                    return
                full = len(self._known) >= MAX_SITES or len(site) > MAX_LINE or "\n" in site
                line = INCOMPLETE if full else site
                os.write(fd, (line + "\n").encode("utf-8", "surrogateescape"))
                self._known.add(line)
            finally:
                os.close(fd)

    def _catch_up(self, fd: int) -> None:
        """Read what ``fd``'s file holds that this worker has not read yet: all of it if it
        is another file than the last one read."""
        stat = os.fstat(fd)
        identity = (stat.st_dev, stat.st_ino)
        if identity != self._read_file or stat.st_size < self._read_upto:
            self._known, self._read_file, self._read_upto = set(), identity, 0
        if stat.st_size == self._read_upto:
            return
        data = os.pread(fd, stat.st_size - self._read_upto, self._read_upto)
        whole = data[: data.rfind(b"\n") + 1]  # a line being appended right now: next time
        self._known.update(_lines(whole))
        self._read_upto += len(whole)

    def sites(self) -> list[str] | None:
        """Every site listed, read anew from the file; None if the list is incomplete,
        missing or unreadable."""
        try:
            listed = _lines(self.path.read_bytes())
        except OSError as exc:
            if not isinstance(exc, FileNotFoundError):
                log.warning("cannot read the list of sites %s: %s", self.path, exc)
            return None
        return None if INCOMPLETE in listed else sorted(set(listed))

    def reset(self) -> None:
        """A new, empty list, put in place in one rename: for a cache about to be emptied."""
        tmp = self.path.with_name(f"{self.path.name}.{secrets.token_hex(6)}")
        tmp.write_bytes(b"")
        os.replace(tmp, self.path)


def _is_empty(folder: Path) -> bool:
    """Nothing under ``folder`` but empty folders (the objects' first level)."""
    try:
        with os.scandir(folder) as subs:
            for sub in subs:
                if not sub.is_dir():
                    return False
                with os.scandir(sub.path) as entries:
                    if next(entries, None) is not None:
                        return False
    except FileNotFoundError:
        pass
    return True


def _lines(data: bytes) -> list[str]:
    return [line for line in data.decode("utf-8", "surrogateescape").split("\n") if line]


def _create(path: Path, text: str) -> None:
    """``path`` with ``text``, unless it exists already (then it is left as it is)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
