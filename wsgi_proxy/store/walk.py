"""The walks of a cache folder: ``walk`` hands out every folder and file under it, for the
cache manager's scans (manager.py), which count folders too; ``walk_files`` its files
alone, for the purges that must read every entry (purge.py) and the ban lurker
(lurker.py). Each folder is listed whole before its items are handed out, so that a file
published meanwhile is not met twice; a folder that cannot be read is skipped."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path


def walk(top: str) -> Iterator[tuple[str, os.DirEntry[str], bool]]:
    """Every folder and file under ``top`` (not ``top`` itself): its path relative to
    ``top``, its entry, and whether it is a folder (a symlink is not followed). An item
    whose type cannot be read is skipped."""
    folders = [""]
    while folders:
        rel_folder = folders.pop()
        try:
            with os.scandir(os.path.join(top, rel_folder)) as listing:
                items = list(listing)
        except OSError:
            continue
        for item in items:
            try:
                is_dir = item.is_dir(follow_symlinks=False)
            except OSError:
                continue
            rel = rel_folder + item.name
            if is_dir:
                folders.append(rel + "/")
            yield rel, item, is_dir


def walk_files(folder: Path) -> Iterator[os.DirEntry[str]]:
    """Every file under ``folder``, entries and writers' temporary files."""
    return (item for _, item, is_dir in walk(str(folder)) if not is_dir)
