"""The purge log on Redis: a purge reaches the nodes that were down when it was issued.

Redis keys:
    wsgi_proxy:purge:seq     sequence number of the last purge logged (INCR)
    wsgi_proxy:purge:log     list of "<seq> <Redis time, ms> <purge as JSON>", the last
                             ``LOG_LENGTH`` purges
    wsgi_proxy:purge:epoch   random token naming this log's life: a new one means Redis
                             lost the log (restarted without persistence, flushed)

Each node keeps its position in its cache folder, ``v1/state/purge-log.json`` (replaced
atomically): the epoch, ``applied`` (every purge up to it is applied), ``ahead`` (later
purges already applied through the fan-out), ``checked_at`` (last read of the log) and
``lost_at`` (first failed read after it).

Invariants:
- Appending is one Lua script (INCR, RPUSH, LTRIM), so the list holds consecutive
  sequence numbers ending at ``seq``, in order.
- One replayer per machine at a time (the file lock ``v1/state/purge-replay.lock``). A
  worker catches up before its first request, then every ``INTERVAL``.
- A node never skips a purge it cannot show it applied: when the log no longer reaches
  back to its position (trimmed), or Redis lost the log while this node was not watching
  it, the node purges everything it holds. ``decide`` is that rule, pure.
- A purge that cannot be logged (Redis unreachable) waits in ``v1/state/purge-pending``
  and is logged by the replayer once Redis is back.
- The periodic replay leaves a purge alone for its first ``GRACE`` seconds: the fan-out is
  bringing it to the nodes that are up, and two full scans of a cache for one tag purge
  would be wasted work. Catching up before serving takes every purge at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from wsgi_proxy.cluster.shared_tier import KEY_PREFIX, RedisLink
from wsgi_proxy.store import purge as purging
from wsgi_proxy.store.cache import Store
from wsgi_proxy.store.entry_file import TMP_PREFIX
from wsgi_proxy.store.fetch_locks import try_acquire
from wsgi_proxy.store.purge import Purge

if TYPE_CHECKING:
    from redis import Redis

log = logging.getLogger(__name__)

SEQ_KEY = f"{KEY_PREFIX}purge:seq"
LOG_KEY = f"{KEY_PREFIX}purge:log"
EPOCH_KEY = f"{KEY_PREFIX}purge:epoch"
LOG_LENGTH = 10_000
BATCH = 500
INTERVAL = 1.0
# A node that read the log within this many seconds of first failing to was watching it
# when Redis went away: what it could have missed then, the fan-out also brought it.
CONTINUITY = 3 * INTERVAL + 1.0
GRACE = 2.0
KEPT_COUNTS = 64

_APPEND = """
redis.call('SET', KEYS[3], ARGV[2], 'NX')
local seq = redis.call('INCR', KEYS[1])
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('RPUSH', KEYS[2], seq .. ' ' .. string.format('%d', ms) .. ' ' .. ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
return {seq, redis.call('GET', KEYS[3])}
"""
_READ = """
local epoch = redis.call('GET', KEYS[3])
if not epoch then
  redis.call('SET', KEYS[3], ARGV[3], 'NX')
  epoch = redis.call('GET', KEYS[3])
end
local head = tonumber(redis.call('GET', KEYS[1]) or '0')
local first = head - redis.call('LLEN', KEYS[2]) + 1
local from = tonumber(ARGV[1]) + 1
local entries = {}
if from >= first and from <= head then
  entries = redis.call('LRANGE', KEYS[2], from - first, from - first + tonumber(ARGV[2]) - 1)
end
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return {epoch, head, first, entries, string.format('%d', ms)}
"""


@dataclass(frozen=True, slots=True)
class NodeState:
    epoch: str
    applied: int
    ahead: tuple[int, ...] = ()
    checked_at: float = 0.0
    lost_at: float | None = None
    counts: tuple[tuple[int, int], ...] = ()
    """(sequence number, responses purged) of the last purges the replay applied."""


@dataclass(frozen=True, slots=True)
class LogView:
    """What one read of the log returned: the entries after the position asked for."""

    epoch: str
    head: int
    first: int
    entries: tuple[tuple[int, int, Purge | None], ...] = field(default=())
    """(sequence number, Redis time in ms when logged, the purge or None if unreadable)"""
    now_ms: int = 0


@dataclass(frozen=True, slots=True)
class UpToDate:
    pass


@dataclass(frozen=True, slots=True)
class Replay:
    """Apply the entries read (those not in ``ahead``)."""


@dataclass(frozen=True, slots=True)
class Adopt:
    """Take ``position`` in the log's epoch without applying anything."""

    position: int


@dataclass(frozen=True, slots=True)
class PurgeAll:
    """Purges may have been missed: purge everything, then take ``position``."""

    position: int
    reason: str


Decision = UpToDate | Replay | Adopt | PurgeAll


def decide(state: NodeState | None, view: LogView) -> Decision:
    """What a node at ``state`` does with the log as read in ``view``."""
    if state is None:
        return Adopt(view.head)  # first contact: nothing issued before can concern us
    if state.epoch != view.epoch:
        watching = state.lost_at is not None and state.lost_at - state.checked_at <= CONTINUITY
        if watching:
            return Adopt(0)  # Redis lost the log while we watched it: read the new one whole
        return PurgeAll(view.head, "Redis lost the purge log while this node was away")
    if view.head < state.applied:
        return PurgeAll(view.head, "the purge log went back in time")
    if view.head == state.applied:
        return UpToDate()
    if state.applied + 1 < view.first:
        return PurgeAll(view.head, "the purge log was trimmed past this node's position")
    return Replay()


class PurgeLog:
    """The purge log as one node uses it; any process on the node may hold one."""

    def __init__(self, link: RedisLink, store: Store, origin_url: str) -> None:
        self.link = link
        self.store = store
        self.origin_url = origin_url
        self.state_path = store.state / "purge-log.json"
        self.pending_path = store.state / "purge-pending"

    # A new FileLock each time: one object shared by threads would let them all in.
    def _replay_lock(self) -> FileLock:
        return FileLock(
            self.store.state / "purge-replay.lock", thread_local=False, preserve_lock_file=True
        )

    def _state_lock(self) -> FileLock:
        return FileLock(self.store.state / "purge-state.lock", timeout=10, thread_local=False,
                        preserve_lock_file=True)  # fmt: skip

    # ---- issuing ------------------------------------------------------------------------

    def append(self, purge: Purge) -> tuple[str, int] | None:
        """Log ``purge``; its (epoch, seq), or None when Redis is unavailable: then it is
        kept in the pending file and logged later."""
        logged = self._append(purge)
        if logged is None:
            with self._state_lock(), self.pending_path.open("a") as pending:
                pending.write(purge.to_json() + "\n")
            log.warning("purge %s %r not logged (Redis unavailable): kept pending",
                        purge.label, purge.value)  # fmt: skip
        return logged

    def _append(self, purge: Purge) -> tuple[str, int] | None:
        def run(client: Redis) -> Any:
            script = client.register_script(_APPEND)
            args: list[str | int] = [purge.to_json(), secrets.token_hex(8), LOG_LENGTH]
            return script(keys=[SEQ_KEY, LOG_KEY, EPOCH_KEY], args=args)

        answer = self.link.call("purge log", run)
        if answer is None:
            return None
        return answer[1].decode(), int(answer[0])

    def applied_count(self, epoch: str, seq: int) -> int | None:
        """How many responses the replay purged for this logged purge, if it applied it:
        the fan-out, arriving later, then reports that instead of scanning again."""
        state = self.load()
        if state is None or state.epoch != epoch or seq > state.applied or seq in state.ahead:
            return None
        return dict(state.counts).get(seq)

    def record_ahead(self, epoch: str, seq: int) -> None:
        """A purge of the log arrived by the fan-out and was applied: skip it on replay."""
        with self._state_lock():
            state = self.load()
            if state is not None and state.epoch == epoch and seq > state.applied:
                self._save(replace(state, ahead=tuple(sorted({*state.ahead, seq}))))

    # ---- replaying ----------------------------------------------------------------------

    def tick(self, wait: float = 0.0, grace: float = GRACE) -> None:
        """Log pending purges, then catch up with the log (but for purges younger than
        ``grace`` s), if no other process of this machine is doing it (waiting up to
        ``wait`` s for it)."""
        lock = self._replay_lock()
        if not try_acquire(lock, wait):
            return
        try:
            self._flush_pending()
            for _ in range(100):  # bounded: a long backlog continues at the next tick
                if not self._step(grace):
                    break
        finally:
            lock.release()

    def _step(self, grace: float) -> bool:
        """One read and what follows from it; True if there may be more to do."""
        state = self.load()
        view = self._read(state.applied if state else 0)
        if view is None:
            if state is not None and state.lost_at is None:
                self._update(lambda s: replace(s, lost_at=time.time()))
            return False
        decision = decide(state, view)
        match decision:
            case UpToDate():
                self._update(lambda s: replace(s, checked_at=time.time(), lost_at=None))
                return False
            case Adopt(position=position):
                log.info("purge log %s: starting at %d", view.epoch, position)
                self._set_position(view.epoch, position)
                return position < view.head
            case PurgeAll(position=position, reason=reason):
                log.warning("%s: purging everything this node holds", reason)
                # Through apply, as any purge: the status page lists it with the others.
                result = purging.apply(self.store, self.origin_url, Purge("all", ""))
                log.warning("purged %d stored responses; purge log %s at %d",
                            result.purged, view.epoch, position)  # fmt: skip
                self._set_position(view.epoch, position)
                return False
            case Replay():
                assert state is not None  # noqa: S101 - decide replays only from a state
                return self._replay(state, view, grace)

    def _replay(self, state: NodeState, view: LogView, grace: float) -> bool:
        last = state.applied
        counts: list[tuple[int, int]] = []
        for seq, logged_ms, purge in view.entries:
            if seq != last + 1:
                break  # not contiguous: read again from the last applied
            if view.now_ms - logged_ms < grace * 1000:
                break  # the fan-out is bringing it
            if purge is not None and seq not in state.ahead:
                result = purging.apply(self.store, self.origin_url, purge)
                counts.append((seq, result.purged))
                log.info("purge log %d: %s %r: %d stored responses",
                         seq, purge.label, purge.value, result.purged)  # fmt: skip
            last = seq
        self._update(lambda s: replace(
            s, applied=last, ahead=tuple(a for a in s.ahead if a > last),
            checked_at=time.time(), lost_at=None, counts=(*s.counts, *counts)[-KEPT_COUNTS:],
        ))  # fmt: skip
        return view.head > last > state.applied

    def _read(self, applied: int) -> LogView | None:
        def run(client: Redis) -> Any:
            script = client.register_script(_READ)
            args: list[str | int] = [applied, BATCH, secrets.token_hex(8)]
            return script(keys=[SEQ_KEY, LOG_KEY, EPOCH_KEY], args=args)

        answer = self.link.call("purge log", run)
        if answer is None:
            return None
        epoch, head, first, raw, now_ms = answer
        entries = tuple(_parse(e) for e in raw)
        return LogView(epoch.decode(), int(head), int(first), entries, int(now_ms))

    def _flush_pending(self) -> None:
        with self._state_lock():
            try:
                lines = self.pending_path.read_text().splitlines()
            except FileNotFoundError:
                return
            done = 0
            for line in lines:
                try:
                    purge = Purge.from_json(line)
                except ValueError:
                    done += 1
                    continue
                if self._append(purge) is None:
                    break
                done += 1
            if done == len(lines):
                self.pending_path.unlink()
            elif done:
                _replace_text(self.pending_path, "".join(f"{x}\n" for x in lines[done:]))
        if done:
            log.warning("logged %d purges that were pending while Redis was unavailable", done)

    # ---- state file ---------------------------------------------------------------------

    def load(self) -> NodeState | None:
        try:
            data = json.loads(self.state_path.read_text())
            return NodeState(
                str(data["epoch"]), int(data["applied"]), tuple(int(a) for a in data["ahead"]),
                float(data["checked_at"]),
                None if data["lost_at"] is None else float(data["lost_at"]),
                tuple((int(s), int(n)) for s, n in data.get("counts", ())),
            )  # fmt: skip
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Without its position the node cannot know what it missed: an epoch that
            # matches no log makes ``decide`` purge everything, then start afresh.
            log.warning("unreadable %s (%s): the node must start afresh", self.state_path, exc)
            return NodeState(epoch="", applied=0)

    def pending_count(self) -> int:
        try:
            return len(self.pending_path.read_text().splitlines())
        except OSError:
            return 0

    def _set_position(self, epoch: str, position: int) -> None:
        with self._state_lock():
            self._save(NodeState(epoch, position, (), time.time(), None))

    def _update(self, change: Any) -> None:
        with self._state_lock():
            state = self.load()
            if state is not None:
                self._save(change(state))

    def _save(self, state: NodeState) -> None:
        data = {"epoch": state.epoch, "applied": state.applied, "ahead": list(state.ahead),
                "checked_at": state.checked_at, "lost_at": state.lost_at,
                "counts": [list(pair) for pair in state.counts]}  # fmt: skip
        _replace_text(self.state_path, json.dumps(data))


def _parse(raw: bytes) -> tuple[int, int, Purge | None]:
    seq, logged_ms, text = [*raw.decode("utf-8", "replace").split(" ", 2), "", ""][:3]
    try:
        return int(seq), int(logged_ms), Purge.from_json(text)
    except ValueError:
        log.warning("ignoring unreadable purge log entry %r", raw[:80])
        return (int(seq) if seq.isdigit() else -1), 0, None


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
