"""A walk of every file under a folder of the cache, for the purges that must read every
entry (purge.py) and the ban lurker (lurker.py); the cache manager walks with its own
(manager.py), which counts folders too."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


def walk_files(folder: Path) -> Iterator[os.DirEntry[str]]:
    """Every file under ``folder``, entries and writers' temporary files. Each folder is
    listed whole before its files are handed out, so that a file published meanwhile is
    not met twice; a folder that cannot be read is skipped."""
    folders = [str(folder)]
    while folders:
        try:
            with os.scandir(folders.pop()) as listing:
                items = list(listing)
        except OSError:
            continue
        for item in items:
            with contextlib.suppress(OSError):
                if item.is_dir(follow_symlinks=False):
                    folders.append(item.path)
                else:
                    yield item
