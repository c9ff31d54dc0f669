"""The walks of a cache folder: ``walk`` hands out every folder and file under it;
``walk_counted`` adds each one's ``lstat``, for the cache manager's scans (manager.py),
which count folders too, and ``files_size`` and ``tree_size`` sum what ``du`` counts;
``walk_files`` hands out the files alone, for the purges that must read every entry
(purge.py) and the ban lurker (lurker.py). Each folder is listed whole before its items
are handed out, so that a file published meanwhile is not met twice; a folder that cannot
be read is skipped."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from wsgi_proxy.store.entry_file import TMP_PREFIX, disk_bytes, is_dead_tmp


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


def walk_counted(
    top: str, now: float, keep_tmp: bool = False
) -> Iterator[tuple[str, os.stat_result, bool]]:
    """Every folder and file under ``top`` (not ``top`` itself, walk.py's order): its path
    relative to ``top``, its ``lstat``, and whether it is a stored file. Dead writers'
    temporary files are removed (unless ``keep_tmp``); live ones count, but are not stored
    files."""
    for rel, item, is_dir in walk(top):
        try:
            stat = item.stat(follow_symlinks=False)
        except OSError:
            continue
        if is_dir:
            yield rel, stat, False
        elif not item.name.startswith(TMP_PREFIX):
            yield rel, stat, True
        elif not keep_tmp and is_dead_tmp(item.name, stat.st_mtime, now):
            with contextlib.suppress(OSError):
                os.unlink(item.path)
        else:
            yield rel, stat, False


def files_size(folder: Path) -> int:
    total = 0
    with contextlib.suppress(OSError), os.scandir(folder) as listing:
        for item in listing:
            with contextlib.suppress(OSError):
                total += disk_bytes(item.stat(follow_symlinks=False))
    return total


def tree_size(top: str) -> int:
    total = 0
    with contextlib.suppress(OSError):
        total += disk_bytes(os.lstat(top))
    for _, stat, _ in walk_counted(top, 0.0, keep_tmp=True):
        total += disk_bytes(stat)
    return total
