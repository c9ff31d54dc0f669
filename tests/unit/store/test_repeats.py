"""Which entries a worker looked up lately (repeats.py): the memos' admission."""

from __future__ import annotations

import pytest

from wsgi_proxy.store.repeats import RecentLookups


@pytest.mark.parametrize(
    ("case", "window", "names", "expected"),
    [
        ("a first lookup", 4, ["a"], [False]),
        ("the second, at once", 4, ["a", "a"], [False, True]),
        ("each name apart", 8, ["a", "b", "a", "b"], [False, False, True, True]),
        # The marks of one window are kept through the next, then dropped.
        ("within the next window", 2, ["a", "x", "y", "a"], [False, False, False, True]),
        ("two windows later", 2, ["a", "x", "y", "z", "w", "a"], [False] * 6),
        ("asked often: kept", 2, ["a", "x", "a", "y", "a", "z", "a"],
         [False, False, True, False, True, False, True]),
        ("no window: nothing", 0, ["a", "a", "a"], [False, False, False]),
    ],
)  # fmt: skip
def test_again(case: str, window: int, names: list[str], expected: list[bool]) -> None:
    recent = RecentLookups(window)
    assert [recent.again(name) for name in names] == expected, case


def test_slots_are_a_power_of_two() -> None:
    with pytest.raises(ValueError, match="power of two"):
        RecentLookups(4, slots=1000)


def test_a_name_sharing_a_slot_is_taken_for_seen() -> None:
    """One slot for every name: the approximation, in its worst case."""
    recent = RecentLookups(8, slots=1)
    assert [recent.again(name) for name in ("a", "b")] == [False, True]
