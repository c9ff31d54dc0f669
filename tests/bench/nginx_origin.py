"""nginx as the benchmarks' origin (run.py, scale.py): one configuration, one worker
pinned beside wrk, no access log, sendfile and long keep-alives, every file it writes
under its own folder. Each benchmark gives the locations it serves, and any directives
its http block needs beyond these (scale.py's ``map``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from bench.procs import Services, free_port

NGINX_CONF = """\
worker_processes 1;
{user}
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  default_type application/octet-stream;
  sendfile on; tcp_nopush off; tcp_nodelay on;
  keepalive_timeout 65; keepalive_requests 100000000;
  client_body_temp_path {d}/tmp_body; proxy_temp_path {d}/tmp_proxy;
  fastcgi_temp_path {d}/tmp_fcgi; uwsgi_temp_path {d}/tmp_uwsgi; scgi_temp_path {d}/tmp_scgi;
{http}  server {{
    listen 127.0.0.1:{port} backlog=4096;
    root {www};
{locations}  }}
}}
"""
TEMP_FOLDERS = ("tmp_body", "tmp_proxy", "tmp_fcgi", "tmp_uwsgi", "tmp_scgi")


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def nginx_conf(folder: Path, port: int, www: Path, locations: str, http: str = "") -> str:
    """The configuration of an origin on ``port`` serving ``www``: ``locations`` and
    ``http`` are whole lines (indented, each ending in a newline), put in the server block
    and the http block as they are."""
    # As root, nginx runs its worker as nobody, who cannot read the 0700 scratch folder.
    user = "user root;" if os.geteuid() == 0 else ""
    return NGINX_CONF.format(
        user=user, d=folder, port=port, www=www, locations=locations, http=http
    )


def start_nginx(
    services: Services, nginx: str, folder: Path, www: Path, locations: str, http: str = ""
) -> int:
    """nginx started as the service "origin" on CPU 1, its files in ``folder`` (created):
    its port."""
    for sub in TEMP_FOLDERS:
        (folder / sub).mkdir(parents=True)
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(nginx_conf(folder, port, www, locations, http))
    error_log = str(folder / "nginx-error.log")
    argv = [nginx, "-p", f"{folder}/", "-e", error_log, "-c", str(conf), "-g", "daemon off;"]
    services.start("origin", argv, port, cpus="1")
    return port
