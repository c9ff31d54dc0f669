"""deploy/: the systemd unit is valid for systemd itself, and the nginx sites agree with the
proxy's defaults (nginx's single-node site is exercised by tests/integration/test_nginx.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wsgi_proxy.core.server_config import ServerConfig

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "wsgi-proxy.service"


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    text = UNIT.read_text()
    needed = [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillMode=mixed",
        "User=wsgi-proxy",
        "CacheDirectory=wsgi-proxy",
        "NoNewPrivileges=yes",
    ]
    assert [line for line in needed if line not in text] == []
    # The unit names the installed paths; point them at this checkout to verify it here.
    gunicorn = Path(sys.executable).with_name("gunicorn")
    text = text.replace("/opt/wsgi-proxy/.venv/bin/gunicorn", str(gunicorn))
    text = text.replace("WorkingDirectory=/opt/wsgi-proxy", f"WorkingDirectory={ROOT}")
    text = text.replace("EnvironmentFile=/etc/wsgi-proxy/env", f"EnvironmentFile={tmp_path}/env")
    (tmp_path / "env").write_text((ROOT / "deploy" / "wsgi-proxy.env").read_text())
    unit = tmp_path / "wsgi-proxy.service"
    unit.write_text(text)
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "wsgi-proxy.service" not in result.stderr, result.stderr


@pytest.mark.parametrize("site", ["nginx/wsgi-proxy.conf", "cluster/nginx-cluster.conf"])
def test_nginx_drops_idle_upstream_connections_before_gunicorn_does(site: str) -> None:
    text = (ROOT / "deploy" / site).read_text()
    upstream = re.search(r"upstream \S+ \{(.*?)\n\}", text, re.DOTALL)
    assert upstream is not None
    timeout = re.search(r"^\s*keepalive_timeout (\d+)s;", upstream.group(1), re.MULTILINE)
    assert timeout is not None, "nginx's default (60 s) outlives gunicorn's keep-alive"
    assert int(timeout.group(1)) < ServerConfig.from_env({}).keepalive
