"""The cache folder looked at without changing it: for ``check-config``, which must leave
the disk as it found it, and for the CLI commands that work on a folder a server uses.

Invariant: nothing here creates, writes or removes anything; the answers are this user's
(``os.access``), who may not be the user the server runs as.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from wsgi_proxy.store.cache import FORMAT


@dataclass(frozen=True, slots=True)
class FolderState:
    """Whether a server could use the folder, and why, in a phrase for a reader."""

    usable: bool
    detail: str


def folder_state(cache_dir: Path) -> FolderState:
    """What a server started now would find at ``cache_dir``, as far as this user can
    tell, without creating it."""
    if cache_dir.exists():
        if not cache_dir.is_dir():
            return FolderState(False, "exists but is not a folder")
        if not os.access(cache_dir, os.W_OK | os.X_OK):
            return FolderState(False, "exists but this user cannot write in it")
        used = "holds a cache" if has_cache(cache_dir) else "holds no cache yet"
        return FolderState(True, f"exists, writable, {used}")
    parent = cache_dir.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return FolderState(False, f"missing, and this user cannot create it in {parent}")
    return FolderState(True, "missing: the server creates it at start-up (mode 0700)")


def has_cache(cache_dir: Path) -> bool:
    """Whether a server has used ``cache_dir`` (its versioned folder exists)."""
    return (cache_dir / FORMAT).is_dir()
