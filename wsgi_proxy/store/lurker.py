"""The ban lurker: applies the bans (bans.py) to the files themselves, in the background,
so that space is reclaimed and the ban list stays short (Varnish's ban lurker).

``lurk`` is a step: each call walks the 256 first-level folders of ``objects`` in order,
from where the last step stopped, for about its time budget (at least one response and
its variants), reads each entry's header, removes the hard-banned responses (through the
store, so usage is counted) and marks the soft-banned ones soft-purged (as a soft purge
does). When a whole pass has finished, the bans that
were in the list when it started are dropped from the file: every file published before
them has been reached.

Invariants:
- Runs in one process at a time: the cache manager's (manager.py), which holds
  ``state/manager.lock``. Its progress (``state/lurker``, replaced whole) is kept on disk,
  so a pass goes on after the manager is restarted.
- With no ban in the list it reads nothing but the mapped generation counter.
- Counts are truthful as far as the lurker can tell: each file it removes or marks is
  counted once, for the (oldest hard, else oldest soft) ban that covered it, in the
  metrics as it goes (``on_purged``) and in the ban's record on the status page when the
  ban is dropped. A banned response that a request fetched anew before the lurker reached
  it was replaced, not removed, and is not counted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from wsgi_proxy.store.atomic import replace_text
from wsgi_proxy.store.bans import Ban
from wsgi_proxy.store.cache import Store
from wsgi_proxy.store.entry_file import TMP_PREFIX
from wsgi_proxy.store.hits import identity_of
from wsgi_proxy.store.purge import read_meta, soft_purge
from wsgi_proxy.store.recent_purges import RecentPurges
from wsgi_proxy.store.walk import walk_files

log = logging.getLogger(__name__)

FOLDERS = 256  # objects/00 .. objects/ff
BUDGET = 0.05  # seconds a step goes on taking folders for, after its first


@dataclass(slots=True)
class Pass:
    """A pass in progress: the bans it started with, the next folder and the last name done
    in it, counts by ban."""

    bans: list[int] = field(default_factory=list)  # their time_ns
    next: int = 0
    counts: dict[int, int] = field(default_factory=dict)
    after: str = ""


def lurk(
    store: Store,
    on_purged: Callable[[str, int], None] | None = None,
    budget: float = BUDGET,
) -> bool:
    """One step of the lurker; True while bans remain (call again), False when none."""
    bans = store.bans.current()
    state = store.state / "lurker"
    if not bans.bans:
        with contextlib.suppress(FileNotFoundError):
            state.unlink()
        return False
    progress = _load(state) or Pass([b.time_ns for b in bans.bans])
    deadline = time.monotonic() + budget
    while progress.next < FOLDERS:
        folder = store.objects / f"{progress.next:02x}"
        counted, stopped = _lurk_folder(store, folder, progress, deadline)
        if on_purged is not None:
            for label, count in counted.items():
                on_purged(label, count)
        if stopped is None:
            progress.next, progress.after = progress.next + 1, ""
        else:
            progress.after = stopped
        if time.monotonic() > deadline:
            break
    if progress.next < FOLDERS:
        _save(state, progress)
        return True
    _finish(store, progress)
    with contextlib.suppress(FileNotFoundError):
        state.unlink()
    return bool(store.bans.current().bans)


def _lurk_folder(
    store: Store, folder: Path, progress: Pass, deadline: float
) -> tuple[dict[str, int], str | None]:
    """Remove or mark the banned responses under ``folder``, by name after
    ``progress.after``, until ``deadline``: counts by metrics label, and the last name done
    (None when the folder is done). By name, so that a resumed step neither skips a file
    that was there when the pass began nor needs the listing to stay the same; a
    response's variants (``<name>.d``) go with it."""
    counted: dict[str, int] = {}
    try:
        with os.scandir(folder) as listing:
            names = sorted(e.name for e in listing if not e.name.startswith(TMP_PREFIX))
    except OSError:
        return counted, None  # no such folder yet: nothing in it
    for name in names:
        if name <= progress.after:
            continue
        path = folder / name
        files = [path] if not name.endswith(".d") else [
            Path(item.path) for item in walk_files(path) if not item.name.startswith(TMP_PREFIX)
        ]  # fmt: skip
        for file in files:
            ban = _lurk_file(store, file)
            if ban is not None:
                progress.counts[ban.time_ns] = progress.counts.get(ban.time_ns, 0) + 1
                counted[ban.label] = counted.get(ban.label, 0) + 1
        if time.monotonic() > deadline and name != names[-1]:
            return counted, name
    return counted, None


def _lurk_file(store: Store, path: Path) -> Ban | None:
    """The ban the response at ``path`` was removed or marked for, or None."""
    bans = store.bans.current()  # a ban added during the walk applies at once
    try:
        identity = identity_of(os.stat(path))
    except OSError:
        return None
    meta = read_meta(path, remember=False)  # the worker's memo keeps its hot headers
    if meta is None or meta.get("kind") != "response":
        return None
    ban = bans.verdict(meta) if bans.bans else None
    if ban is None or (ban.soft and meta.get("soft_purged")):
        return None
    return ban if _apply(store, path, identity, ban) else None


def _apply(store: Store, path: Path, identity: tuple[int, int, int], ban: Ban) -> bool:
    if ban.soft:  # only the file judged: a 304 may have refreshed it since, after the ban
        return soft_purge(store, path, identity)
    try:
        # A response published there since the header was read came after the ban.
        if identity_of(os.stat(path)) != identity:
            return False
    except OSError:
        return False
    store.remove(path)
    return True


def _finish(store: Store, progress: Pass) -> None:
    """Drop the bans the pass started with; settle their records on the status page."""
    started = set(progress.bans)
    done = [ban for ban in store.bans.read() if ban.time_ns in started]
    store.bans.drop(done)
    recent = RecentPurges(store.state)
    for ban in done:
        count = progress.counts.get(ban.time_ns, 0)
        recent.settle(ban.time, ban.kind, count)
        log.info("ban %s %r done: %d stored responses", ban.label, ban.value, count)


def _load(path: Path) -> Pass | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Pass([int(t) for t in data["bans"]], int(data["next"]),
                    {int(k): int(v) for k, v in data["counts"].items()},
                    str(data.get("after", "")))  # fmt: skip
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("starting the lurker's pass again: %s unreadable (%s)", path, exc)
        return None


def _save(path: Path, progress: Pass) -> None:
    text = json.dumps({"bans": progress.bans, "next": progress.next, "after": progress.after,
                       "counts": {str(k): v for k, v in progress.counts.items()}})  # fmt: skip
    replace_text(path, text)
