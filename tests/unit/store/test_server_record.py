"""The server's record in its cache folder, and the folder looked at without a change."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from wsgi_proxy.core.config import Config, parse_origin
from wsgi_proxy.core.errors import ConfigError
from wsgi_proxy.store.cache import check_folder, check_folder_once
from wsgi_proxy.store.folder_check import folder_state
from wsgi_proxy.store.server_record import read_record, record_path, write_record


def _config(cache: Path, origin: str = "http://a.example:8000") -> Config:
    env = {"WSGI_PROXY_CACHE_DIR": str(cache), "WSGI_PROXY_ORIGIN": origin}
    return Config.from_env({**env, "WSGI_PROXY_MAX_SIZE": "5M"})


def test_record_keeps_every_origin_the_current_one_last(tmp_path: Path) -> None:
    config = _config(tmp_path / "c")
    check_folder(config.cache_dir)
    assert read_record(config.cache_dir) is None
    write_record(config)
    write_record(replace(config, origin=parse_origin("http://b.example")))
    write_record(config)  # a restart with the first origin again
    record = read_record(config.cache_dir)
    assert record is not None
    assert record.origins == ("http://b.example", "http://a.example:8000")
    assert record.origin == "http://a.example:8000"
    assert record.max_size == 5 * 1024 * 1024
    assert oct(record_path(config.cache_dir).stat().st_mode & 0o777) == oct(0o600)


@pytest.mark.parametrize(
    "text", ["", "{", "[]", '{"version": 2, "origins": ["x"]}', '{"version": 1, "origins": []}']
)
def test_a_record_that_is_none_reads_as_none(tmp_path: Path, text: str) -> None:
    config = _config(tmp_path / "c")
    check_folder(config.cache_dir)
    record_path(config.cache_dir).write_text(text)
    assert read_record(config.cache_dir) is None


def test_folder_state_changes_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "a" / "b"
    state = folder_state(missing)
    assert state.usable and "creates it" in state.detail
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("")
    assert not folder_state(tmp_path / "file").usable
    check_folder(tmp_path / "made")
    assert folder_state(tmp_path / "made").detail == "exists, writable, holds a cache"
    assert oct((tmp_path / "made").stat().st_mode & 0o777) == oct(0o700)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_folder_state_refuses_what_this_user_cannot_write(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert not folder_state(locked).usable
        assert not folder_state(locked / "cache").usable
    finally:
        locked.chmod(0o700)


def test_a_folder_found_usable_is_not_checked_again(tmp_path: Path) -> None:
    """What a worker forked after the master's check sees: the answer is kept, so a folder
    broken since fails no boot; one never checked is still refused, naming the setting."""
    checked, unchecked = tmp_path / "checked", tmp_path / "unchecked"
    check_folder_once(checked)
    shutil.rmtree(checked)
    checked.write_text("")  # unusable now: a file where the folder was
    unchecked.write_text("")
    check_folder_once(checked)
    for check, folder in [(check_folder, checked), (check_folder_once, unchecked)]:
        with pytest.raises(ConfigError, match="WSGI_PROXY_CACHE_DIR"):
            check(folder)
