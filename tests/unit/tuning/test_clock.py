"""PerSecond (clock.py): a text made once per second, for the times given."""

from __future__ import annotations

import pytest

from wsgi_proxy.tuning.per_second import PerSecond


@pytest.mark.parametrize(
    ("times", "made"),
    [
        ([10.0], [10]),
        ([10.0, 10.2, 10.999], [10]),  # one second: made once
        ([10.0, 11.0, 11.5, 12.0], [10, 11, 12]),
        ([11.0, 10.5, 11.0], [11, 10, 11]),  # a clock stepped back: made again, never stale
    ],
)
def test_made_once_a_second(times: list[float], made: list[int]) -> None:
    calls: list[int] = []

    def make(second: int) -> str:
        calls.append(second)
        return f"s{second}"

    memo = PerSecond(make)
    assert [memo(now) for now in times] == [f"s{int(now)}" for now in times]
    assert calls == made


def test_the_current_second_by_default() -> None:
    memo = PerSecond(str)
    first = memo()
    assert first.isdigit()
    assert memo() in (first, str(int(first) + 1))
