"""The package as pip builds it from this folder (not the editable install the tests
use): every module and data file of ``wsgi_proxy/`` is in the wheel, and the
``caching-proxy`` command is declared."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DATA_SUFFIXES = {".py", ".typed", ".html"}


@pytest.mark.slow
def test_the_wheel_holds_every_module_and_data_file(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps",
         "--quiet", "--disable-pip-version-check", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("wsgi_proxy-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(
            archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt")
        )
    source = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "wsgi_proxy").rglob("*")
        if path.suffix in DATA_SUFFIXES and "__pycache__" not in path.parts
    }
    assert source - names == set()
    assert "wsgi_proxy/flow/proxy_app.py" in names
    assert "caching-proxy = wsgi_proxy.cli:main" in entry_points
