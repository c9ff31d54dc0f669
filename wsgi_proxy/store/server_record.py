"""The settings a CLI command needs from the server that uses a cache folder, recorded in
the folder itself (``v1/state/server``) when the server starts, so that ``purge``,
``stats`` and ``--clear-cache`` work on what the server stored without the operator
restating how the server was started (``--origin``, the environment file of its unit).

The record holds every origin the folder has been served for (a key holds its origin,
keys.py, so a path purge must try each), the size limit and the store's shape. It holds
no secret (no token, no Redis password).

Invariants:
- Written by the master at start-up (server/settings.py ``on_starting``), after the folder
  is checked, atomically (a temporary file, then ``os.replace``): a reader sees a whole
  record or the one before.
- An origin once recorded stays listed until the folder is cleared of it by hand (removing
  the file): entries of a previous origin may still be stored.
- Read only by the CLI, never on the request path; a missing or unreadable record is None.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from wsgi_proxy.core.config import Config
from wsgi_proxy.store.cache import state_folder

VERSION = 1
MAX_ORIGINS = 100  # the oldest go first past this: a record is not a history


@dataclass(frozen=True, slots=True)
class ServerRecord:
    """What the last server started on the folder was configured with."""

    origins: tuple[str, ...]  # every origin served from this folder, the current one last
    max_size: int
    max_object_size: int
    lock_stripes: int
    max_variants: int

    @property
    def origin(self) -> str:
        return self.origins[-1]


def record_path(cache_dir: Path) -> Path:
    return state_folder(cache_dir) / "server"


def write_record(config: Config) -> ServerRecord:
    """Record ``config``'s settings in its cache folder (which ``check_folder`` made),
    keeping the origins recorded before. ``OSError`` if it cannot be written."""
    before = read_record(config.cache_dir)
    current = config.origin.url
    kept = [o for o in (before.origins if before else ()) if o != current]
    record = ServerRecord(
        origins=(*kept[-(MAX_ORIGINS - 1) :], current),
        max_size=config.max_size,
        max_object_size=config.max_object_size,
        lock_stripes=config.lock_stripes,
        max_variants=config.max_variants,
    )
    path = record_path(config.cache_dir)
    data = {"version": VERSION, **{name: getattr(record, name) for name in _FIELDS}}
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=1)
            out.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return record


def read_record(cache_dir: Path) -> ServerRecord | None:
    """The folder's record; None when there is none or it cannot be read as one."""
    try:
        data = json.loads(record_path(cache_dir).read_text())
        if data.get("version") != VERSION:
            return None
        origins = tuple(str(o) for o in data["origins"])
        numbers = [int(data[name]) for name in _FIELDS[1:]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not origins:
        return None
    return ServerRecord(origins, *numbers)


_FIELDS = ("origins", "max_size", "max_object_size", "lock_stripes", "max_variants")
