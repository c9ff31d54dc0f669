"""The last purges applied to this cache folder, for the status page: ``v1/state/purges``,
one JSON object a line, oldest first.

Every purge applied here (the admin interface, the CLI, a peer's fan-out, the purge log's
replay: all go through ``purge.apply``) is recorded, by whichever process applied it.

Invariants:
- Bounded: the file holds at most ``KEPT`` purges; each record's value at most
  ``VALUE_CHARS`` characters.
- Replaced whole (a temporary file in the same folder, then ``os.replace``), under the
  lock file ``v1/state/purges.lock`` (never deleted), so two processes recording at once
  both land and a reader never sees half a file; readers take no lock.
- Recording never fails a purge: a lock not had in ``LOCK_TIMEOUT``, or a write error, is
  logged and the record dropped. An unreadable line is skipped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from wsgi_proxy.store.atomic import replace_text

log = logging.getLogger(__name__)

KEPT = 20
VALUE_CHARS = 200
LOCK_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class PurgeRecord:
    """One purge applied here: when (Unix time), its kind (``url``, ``prefix``, ``tag``,
    ``all``), its target, prefix or tag, whether soft, and how many responses it purged.
    ``pending``: a ban (bans.py) the lurker has not finished with: ``purged`` is set when
    it has (``settle``)."""

    time: float
    kind: str
    value: str
    soft: bool
    purged: int
    pending: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, text: str) -> PurgeRecord:
        """Parse one line; ``ValueError`` (or ``KeyError``, ``TypeError``) if it is not one."""
        data = json.loads(text)
        return cls(float(data["time"]), str(data["kind"]), str(data["value"]),
                   bool(data["soft"]), int(data["purged"]),
                   bool(data.get("pending", False)))  # fmt: skip


class RecentPurges:
    """The file ``<state>/purges``."""

    def __init__(self, state: Path) -> None:
        self.path = state / "purges"
        self._lock_path = state / "purges.lock"

    def record(self, record: PurgeRecord) -> None:
        """Add ``record``, dropping the oldest past ``KEPT``."""
        record = replace(record, value=record.value[:VALUE_CHARS])
        self._change(lambda kept: [*kept, record][-KEPT:])

    def settle(self, when: float, kind: str, purged: int) -> None:
        """Set the count of the pending record of the ban made at ``when`` (if still kept)."""

        def settled(kept: list[PurgeRecord]) -> list[PurgeRecord]:
            return [
                replace(r, purged=purged, pending=False)
                if r.pending and (r.time, r.kind) == (when, kind)
                else r
                for r in kept
            ]

        self._change(settled)

    def _change(self, change: Callable[[list[PurgeRecord]], list[PurgeRecord]]) -> None:
        lock = FileLock(self._lock_path, timeout=LOCK_TIMEOUT, thread_local=False,
                        preserve_lock_file=True)  # fmt: skip
        try:
            with lock:
                kept = change(self.read(newest_first=False))
                replace_text(self.path, "".join(json.dumps(r.to_json()) + "\n" for r in kept))
        except (OSError, Timeout) as exc:
            log.warning("cannot record the purge in %s: %s", self.path, exc)

    def read(self, *, newest_first: bool = True) -> list[PurgeRecord]:
        """The purges recorded (none if the file is missing or unreadable)."""
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []
        records = []
        for line in lines[-KEPT:]:
            try:
                records.append(PurgeRecord.from_json(line))
            except (ValueError, KeyError, TypeError):
                log.debug("skipping an unreadable line of %s: %r", self.path, line[:80])
        return records[::-1] if newest_first else records
