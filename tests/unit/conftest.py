"""Fixtures for the unit tests of the store and its memos."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsgi_proxy.store.cache import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A prepared store in a fresh folder (8 lock stripes, 2 variants a URL)."""
    s = Store(tmp_path, lock_stripes=8, max_variants=2)
    s.prepare()
    return s
