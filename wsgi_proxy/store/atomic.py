"""A small state file replaced whole: written to a temporary file beside it (named with
the writers' ``TMP_PREFIX``, so scans skip it), then ``os.replace``: a reader sees the old
text or the new, never part of one."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from wsgi_proxy.store.entry_file import TMP_PREFIX


def replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
