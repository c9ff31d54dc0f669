"""The scorer, as a table: (definition, results) -> outcome, as cache-tests.fyi shows it."""

from __future__ import annotations

import json

import pytest

from .scoring import Outcome, TestDef, parse_definitions, score

DEFINITIONS = {
    t.id: t
    for t in (
        TestDef("base", "s", "required"),
        TestDef("req", "s", "required", depends_on=("base",)),
        TestDef("opt", "s", "optimal", depends_on=("base",)),
        TestDef("chk", "s", "check"),
        TestDef("chained", "s", "required", depends_on=("req",)),
        TestDef("unknown-dep", "s", "required", depends_on=("nowhere",)),
        TestDef("loop-a", "s", "required", depends_on=("loop-b",)),
        TestDef("loop-b", "s", "required", depends_on=("loop-a",)),
        TestDef("browser", "s", "required", browser_only=True),
    )
}
ASSERTION = ["Assertion", "Response 2 does not come from cache"]


@pytest.mark.parametrize(
    ("results", "test_id", "expected"),
    [
        ({"base": True}, "base", Outcome.PASS),
        ({"base": ASSERTION}, "base", Outcome.FAIL),
        ({}, "base", Outcome.UNTESTED),
        ({"base": ["Setup", "Response 2 does not come from cache"]}, "base", Outcome.SETUP_FAIL),
        ({"base": ["Setup", "retry"]}, "base", Outcome.RETRY),
        ({"base": False}, "base", Outcome.HARNESS_FAIL),
        ({"base": True, "req": True}, "req", Outcome.PASS),
        ({"base": ASSERTION, "req": True}, "req", Outcome.DEPENDENCY_FAIL),
        ({"base": ["Setup", "x"], "req": True}, "req", Outcome.DEPENDENCY_FAIL),
        ({"base": True, "opt": ASSERTION}, "opt", Outcome.OPTIONAL_FAIL),
        ({"base": ASSERTION, "opt": True}, "opt", Outcome.DEPENDENCY_FAIL),
        ({"chk": True}, "chk", Outcome.YES),
        ({"chk": ASSERTION}, "chk", Outcome.NO),
        ({"base": ASSERTION, "req": True, "chained": True}, "chained", Outcome.DEPENDENCY_FAIL),
        ({"unknown-dep": True}, "unknown-dep", Outcome.DEPENDENCY_FAIL),
        ({"loop-a": True, "loop-b": True}, "loop-a", Outcome.DEPENDENCY_FAIL),
    ],
)
def test_outcome(results: dict[str, object], test_id: str, expected: Outcome) -> None:
    outcomes = score(DEFINITIONS, results).outcomes
    kind = DEFINITIONS[test_id].kind
    assert outcomes[kind][test_id] is expected


def test_score_counts_passes_leaves_out_browser_tests_and_explains_failures() -> None:
    results: dict[str, object] = {
        "base": ASSERTION,
        "req": True,
        "opt": True,
        "chk": True,
        "browser": True,
        "not-defined": True,
    }
    scored = score(DEFINITIONS, results)
    assert scored.summary() == "required 0/6 optimal 0/1 check 1/1"
    failures = {f.id: (f.outcome, f.message) for f in scored.failures("required")}
    assert "browser" not in failures
    assert failures["base"] == (Outcome.FAIL, "Assertion: Response 2 does not come from cache")
    assert failures["req"] == (Outcome.DEPENDENCY_FAIL, "prerequisite did not pass: base")
    assert failures["chained"] == (Outcome.UNTESTED, "no result")


def test_parse_definitions_reads_the_dump_and_rejects_unknown_kinds() -> None:
    test = {"id": "t", "kind": "optimal", "depends_on": ["u"], "browser_only": False}
    dumped = json.dumps([{"id": "suite", "tests": [test]}])
    assert parse_definitions(dumped) == {"t": TestDef("t", "suite", "optimal", ("u",))}
    with pytest.raises(ValueError, match="unknown kind"):
        parse_definitions(dumped.replace("optimal", "bogus"))
