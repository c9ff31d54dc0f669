"""Every default written down (the README's settings tables, and deploy/: the env file's
commented lines, and any other file there naming a setting's default) is the code's
(wsgi_proxy/core/config.py). A documented value is read by the code's own parser and
compared with what the code uses when the variable is not set, so ``1G`` matches
1073741824 and ``CDN-Cache-Control, Surrogate-Control`` the tuple."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from wsgi_proxy.core.config import PREFIX, Config
from wsgi_proxy.core.server_config import ServerConfig

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = {"HOME": "/home/wsgi-proxy"}  # the environment of a service user, nothing set
SETTINGS: dict[str, type[Config] | type[ServerConfig]] = {
    PREFIX + f.name.upper(): cls for cls in (Config, ServerConfig) for f in fields(cls)
}
# Where a file in deploy/ states a default: the env file's commented lines ("the
# commented ones show the defaults"), "WSGI_PROXY_X=v, the default", "WSGI_PROXY_X, 5 s".
DEPLOY_FORMS = [
    re.compile(r"^#(WSGI_PROXY_\w+)=(.*)$", re.MULTILINE),
    re.compile(r"\b(WSGI_PROXY_\w+)=(\S+), the default\b"),
    re.compile(r"\b(WSGI_PROXY_\w+), (\d+) s\b"),
]
README_ROW = re.compile(r"^\| `(WSGI_PROXY_\w+)` \| ([^|]*) \|", re.MULTILINE)


def _field(variable: str) -> str:
    return variable.removeprefix(PREFIX).lower()


def _value(variable: str, env: dict[str, str]) -> Any:
    return getattr(SETTINGS[variable].from_env({**BASE, **env}), _field(variable))


def _default(variable: str) -> Any:
    return _value(variable, {})


# Defaults computed from other settings, as the README words them, each with a check of
# that computation.
DERIVED: dict[str, tuple[str, Callable[[], bool]]] = {
    "WSGI_PROXY_CACHE_DIR": (
        "`$XDG_CACHE_HOME/wsgi_proxy` or `~/.cache/wsgi_proxy`",
        lambda: (
            _value("WSGI_PROXY_CACHE_DIR", {"XDG_CACHE_HOME": "/x"}) == Path("/x/wsgi_proxy")
            and _default("WSGI_PROXY_CACHE_DIR") == Path(BASE["HOME"], ".cache", "wsgi_proxy")
        ),
    ),
    "WSGI_PROXY_METRICS_DIR": (
        "`<cache folder>.metrics`",
        lambda: (
            _value("WSGI_PROXY_METRICS_DIR", {"WSGI_PROXY_CACHE_DIR": "/c"}) == Path("/c.metrics")
        ),
    ),
    "WSGI_PROXY_MAX_OBJECT_SIZE": (
        "half of `MAX_SIZE`",
        lambda: _value("WSGI_PROXY_MAX_OBJECT_SIZE", {"WSGI_PROXY_MAX_SIZE": "10M"}) == 5 * 1024**2,
    ),
}


def _deploy_defaults() -> list[tuple[str, str, str]]:
    """(file, variable, documented default) for every default stated in deploy/."""
    found = []
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        text, name = path.read_text(), str(path.relative_to(ROOT))
        for form in DEPLOY_FORMS:
            found += [(name, m.group(1), m.group(2)) for m in form.finditer(text)]
    return found


def _readme_defaults() -> list[tuple[str, str]]:
    return README_ROW.findall((ROOT / "README.md").read_text())


def test_the_documents_state_defaults_at_all() -> None:
    """The patterns above still find what they look for (else the tests below pass empty)."""
    files = {file for file, _, _ in _deploy_defaults()}
    assert {"deploy/wsgi-proxy.env", "deploy/nginx/wsgi-proxy.conf"} <= files
    assert {v for v, _ in _readme_defaults()} == set(SETTINGS)


@pytest.mark.parametrize(("file", "variable", "documented"), _deploy_defaults())
def test_each_default_in_deploy_is_the_codes(file: str, variable: str, documented: str) -> None:
    assert variable in SETTINGS, f"{file}: {variable} is not a setting"
    assert _value(variable, {variable: documented}) == _default(variable), (
        f"{file} gives {variable}={documented} as the default; the code's is {_default(variable)!r}"
    )


@pytest.mark.parametrize(("variable", "cell"), _readme_defaults())
def test_each_default_in_the_readme_is_the_codes(variable: str, cell: str) -> None:
    cell = cell.strip()
    literal = re.fullmatch(r"`([^`]*)`", cell)
    if variable in DERIVED:
        wording, check = DERIVED[variable]
        assert (cell, check()) == (wording, True)
    elif literal is not None:
        documented = literal.group(1)
        assert _value(variable, {variable: documented}) == _default(variable), (
            f"README gives {variable}={documented}; the code's default is {_default(variable)!r}"
        )
    else:
        assert cell.startswith("(none"), f"README: {variable}: default {cell!r} not understood"
        assert _value(variable, {variable: ""}) == _default(variable)
