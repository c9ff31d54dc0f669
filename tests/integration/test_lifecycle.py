"""Starting and restarting: the cache outlives the server, and the CLI starts a working
proxy."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from support.checks import assert_response
from support.origin import Origin
from support.proxy import ProxyFactory, free_port, proxy_env

BODY = b"kept across restarts"
# Each server listens on a port of its own; clients name the site they ask for (the Host
# nginx would send), which keys the entry whatever port answered.
SITE = [("Host", "shop.example")]


def test_cached_entry_survives_a_restart(origin: Origin, proxy_factory: ProxyFactory) -> None:
    path = origin.route("/kept", headers=[("Cache-Control", "max-age=600")], body=BODY)
    first = proxy_factory()
    assert_response(first.get(path, SITE), cache="MISS", body=BODY)
    first.stop()

    second = proxy_factory()  # same cache folder, new gunicorn (on another port)

    assert_response(second.get(path, SITE), cache="HIT", body=BODY)
    assert origin.count(path) == 1


def test_two_servers_share_one_cache_folder(origin: Origin, proxy_factory: ProxyFactory) -> None:
    path = origin.route("/both", headers=[("Cache-Control", "max-age=600")], body=BODY)
    one, two = proxy_factory(), proxy_factory()

    assert_response(one.get(path, SITE), cache="MISS", body=BODY)
    assert_response(two.get(path, SITE), cache="HIT", body=BODY)
    assert origin.count(path) == 1


def test_cli_with_port_and_origin_flags_serves(origin: Origin, proxy_factory: ProxyFactory) -> None:
    path = origin.route("/cli", headers=[("Cache-Control", "max-age=60")], body=BODY)
    dead_origin = f"http://127.0.0.1:{free_port()}"  # the flag must win over the variable

    proxy = proxy_factory(
        origin=dead_origin,
        command=lambda port: [
            sys.executable, "-m", "wsgi_proxy", "--port", str(port), "--origin", origin.url
        ],
    )  # fmt: skip

    assert_response(proxy.get(path), cache="MISS", body=BODY)
    assert_response(proxy.get(path), cache="HIT", body=BODY)
    assert origin.count(path) == 1


def test_cli_with_a_bare_port_serves(origin: Origin, proxy_factory: ProxyFactory) -> None:
    path = origin.route("/bare", headers=[("Cache-Control", "max-age=60")], body=BODY)

    proxy = proxy_factory(command=lambda port: [sys.executable, "-m", "wsgi_proxy", str(port)])

    assert_response(proxy.get(path), cache="MISS", body=BODY)
    assert_response(proxy.get(path), cache="HIT", body=BODY)
    assert origin.count(path) == 1


def installed_script() -> str:
    """The ``caching-proxy`` executable pip made from the package's entry point, in the
    environment's bin folder beside its python (not resolved: a venv's python is a link)."""
    (script,) = entry_points(group="console_scripts", name="caching-proxy")
    assert script.value == "wsgi_proxy.cli:main"
    path = Path(sys.executable).parent / "caching-proxy"
    assert os.access(path, os.X_OK), f"{path} is not installed: pip install -e ."
    return str(path)


def test_the_installed_caching_proxy_command(
    origin: Origin, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    """Run as a user would: serve with flags, empty the cache, check a bad setting."""
    command = installed_script()
    path = origin.route("/script", headers=[("Cache-Control", "max-age=60")], body=BODY)
    cache = tmp_path / "script-cache"
    proxy = proxy_factory(
        origin=f"http://127.0.0.1:{free_port()}",  # the --origin flag must win
        cache_dir=cache,
        command=lambda port: [command, "--port", str(port), "--origin", origin.url],
    )
    assert_response(proxy.get(path), cache="MISS", body=BODY)
    assert_response(proxy.get(path), cache="HIT", body=BODY)
    assert origin.count(path) == 1

    env = proxy_env(origin.url, cache)
    cleared = subprocess.run(
        [command, "--clear-cache"], env=env, capture_output=True, text=True, timeout=30
    )
    assert (cleared.returncode, cleared.stdout) == (
        0,
        f"cleared {cache}: the old files are deleted in the background\n",
    ), cleared.stderr
    assert_response(proxy.get(path), cache="MISS", body=BODY)
    assert origin.count(path) == 2

    bad = {**env, "WSGI_PROXY_MAX_SIZE": "lots"}
    checked = subprocess.run(
        [command, "check-config"], env=bad, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "WSGI_PROXY_MAX_SIZE" in checked.stderr


def test_plain_gunicorn_without_the_settings_says_so(
    origin: Origin, proxy_factory: ProxyFactory, tmp_path: Path
) -> None:
    """Started away from gunicorn.conf.py without ``-c`` (a file without the proxy's settings
    here stands for none), gunicorn runs its sync worker: the proxy serves, and warns at its
    first request that a slow client can stop it (README, Running it)."""
    path = origin.route("/plain", headers=[("Cache-Control", "max-age=60")], body=BODY)
    no_settings = tmp_path / "none.conf.py"
    no_settings.write_text("control_socket_disable = True  # one path per user: not shared\n")

    proxy = proxy_factory(
        command=lambda port: [
            sys.executable, "-m", "gunicorn", "-c", str(no_settings), "wsgi_proxy:app",
            "-b", f"127.0.0.1:{port}",
        ],
    )  # fmt: skip

    assert_response(proxy.get(path), cache="MISS", body=BODY)
    assert "Using worker: sync" in proxy.stderr(200)
    assert "without its settings (gunicorn.conf.py)" in proxy.stderr(200)
