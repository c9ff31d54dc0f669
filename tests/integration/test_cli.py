"""The ``caching-proxy`` commands an operator runs beside a server: ``purge``, ``stats`` and
``--clear-cache`` find what the server stored without restating its settings;
``check-config`` checks the server's settings too, warns about unknown names and changes
nothing on disk. Real gunicorn with two workers, started by the CLI with flags."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support.cli import CLI, run_cli
from support.origin import Origin
from support.proxy import ProxyFactory, ProxyProcess, proxy_env

from wsgi_proxy.core.config import PREFIX
from wsgi_proxy.store.purge import BANNED

CACHED = [("Cache-Control", "max-age=600")]
UNREACHABLE = "http://127.0.0.1:9"  # the origin the server's environment names: never used


def shell_env(**settings: str) -> dict[str, str]:
    """An operator's shell: none of the server's WSGI_PROXY_* settings, but ``settings``."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(PREFIX) or k == PREFIX + "TUNING"
    }
    return {**env, **{PREFIX + name: value for name, value in settings.items()}}


def started_with_flags(
    factory: ProxyFactory, origin: Origin, cache: Path, **env: str
) -> ProxyProcess:
    """A server started as ``caching-proxy --origin URL --cache-dir DIR``: its environment
    names another origin, which the flag overrides."""

    def command(port: int) -> list[str]:
        return [*CLI, "--port", str(port), "--origin", origin.url, "--cache-dir", str(cache),
                "--workers", "2"]  # fmt: skip

    return factory(env, origin=UNREACHABLE, cache_dir=cache, command=command)


def test_purge_finds_what_a_server_started_with_flags_stored(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path
) -> None:
    cache = tmp_path / "flagged"
    proxy = started_with_flags(proxy_factory, origin, cache)
    one = origin.route("/cli/one", headers=CACHED, body=b"one")
    two = origin.route("/cli/dir/two", headers=CACHED, body=b"two")
    for path in (one, two):
        assert proxy.get(path).x_cache == "MISS"
        assert proxy.get(path).x_cache == "HIT"
    # The shell knows the cache folder (the case), not the origin the flag gave.
    done = run_cli(["purge", one], shell_env(CACHE_DIR=str(cache)))
    assert (done.returncode, done.stdout) == (0, "purged 1\n"), done.stderr
    assert proxy.get(one).x_cache == "MISS"
    # Nothing of the server's settings, the folder as a flag.
    done = run_cli(["purge", "--cache-dir", str(cache), "--prefix", origin.prefix + "/cli/dir/"],
                   shell_env())  # fmt: skip
    assert (done.returncode, done.stdout) == (0, BANNED + "\n"), done.stderr
    assert proxy.get(two).x_cache == "MISS"
    assert proxy.get(one).x_cache == "HIT"
    assert (origin.count(one), origin.count(two)) == (2, 2)


def test_a_url_purge_that_matches_nothing_says_so(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path
) -> None:
    cache = tmp_path / "flagged"
    proxy = started_with_flags(proxy_factory, origin, cache)
    kept = origin.route("/kept", headers=CACHED, body=b"kept")
    proxy.get(kept)
    env = shell_env(CACHE_DIR=str(cache))
    done = run_cli(["purge", origin.prefix + "/never"], env)
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert done.stdout == "purged 0\n"
    assert "nothing stored matched" in done.stderr
    assert origin.url in done.stderr  # the origin it searched for
    # Bans answer before anything is looked at: they cannot know their count (exit 0).
    for args in (["purge", "--prefix", "/nothing/"], ["purge", "--tag", "none"]):
        done = run_cli(args, env)
        assert (done.returncode, done.stdout, done.stderr) == (0, BANNED + "\n", ""), args
    assert proxy.get(kept).x_cache == "HIT"


@pytest.mark.parametrize("command", [["purge", "/a"], ["stats"], ["--clear-cache"]])
def test_commands_refuse_a_folder_no_server_used_and_create_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    folder = tmp_path / "not-a-cache"
    done = run_cli([*command, "--cache-dir", str(folder)], shell_env())
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"no cache at {folder}" in done.stderr
    assert not folder.exists()


def test_stats_and_clear_use_the_servers_record(
    proxy_factory: ProxyFactory, origin: Origin, tmp_path: Path
) -> None:
    cache = tmp_path / "flagged"
    proxy = started_with_flags(proxy_factory, origin, cache, WSGI_PROXY_MAX_SIZE="5M")
    path = origin.route("/stats", headers=CACHED, body=b"s" * 2000)
    proxy.get(path)
    done = run_cli(["stats", "--cache-dir", str(cache)], shell_env())
    assert done.returncode == 0, done.stderr
    figures = {}
    for line in done.stdout.splitlines():
        setting, comment = line.split("  # ", 1)
        name, value = setting.split("=", 1)
        figures[name] = value
        assert comment  # every figure is explained
    assert figures["files"] == "1"
    assert figures["limit_bytes"] == str(5 * 1024 * 1024)  # the server's, not the default
    assert figures["origins"] == origin.url
    assert int(figures["bytes"]) > 2000
    assert "(5.0 MiB)" in done.stdout
    cleared = run_cli(["--clear-cache", "--cache-dir", str(cache)], shell_env())
    assert cleared.returncode == 0, cleared.stderr
    assert proxy.get(path).x_cache == "MISS"


def check_config(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = proxy_env("http://127.0.0.1:8000", tmp_path / "new" / "cache")
    return run_cli(["check-config"], {**env, **{PREFIX + k: v for k, v in settings.items()}})


# A server setting, a bad value for it: check-config refuses it naming the variable.
BAD_SERVER_SETTINGS = [
    ("BIND", "nonsense"),
    ("BIND", "127.0.0.1:99999"),
    ("BIND", "127.0.0.1"),
    ("WORKERS", "0"),
    ("THREADS", "many"),
    ("LOG_FORMAT", "xml"),
    ("ADMIN_TOKEN", "change-me-to-a-long-random-string"),  # deploy/wsgi-proxy.env's
]


@pytest.mark.parametrize(("name", "value"), BAD_SERVER_SETTINGS)
def test_check_config_refuses_bad_server_settings(tmp_path: Path, name: str, value: str) -> None:
    done = check_config(tmp_path, **{name: value})
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert f"{PREFIX}{name}" in done.stderr


def test_check_config_prints_server_settings_and_changes_nothing(tmp_path: Path) -> None:
    done = check_config(tmp_path, BIND="0.0.0.0:8081", WORKERS="3", ORGIN="http://x")
    assert done.returncode == 0, done.stderr
    assert f"{PREFIX}BIND=0.0.0.0:8081\n" in done.stdout
    assert f"{PREFIX}WORKERS=3\n" in done.stdout
    assert f"{PREFIX}LOG_FORMAT=text\n" in done.stdout
    assert f"{PREFIX}ORGIN is not a setting" in done.stderr
    assert f"did you mean {PREFIX}ORIGIN?" in done.stderr
    assert "the server creates it" in done.stdout
    assert list(tmp_path.iterdir()) == []  # not even the cache folder's parent


def test_server_warns_about_unknown_names_at_start_up(proxy_factory: ProxyFactory) -> None:
    proxy = proxy_factory({"WSGI_PROXY_ORGIN": "http://typo.example"})
    assert proxy.get("/_wsgi_proxy/health").status == 200
    assert f"{PREFIX}ORGIN is not a setting" in proxy.stderr(200)


@pytest.mark.parametrize("command", [["stats"], ["check-config"], ["purge"], []])
def test_every_command_answers_help(command: list[str]) -> None:
    done = run_cli([*command, "--help"], shell_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: caching-proxy {' '.join(command)}".rstrip())


def test_version() -> None:
    done = run_cli(["--version"], shell_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("caching-proxy 0.") and "gunicorn" in done.stdout
