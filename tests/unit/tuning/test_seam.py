"""The seam (wsgi_proxy/tuning/): the pinned versions are verified ones, the switch and the
version check decide, and start-up says why a tuning is off."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wsgi_proxy import tuning

TUNING_DIR = Path(tuning.__file__).parent


@pytest.mark.parametrize("library", sorted(tuning.VERIFIED))
def test_the_pinned_versions_are_verified_ones(library: str) -> None:
    """requirements.txt pins these: a version bump must come with a new reading of the
    library's internals each use relies on (USES), and this test says so."""
    assert tuning.is_verified(library), f"{library} {tuning.installed(library)}"


@pytest.mark.parametrize(
    ("library", "version", "verified"),
    [
        ("gunicorn", "27.0.1", True),
        ("gunicorn", "27.0", True),
        ("gunicorn", "27.1.0", False),
        ("gunicorn", "270.0.1", False),
        ("gunicorn", "23.0.0", False),
        ("urllib3", "2.8.0", True),
        ("urllib3", "2.2.3", False),
        ("python", "3.11.7", True),
        ("python", "3.12.1", False),
    ],
)
def test_version_check(library: str, version: str, verified: bool) -> None:
    assert tuning.is_verified(library, version) is verified


@pytest.mark.parametrize(
    ("installed", "version", "expected"),
    [
        ("23.0.0", "25.0", False),
        ("25.0.0", "25.0", True),
        ("25.0", "25.0.0", True),
        ("25.0b1", "25.0", True),
        ("27.0.1", "27.0", True),
        ("27.0.1", "27.1", False),
        ("2.10.0", "2.9", True),
    ],
)
def test_at_least_compares_release_numbers(
    monkeypatch: pytest.MonkeyPatch, installed: str, version: str, expected: bool
) -> None:
    monkeypatch.setattr(tuning, "installed", lambda _library: installed)
    assert tuning.is_at_least("gunicorn", version) is expected


def test_every_use_names_a_module_of_the_seam_and_a_checked_library() -> None:
    for use in tuning.USES:
        assert (TUNING_DIR / f"{use.module}.py").is_file(), use
        assert use.library in tuning.VERIFIED, use


def _seam_in_child(env: dict[str, str]) -> str:
    code = "from wsgi_proxy import tuning; print(tuning.is_tuned('gunicorn'), tuning.report())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True)  # fmt: skip
    return done.stdout.strip()


def test_the_setting_turns_every_tuning_off() -> None:
    out = _seam_in_child({"WSGI_PROXY_TUNING": "off", "PATH": "/usr/bin:/bin"})
    assert out.startswith("False ")
    assert "WSGI_PROXY_TUNING=off" in out


def test_on_by_default_with_nothing_to_report() -> None:
    assert _seam_in_child({"PATH": "/usr/bin:/bin"}) == "True []"


def test_a_library_not_verified_is_reported_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(tuning.VERIFIED, "urllib3", ("0.1",))
    lines = tuning.report()
    assert len(lines) == 1
    assert lines[0].startswith(f"urllib3 {tuning.installed('urllib3')} is not a version")
