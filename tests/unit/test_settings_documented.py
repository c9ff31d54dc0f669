"""Every setting is documented: in the README's tables and in deploy/wsgi-proxy.env."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from wsgi_proxy.core.config import PLACEHOLDER_TOKEN, PREFIX, Config
from wsgi_proxy.core.errors import ConfigError
from wsgi_proxy.core.server_config import ServerConfig

ROOT = Path(__file__).resolve().parents[2]
VARIABLES = [PREFIX + f.name.upper() for cls in (Config, ServerConfig) for f in fields(cls)]


@pytest.mark.parametrize("document", ["README.md", "deploy/wsgi-proxy.env"])
def test_every_variable_is_documented(document: str) -> None:
    text = (ROOT / document).read_text()
    missing = [v for v in VARIABLES if v not in text]
    assert missing == [], f"{document} does not mention {missing}"


def test_env_file_values_are_valid() -> None:
    lines = (ROOT / "deploy/wsgi-proxy.env").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    env["HOME"] = "/nonexistent"
    ServerConfig.from_env(env)
    # The admin token is a placeholder, refused until it is replaced (the next test).
    Config.from_env({**env, PREFIX + "ADMIN_TOKEN": "a-real-token"})


def test_env_file_admin_token_placeholder_is_refused() -> None:
    lines = (ROOT / "deploy/wsgi-proxy.env").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert env[PREFIX + "ADMIN_TOKEN"].startswith(PLACEHOLDER_TOKEN)
    with pytest.raises(ConfigError, match=PREFIX + "ADMIN_TOKEN"):
        Config.from_env({**env, "HOME": "/nonexistent"})
