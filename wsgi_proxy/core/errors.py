"""One exception tree. Each HTTP-facing class knows the status and the short plain-text body
that the client receives; foreign exceptions (urllib3, OSError) are converted to these once,
at the edge that meets them (upstream/origin_client.py, store/cache.py).

The proxy's own error answers (these errors, flow/proxy_app.ProxyApp._error) and the admin
interface's (flow/admin.py) are werkzeug ``Response``s; both write ``<status> <reason>:
<detail>``. Answers from the cache and the origin are not: they go out as a status line
and a list of fields handed to ``start_response``. Making and calling a werkzeug
``Response`` costs about 12 microseconds for a short answer and 14 for a hit's nine
fields, against 0.1 to 0.3 for the list, and a ``Request`` 2 to 4 more
(tests/bench/response_cost.py: timeit, best of 15 runs of 20,000; werkzeug 3.1.9, CPython
3.11, a shared 2-vCPU AMD EPYC VM): some 3 percent of a 1 KiB hit in the benchmark, for
nothing the proxy needs. A ``Response`` would also add a ``Content-Type`` the origin
never sent.
"""

from __future__ import annotations


class ConfigError(Exception):
    """A setting is invalid; raised at start-up, never while serving."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


class ProxyError(Exception):
    """An error answered to the client with ``status`` and a short plain-text body.
    ``detail`` is for the client: what failed, said in its terms ("the origin refused the
    connection"); ``cause`` is for the log only: what the proxy's socket or parser said
    ("[Errno 111] Connection refused"), which tells the client nothing of use."""

    status = 500
    reason = "Internal Server Error"

    def __init__(self, detail: str, *, cause: str = "") -> None:
        super().__init__(f"{detail} ({cause})" if cause else detail)
        self.detail = detail
        self.cause = cause

    @property
    def fields(self) -> tuple[tuple[str, str], ...]:
        """Extra response fields the status needs."""
        return ()

    @property
    def body(self) -> bytes:
        return f"{self.status} {self.reason}: {self.detail}\n".encode()


class ClientError(ProxyError):
    """The request itself is at fault (RFC 9110 section 15.5): answered as it is, never
    with a stale entry, which stands in for an origin that failed."""

    status = 400
    reason = "Bad Request"


class BadRequest(ClientError):
    """Malformed: the target, the framing of the body, a body that ended early or a
    connection lost while it was read; a missing or invalid Host."""


class MisdirectedRequest(ClientError):
    """A host this proxy does not serve (``WSGI_PROXY_ALLOWED_HOSTS``; RFC 9110 15.5.20)."""

    status = 421
    reason = "Misdirected Request"


class MethodNotAllowed(ClientError):
    """CONNECT: a reverse proxy opens no tunnels."""

    status = 405
    reason = "Method Not Allowed"


class PayloadTooLarge(ClientError):
    """The request body is over ``WSGI_PROXY_MAX_BODY_SIZE``."""

    status = 413
    reason = "Content Too Large"


class UnsupportedCoding(ClientError):
    """A request transfer coding this proxy cannot pass on (RFC 9112 section 6.1)."""

    status = 501
    reason = "Not Implemented"


class ClientTimeout(ClientError):
    """The client stopped sending its request body for ``WSGI_PROXY_CLIENT_TIMEOUT``."""

    status = 408
    reason = "Request Timeout"


class OriginUnreachable(ProxyError):
    """The origin refused the connection, could not be resolved, or did not connect in time."""

    status = 502
    reason = "Bad Gateway"


class OriginBroken(ProxyError):
    """The origin answered something that is not a valid HTTP response."""

    status = 502
    reason = "Bad Gateway"


class OriginTimeout(ProxyError):
    """The origin connected but did not answer within the read timeout."""

    status = 504
    reason = "Gateway Timeout"


class CacheDamaged(ProxyError):
    """A stored body failed its checksum while it was being sent: the connection is cut
    before its last bytes, so the client never takes it for whole."""


class NotInCache(ProxyError):
    """``only-if-cached`` and nothing usable is stored (RFC 9111 section 5.2.1.7)."""

    status = 504
    reason = "Gateway Timeout"


class RangeNotSatisfiable(ProxyError):
    """No part of the requested range lies within the stored body (RFC 9110 15.5.17)."""

    status = 416
    reason = "Range Not Satisfiable"

    def __init__(self, length: int) -> None:
        super().__init__(f"the body has {length} bytes")
        self.length = length

    @property
    def fields(self) -> tuple[tuple[str, str], ...]:
        return (("Content-Range", f"bytes */{self.length}"),)
