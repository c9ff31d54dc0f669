"""The server settings' checks: listen addresses, and the names that are no setting."""

from __future__ import annotations

import pytest

from wsgi_proxy.core.config import PREFIX
from wsgi_proxy.core.errors import ConfigError
from wsgi_proxy.core.server_config import (
    KNOWN,
    ServerConfig,
    describe_server,
    parse_bind,
    unknown_settings,
)

GOOD_BINDS = [
    "127.0.0.1:8080",
    "0.0.0.0:80",
    "localhost:8080",
    "proxy-1.internal:65535",
    "[::1]:8080",
    "[::]:8080",
    "unix:/run/wsgi-proxy.sock",
    "fd://3",
]
BAD_BINDS = [
    "nonsense",  # gunicorn would take it for a host on port 8000
    "127.0.0.1",
    "127.0.0.1:",
    "127.0.0.1:0",
    "127.0.0.1:65536",
    ":8080",
    "::1:8080",  # an IPv6 address needs its brackets
    "[127.0.0.1]:8080",
    "[nope]:8080",
    "host name:8080",
    "unix:",
    "fd://x",
    "http://127.0.0.1:8080",
]


@pytest.mark.parametrize("bind", GOOD_BINDS)
def test_good_binds_pass(bind: str) -> None:
    assert parse_bind(bind) == bind
    assert ServerConfig.from_env({PREFIX + "BIND": bind}).bind == bind


@pytest.mark.parametrize("bind", BAD_BINDS)
def test_bad_binds_are_refused_naming_the_variable(bind: str) -> None:
    with pytest.raises(ConfigError, match=PREFIX + "BIND"):
        ServerConfig.from_env({PREFIX + "BIND": bind})


# environment -> the names warned about, and the name suggested for each (or None)
UNKNOWN = [
    ({PREFIX + "ORIGIN": "x", "HOME": "/"}, []),
    ({PREFIX + "ORGIN": "x"}, [(PREFIX + "ORGIN", PREFIX + "ORIGIN")]),
    ({PREFIX + "WORKER": "2"}, [(PREFIX + "WORKER", PREFIX + "WORKERS")]),
    ({PREFIX + "LOGFORMAT": "json"}, [(PREFIX + "LOGFORMAT", PREFIX + "LOG_FORMAT")]),
    ({PREFIX + "SOMETHING_ELSE": "1"}, [(PREFIX + "SOMETHING_ELSE", None)]),
    ({"OTHER_ORGIN": "x"}, []),  # not ours
]


@pytest.mark.parametrize(("env", "expected"), UNKNOWN)
def test_unknown_names_are_warned_about(
    env: dict[str, str], expected: list[tuple[str, str | None]]
) -> None:
    warnings = unknown_settings(env)
    assert len(warnings) == len(expected), warnings
    for warning, (name, suggested) in zip(warnings, expected, strict=True):
        assert warning.startswith(f"{name} is not a setting")
        assert (f"did you mean {suggested}?" in warning) if suggested else "mean" not in warning


def test_every_server_setting_is_known_and_described() -> None:
    rows = describe_server(ServerConfig.from_env({}))
    assert {name for name, _ in rows} <= KNOWN
    assert (PREFIX + "REUSE_PORT", "on") in rows
    assert (PREFIX + "BIND", "127.0.0.1:8080") in rows
