"""Starting and restarting: the cache outlives the server, and the CLI starts a working
proxy."""

from __future__ import annotations

import sys
from pathlib import Path

from support.checks import assert_response
from support.origin import Origin
from support.proxy import ProxyFactory, free_port

BODY = b"kept across restarts"


def test_cached_entry_survives_a_restart(origin: Origin, proxy_factory: ProxyFactory) -> None:
    path = origin.route("/kept", headers=[("Cache-Control", "max-age=600")], body=BODY)
    first = proxy_factory()
    assert_response(first.get(path), cache="MISS", body=BODY)
    first.stop()

    second = proxy_factory()  # same cache folder, new gunicorn

    assert_response(second.get(path), cache="HIT", body=BODY)
    assert origin.count(path) == 1


def test_two_servers_share_one_cache_folder(origin: Origin, proxy_factory: ProxyFactory) -> None:
    path = origin.route("/both", headers=[("Cache-Control", "max-age=600")], body=BODY)
    one, two = proxy_factory(), proxy_factory()

    assert_response(one.get(path), cache="MISS", body=BODY)
    assert_response(two.get(path), cache="HIT", body=BODY)
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
