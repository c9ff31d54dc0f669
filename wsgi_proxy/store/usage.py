"""The bytes and files stored in the cache, as the cache manager (manager.py) last counted
them, for the workers' metrics and the CLI.

Invariants:
- The totals live in ``state/usage`` (``<bytes> <files>``: disk bytes, as ``du`` counts
  them, and stored files), written only by the cache manager, and only ever replaced
  whole (a temporary file, then ``os.replace``).
- Nothing else keeps a total: what the workers add and remove goes to the journal
  (journal.py), which the manager reads.
"""

from __future__ import annotations

from pathlib import Path

from wsgi_proxy.store.atomic import replace_text


class UsageCounter:
    """``state/usage``: the manager writes it, everyone else reads it."""

    def __init__(self, state: Path) -> None:
        self.path = state / "usage"

    def reset(self, total: int, files: int) -> None:
        """Replace the totals (the cache manager's)."""
        replace_text(self.path, f"{total} {files}")

    def read(self) -> int:
        """The bytes stored."""
        return self.read_both()[0]

    def read_files(self) -> int:
        """The files stored: entries, variants and markers."""
        return self.read_both()[1]

    def read_both(self) -> tuple[int, int]:
        try:
            fields = self.path.read_text().split()
            return int(fields[0]) if fields else 0, int(fields[1]) if len(fields) > 1 else 0
        except (FileNotFoundError, ValueError):
            return 0, 0
