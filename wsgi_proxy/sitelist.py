"""The sites (``scheme://host``) this cache folder has stored responses for, so that a
purge of a path finds each site's entry by its key instead of scanning the folder.

A small text file beside the usage counter (``v1/state/sites``), one site a line, shared
by every worker and the CLI.

Invariants:
- A site is written to the file before the first response for it is published, so a
  purge that reads the file never misses a stored entry; a site that cannot be written
  is not stored (``note`` answers False).
- Lines are appended whole with ``O_APPEND`` (one ``write`` of one short line), so
  workers appending at once never interleave; a line may appear twice.
- Bounded: past ``MAX_SITES`` sites, or for a site too long to be worth listing, a ``*``
  line says the list is incomplete, and ``sites()`` answers None: purges then scan.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

MAX_SITES = 1000
MAX_LINE = 512
INCOMPLETE = "*"


class SiteList:
    """The file ``<state>/sites``; each worker remembers what it has read or written, and
    reads the file again for a site it does not know (once per new site and worker)."""

    def __init__(self, state: Path) -> None:
        self.path = state / "sites"
        self._known: set[str] | None = None  # read on first use
        self._lock = threading.Lock()

    def note(self, site: str) -> bool:
        """Make sure ``site`` is listed (or the list marked incomplete); False when the file
        cannot be written, and the response must then not be stored."""
        known = self._known
        if known is not None and (site in known or INCOMPLETE in known):
            return True
        with self._lock:
            # Read anew: other workers may have listed it, or filled the list, since.
            known = self._known = set(self._read() or ())
            if site in known or INCOMPLETE in known:
                return True
            full = len(known) >= MAX_SITES or len(site) > MAX_LINE or "\n" in site
            line = INCOMPLETE if full else site
            try:
                _append(self.path, line + "\n")
            except OSError as exc:
                log.warning("cannot list the site %s in %s: %s", site, self.path, exc)
                return False
            known.add(line)
            return True

    def sites(self) -> list[str] | None:
        """Every site listed, read anew from the file; None if the list is incomplete or
        cannot be read."""
        listed = self._read()
        return None if listed is None or INCOMPLETE in listed else sorted(set(listed))

    def _read(self) -> list[str] | None:
        try:
            text = self.path.read_text(encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            return []
        except OSError as exc:
            log.warning("cannot read the list of sites %s: %s", self.path, exc)
            return None
        return [line for line in text.split("\n") if line]


def _append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode("utf-8", "surrogateescape"))
    finally:
        os.close(fd)
