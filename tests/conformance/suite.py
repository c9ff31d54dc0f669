"""The npm package http-cache-tests: install it, read its test definitions, run its parts.

The package is pinned by name and version and installed with npm into `INSTALL_PREFIX`, a
git-ignored folder of this repository, once per version. The 0.4.5 command-line client is
configured only through npm-style environment variables (npm_config_base, npm_config_id and
their npm_package_config_* fallbacks), so every node process here gets a clean set of them.
The small .mjs/.cjs shims next to this file adapt the package without changing it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import processes
from .scoring import TestDef, parse_definitions

PACKAGE = "http-cache-tests"
VERSION = "0.4.5"
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
INSTALL_PREFIX = REPO / ".cache" / PACKAGE
_NPM_ENV_PREFIXES = ("npm_config_", "npm_package_config_")


@dataclass(frozen=True)
class Suite:
    """An installed copy of the package and the node binary that runs it."""

    node: str
    package: Path

    def definitions(self) -> dict[str, TestDef]:
        """Every test definition, by id (dump-tests.mjs)."""
        argv = [self.node, str(HERE / "dump-tests.mjs"), str(self.package)]
        done = subprocess.run(argv, env=node_env(), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"could not load the {PACKAGE} test definitions:\n{done.stderr}")
        return parse_definitions(done.stdout)

    def start_origin(self, port: int, workdir: Path) -> processes.Child:
        """The suite's origin server on 127.0.0.1:`port` (origin.mjs forces loopback)."""
        env = node_env(
            npm_config_port=str(port),
            npm_config_protocol="http",
            # the server writes its PID here; the default is a file in the package folder
            npm_config_pidfile=str(workdir / "origin.pid"),
        )
        argv = [self.node, str(HERE / "origin.mjs"), str(self.package)]
        return processes.start("origin", argv, workdir / "origin.log", env, cwd=self.package)

    def run_client(self, base: str, workdir: Path, timeout: float) -> dict[str, object]:
        """Run every test against `base` (no trailing slash); the results by test id.

        The 0.4.5 client has no per-request timeout, and it may linger after printing its
        results while a connection stays open: it is stopped once its output is complete
        JSON, or after `timeout` seconds, which fails the test.
        """
        env = node_env(
            npm_config_base=base,
            npm_package_config_base=base,
            # both set and empty: an unset id makes cli.mjs run the one test "undefined"
            npm_config_id="",
            npm_package_config_id="",
        )
        argv = [self.node, "--no-warnings", "--require", str(HERE / "client-preload.cjs")]
        argv.append(str(self.package / "cli.mjs"))
        out = workdir / "client.out"
        client = processes.start(
            "client", argv, workdir / "client.log", env, cwd=self.package, stdout=out
        )
        deadline = time.monotonic() + timeout
        try:
            while (results := _complete_results(out)) is None:
                if client.process.poll() is not None:
                    if (results := _complete_results(out)) is not None:
                        break
                    pytest.fail(
                        f"the {PACKAGE} client exited with {client.process.returncode} "
                        f"without complete results:\n{client.log_tail()}\n{_tail(out)}"
                    )
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"the {PACKAGE} client was still running after {timeout} s "
                        f"(a response stalled?):\n{client.log_tail()}"
                    )
                time.sleep(0.5)
        finally:
            processes.stop(client)
        return results


def install(prefix: Path = INSTALL_PREFIX) -> Suite:
    """The package at `VERSION` under `prefix`, installed with npm unless already there.

    Fails (does not skip) without node and npm: CI installs them, and a silently skipped
    conformance run would hide a regression.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            f"the conformance test needs Node.js and npm on PATH to run {PACKAGE}@{VERSION} "
            "(install them, e.g. `apt-get install nodejs npm`; tests/run.sh does this in CI)"
        )
    package = prefix / "node_modules" / PACKAGE
    if _installed_version(package) != VERSION:
        prefix.mkdir(parents=True, exist_ok=True)
        argv = [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund"]
        argv += ["--loglevel=error", f"{PACKAGE}@{VERSION}"]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{' '.join(argv)}` did not finish in 300 s")
        if done.returncode != 0 or _installed_version(package) != VERSION:
            pytest.fail(f"`{' '.join(argv)}` failed:\n{done.stdout}\n{done.stderr}")
    return Suite(node, package)


def node_env(**settings: str) -> dict[str, str]:
    """This process's environment without npm configuration variables, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith(_NPM_ENV_PREFIXES)}
    return env | settings


def _installed_version(package: Path) -> str | None:
    try:
        manifest = json.loads((package / "package.json").read_text())
    except (OSError, ValueError):
        return None
    version = manifest.get("version")
    return version if isinstance(version, str) else None


def _complete_results(out: Path) -> dict[str, object] | None:
    """The client's results once its stdout holds one complete, non-empty JSON object."""
    try:
        results = json.loads(out.read_text())
    except (OSError, ValueError):
        return None  # not written yet, or written only in part
    if not isinstance(results, dict) or not results:
        return None
    return results


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
