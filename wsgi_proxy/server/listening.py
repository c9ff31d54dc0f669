"""The addresses the server listens on: checked by the master before it reports ready, and
named in its start-up log.

With ``reuse_port`` (WSGI_PROXY_REUSE_PORT=on) gunicorn binds in each worker, never in the
master: a port already taken was found only by the workers, which failed and were
restarted in a loop while the master had told systemd READY=1; and a second instance with
``SO_REUSEPORT`` joined the first one's port silently, the kernel sharing the connections.
So at start (gunicorn's ``on_starting`` hook, before it binds or notifies) the master binds
each TCP address once with the options the workers will use, closes the socket, and stops
with one line naming the address and the reason where that fails. ``SO_REUSEPORT`` is set
on that probe only with WSGI_PROXY_SHARE_PORT=on: without it, a port another process
listens on (with ``SO_REUSEPORT`` or not) cannot be bound, which is the check.

Invariants:
- Sockets handed over (systemd's socket activation, a re-executed master) are not probed:
  they are bound already, by whoever handed them.
- Unix sockets are not probed (gunicorn replaces a stale socket file itself).
- Nothing here stays open: the probe socket is closed before the workers bind.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Sequence
from typing import Any

from gunicorn import systemd

from wsgi_proxy.ops.access_log import JsonLogger, ProxyLogger

TcpAddress = tuple[str, int]

# What an operator can do about the common failures.
_REASONS = {
    errno.EADDRINUSE: "the address is already in use (another process listens there)",
    errno.EADDRNOTAVAIL: "no interface of this machine has that address",
    errno.EACCES: "permission denied (a port below 1024 needs privileges)",
}


def format_address(address: Any) -> str:
    """An address as gunicorn's start-up log shows its sockets: ``http://host:port``
    (``[v6]`` in brackets), ``unix:path``, ``fd://n``."""
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"
    if isinstance(address, int):
        return f"fd://{address}"
    return f"unix:{address}"


def bind_problem(address: TcpAddress, *, share: bool) -> str | None:
    """Why ``address`` cannot be listened on, or None where it can (at this moment)."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As gunicorn's sockets: a port whose old connections linger (TIME_WAIT) is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if share:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            probe.bind(address)
    except OSError as exc:
        reason = _REASONS.get(exc.errno or 0) or exc.strerror or str(exc)
        if exc.errno == errno.EADDRINUSE and not share:
            reason += "; WSGI_PROXY_SHARE_PORT=on shares a port with another wsgi_proxy"
        return f"cannot listen on {format_address(address)}: {reason}"
    return None


def check_addresses(server: Any, *, share_port: bool) -> None:
    """In the master, at start: exit 1 with one line naming the first TCP address that
    cannot be bound, before gunicorn binds anything or reports ready. ``share_port``
    (WSGI_PROXY_SHARE_PORT) applies where each worker binds its own socket
    (``reuse_port``, which on_reload may have turned off): a shared socket is the master's
    alone."""
    cfg = server.cfg
    share = share_port and bool(cfg.reuse_port)
    if share_port and not share:
        server.log.warning("WSGI_PROXY_SHARE_PORT=on has no effect: the workers share one "
                           "socket (WSGI_PROXY_REUSE_PORT off, or not a TCP address)")  # fmt: skip
    if _is_handed_sockets():
        return
    for address in cfg.address:
        if not isinstance(address, tuple):
            continue
        problem = bind_problem((address[0], address[1]), share=share)
        if problem is not None:
            server.log.error(problem)
            raise SystemExit(1)


def _is_handed_sockets() -> bool:
    """Whether the master was given its sockets: systemd's socket activation
    (``LISTEN_FDS``) or gunicorn's re-executed master (USR2, ``GUNICORN_FD``, which
    gunicorn sets for its new master)."""
    return systemd.listen_fds(False) > 0 or bool(os.environ.get("GUNICORN_FD"))


def listening_args(message: str, args: Sequence[Any], addresses: Sequence[Any]) -> tuple[Any, ...]:
    """gunicorn's "Listening at: %s" line with the addresses filled in where it names no
    socket (each worker binds its own, so the master holds none); any other line as it is."""
    if message.startswith("Listening at: %s") and args and args[0] == "":
        return (",".join(format_address(a) for a in addresses), *args[1:])
    return tuple(args)


class _NamesAddresses:
    """A gunicorn logger (its ``logger_class`` setting) whose start-up line names the
    addresses served where the master holds no socket."""

    cfg: Any

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        super().info(msg, *listening_args(msg, args, self.cfg.address), **kwargs)  # type: ignore[misc]


class TextLogger(_NamesAddresses, ProxyLogger):
    """The text access log (ops/access_log.py), the addresses named at start."""


class JsonLinesLogger(_NamesAddresses, JsonLogger):
    """The JSON access log (ops/access_log.py), the addresses named at start."""
