"""The cache manager's restart backoff (server/cache_manager.py ``restart_delay``): the
wait doubles after each manager that died within ``STEADY_RUN``, up to
``MAX_RESTART_DELAY``, and starts over after one that lasted."""

from __future__ import annotations

import pytest

from wsgi_proxy.server.cache_manager import (
    MAX_RESTART_DELAY,
    RESTART_DELAY,
    STEADY_RUN,
    restart_delay,
)


@pytest.mark.parametrize(
    ("last", "ran_for", "expected"),
    [
        (None, 0.5, RESTART_DELAY),  # the master's first manager died at once
        (None, 3600.0, RESTART_DELAY),
        (RESTART_DELAY, 0.5, 2 * RESTART_DELAY),  # each quick death doubles it
        (2.0, 5.0, 4.0),
        (16.0, STEADY_RUN - 0.1, 32.0),
        (32.0, 1.0, MAX_RESTART_DELAY),  # 64 capped
        (MAX_RESTART_DELAY, 1.0, MAX_RESTART_DELAY),
        (MAX_RESTART_DELAY, STEADY_RUN, RESTART_DELAY),  # one that lasted: back to 1 s
        (8.0, 86400.0, RESTART_DELAY),
    ],
)
def test_restart_delay(last: float | None, ran_for: float, expected: float) -> None:
    assert restart_delay(last, ran_for) == expected


def test_a_manager_that_never_starts_costs_a_line_a_minute() -> None:
    delays: list[float] = []
    last = None
    for _ in range(10):
        last = restart_delay(last, 5.0)  # a settings error: exits after 5 s
        delays.append(last)
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
