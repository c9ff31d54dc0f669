"""Access-log lines written straight to gunicorn's stream (Python 3.11's logging).

gunicorn's access log is one ``StreamHandler`` whose formatter prints the bare message: a
line goes to the stream under the handler's lock, as logging would write it, without the
``LogRecord``, the formatting and the filters (a few microseconds a request). Any other
set-up (a handler added, another format, a filter) goes through logging as it is.
"""

from __future__ import annotations

import logging


def write_line(logger: logging.Logger, line: str, bare_format: str) -> bool:
    """Write ``line`` to ``logger``'s one stream handler if its formatter prints the bare
    message (``bare_format``); False, and nothing written, for any other set-up."""
    handlers = logger.handlers
    if len(handlers) != 1 or type(handlers[0]) is not logging.StreamHandler:
        return False
    handler = handlers[0]
    formatter = handler.formatter
    if formatter is None or formatter._fmt != bare_format or logger.filters or handler.filters:
        return False
    with handler.lock:  # type: ignore[union-attr]
        handler.stream.write(line + "\n")
        handler.stream.flush()
    return True
