"""What a werkzeug Response would cost on the request path (core/errors.py says why the
proxy's answers do without one): a hit's head and a short error answer, each written as the
proxy writes it (a field list to ``start_response``) and as a werkzeug ``Response``.

    .venv/bin/python tests/bench/response_cost.py [--number 20000] [--repeat 15]

Prints the best time per answer over the repeats, in microseconds.
"""

from __future__ import annotations

import argparse
import io
import timeit
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.wrappers import Request, Response

ENVIRON: dict[str, Any] = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/a/b",
    "QUERY_STRING": "",
    "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "8080",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "wsgi.url_scheme": "http",
    "wsgi.input": io.BytesIO(),
    "HTTP_HOST": "shop.example",
    "HTTP_ACCEPT": "*/*",
    "REMOTE_ADDR": "127.0.0.1",
}
BODY = b"x" * 1024
HIT_FIELDS = [
    ("Content-Type", "text/html"),
    ("Content-Length", "1024"),
    ("ETag", '"v1"'),
    ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
    ("Cache-Control", "max-age=600"),
    ("Age", "3"),
    ("Via", "1.1 wsgi_proxy"),
    ("X-Cache", "HIT"),
    ("Cache-Status", "wsgi_proxy; hit; ttl=597"),
]
ERROR = b"502 Bad Gateway: the origin refused the connection\n"
ERROR_MARKS = [
    ("Cache-Control", "no-store"),
    ("Via", "1.1 wsgi_proxy"),
    ("X-Cache", "MISS"),
    ("Cache-Status", 'wsgi_proxy; fwd=uri-miss; detail="the origin refused the connection"'),
]


def _write(data: bytes) -> None:
    return None


def _start_response(
    status: str, headers: list[tuple[str, str]], exc_info: Any = None, /
) -> Callable[[bytes], object]:
    return _write


def _drain(body: Iterable[bytes]) -> None:
    for _ in body:
        pass


def hit_fields() -> None:
    _start_response("200 OK", HIT_FIELDS)
    _drain([BODY])


def hit_response() -> None:
    _drain(Response(BODY, status="200 OK", headers=HIT_FIELDS)(ENVIRON, _start_response))


def hit_request_and_response() -> None:
    Request(ENVIRON).headers.get("Host")
    hit_response()


def error_fields() -> None:
    plain = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(ERROR)))]
    _start_response("502 Bad Gateway", [*plain, *ERROR_MARKS])
    _drain([ERROR])


def error_response() -> None:
    response = Response(
        ERROR,
        status="502 Bad Gateway",
        headers=ERROR_MARKS,
        content_type="text/plain; charset=utf-8",
    )
    _drain(response(ENVIRON, _start_response))


CASES: list[Callable[[], None]] = [
    hit_fields,
    hit_response,
    hit_request_and_response,
    error_fields,
    error_response,
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--number", type=int, default=20_000, help="calls per timing")
    parser.add_argument("--repeat", type=int, default=15, help="timings; the best counts")
    args = parser.parse_args()
    for case in CASES:
        best = min(timeit.repeat(case, number=args.number, repeat=args.repeat)) / args.number
        print(f"{case.__name__:26} {best * 1e6:6.2f} us")


if __name__ == "__main__":
    main()
