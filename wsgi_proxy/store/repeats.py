"""Which entries a worker looked up again lately: the admission to its memos (the hot set,
the decoded headers' memo and the ready answers), as the "doorkeeper" of a TinyLFU cache.

Why: each memo keeps its last 4,096 entries, so an entry is worth remembering only if it
is asked for again before 4,096 others push it out. With hits spread over 100,000 entries
almost none is, and remembering each one anyway cost every lookup a header memo, a hot-set
entry and a ready answer (7 % of a worker's time), and kept the garbage collector busy:
each memo entry outlives the young generations, and the full collections they bring on
(0.1 s of CPU over 130,000 objects, far longer in wall time on a busy CPU, all other
threads waiting) set the p99 of those hits (docs/performance.md, "Where the time goes").
Now an entry is remembered from its second lookup within about a memo's length of
lookups; an entry asked for often is remembered as before, one lookup later.

Invariants:
- ``again(name)`` marks ``name`` and says whether it was marked within the last one to
  two ``window``s of calls. Approximate: a name can share its mark with another (about
  one in ``SLOTS // (2 * window)``), which only admits it one lookup early.
- Bounded, and never grows: two byte arrays of ``SLOTS``; no Python objects per name, so
  nothing for the garbage collector.
- Unlocked: two threads racing on a slot or on the turn lose at most a mark.
"""

from __future__ import annotations

SLOTS = 1 << 17


class RecentLookups:
    """Names looked up within the last ``window`` to ``2 * window`` lookups."""

    def __init__(self, window: int, slots: int = SLOTS) -> None:
        if slots & (slots - 1):
            raise ValueError("slots must be a power of two")
        self.window = window
        self._mask = slots - 1
        self._current = bytearray(slots)
        self._previous = bytearray(slots)
        self._count = 0

    def again(self, name: str) -> bool:
        """Mark ``name``; was it marked lately?"""
        if self.window <= 0:
            return False
        slot = hash(name) & self._mask
        current = self._current
        seen = bool(current[slot] or self._previous[slot])
        current[slot] = 1
        self._count += 1
        if self._count >= self.window:
            self._count = 0
            self._previous, self._current = current, bytearray(len(current))
        return seen
