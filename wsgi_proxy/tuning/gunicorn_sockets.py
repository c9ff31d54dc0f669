"""Which listening sockets a reload or a start leaves the workers (gunicorn's arbiter).

With ``reuse_port`` each worker binds a socket of its own; that works only for TCP
addresses gunicorn binds itself. The arbiter's ``LISTENERS`` and ``master_pid`` say
whether the master already holds sockets (passed by systemd, inherited by a re-executed
master, made at a reload that changed the address): undocumented attributes, hence here.
Where the seam is off, ``reuse_port`` stays off (server/settings.py).
"""

from __future__ import annotations

from typing import Any

from gunicorn import systemd


def shared_socket_where_needed(server: Any) -> None:
    """``reuse_port`` off unless the workers are to bind every address themselves over
    TCP: with it each worker binds its own socket, so a Unix socket's path would be taken
    over by the last worker to bind it, and sockets the master holds (passed by systemd,
    inherited by a re-executed master, or made at a reload that changed the address)
    would get connections nobody accepts. In the master, at start (before any socket is
    made) and after each reload, which reads the settings again."""
    cfg = server.cfg
    if not cfg.reuse_port:
        return
    held = bool(server.LISTENERS) or server.master_pid != 0 or systemd.listen_fds(False) > 0
    if held or not all(isinstance(address, tuple) for address in cfg.address):
        server.log.info("WSGI_PROXY_REUSE_PORT: one socket shared by the workers (not a "
                        "TCP address, or sockets passed to the master)")  # fmt: skip
        cfg.set("reuse_port", False)
