"""Score http-cache-tests results the way cache-tests.fyi reads them.

Pure: test definitions and a results mapping in, a Score out. Ported from
`determineTestResult` in the suite's lib/display.mjs (0.4.5):

- a results file maps test id -> ``true`` or ``[error name, message]``; no entry is untested;
- a test whose ``depends_on`` prerequisite did not pass (or say yes) is a dependency failure,
  whatever its own result;
- ``["Setup", "retry"]`` is a retry, any other ``["Setup", ...]`` a setup failure (the test
  could not get far enough to judge), ``false`` a harness failure;
- otherwise the kind decides: ``required`` pass/fail, ``optimal`` pass/optional failure,
  ``check`` yes/no (informational only).

Browser-only tests are left out: the command-line client never runs them against a proxy.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, assert_never, cast

Kind = Literal["required", "optimal", "check"]
KINDS: tuple[Kind, ...] = ("required", "optimal", "check")


class Outcome(enum.StrEnum):
    """One test's verdict, named as on cache-tests.fyi."""

    PASS = "pass"
    FAIL = "fail"
    OPTIONAL_FAIL = "optional_fail"
    YES = "yes"
    NO = "no"
    DEPENDENCY_FAIL = "dependency_fail"
    SETUP_FAIL = "setup_fail"
    RETRY = "retry"
    HARNESS_FAIL = "harness_fail"
    UNTESTED = "untested"


PASSING = frozenset({Outcome.PASS, Outcome.YES})


@dataclass(frozen=True)
class TestDef:
    """One test definition from the suite's tests/*.mjs."""

    __test__ = False  # a data class, not a pytest test class

    id: str
    suite: str
    kind: Kind
    depends_on: tuple[str, ...] = ()
    browser_only: bool = False


@dataclass(frozen=True)
class Failure:
    """A test that did not pass, with what the suite said about it."""

    id: str
    outcome: Outcome
    message: str


@dataclass(frozen=True)
class Score:
    """Outcomes of every applicable test, grouped by kind."""

    definitions: Mapping[str, TestDef]
    outcomes: Mapping[Kind, Mapping[str, Outcome]]
    results: Mapping[str, object]

    def passed(self, kind: Kind) -> int:
        return sum(1 for o in self.outcomes[kind].values() if o in PASSING)

    def total(self, kind: Kind) -> int:
        return len(self.outcomes[kind])

    def failures(self, kind: Kind) -> list[Failure]:
        """Tests of `kind` that did not pass, in id order, with the suite's message."""
        return [
            Failure(tid, outcome, self._explain(tid, outcome))
            for tid, outcome in sorted(self.outcomes[kind].items())
            if outcome not in PASSING
        ]

    def _explain(self, test_id: str, outcome: Outcome) -> str:
        if outcome is Outcome.DEPENDENCY_FAIL:
            deps = self.definitions[test_id].depends_on
            failed = [d for d in deps if not self._passed(d)]
            return f"prerequisite did not pass: {', '.join(failed or deps)}"
        return format_result(self.results.get(test_id))

    def _passed(self, test_id: str) -> bool:
        if test_id not in self.definitions:
            return False
        return outcome_of(test_id, self.definitions, self.results) in PASSING

    def summary(self) -> str:
        """One line: ``required P/T optimal P/T check Y/T`` (as the reference score.py)."""
        return " ".join(f"{k} {self.passed(k)}/{self.total(k)}" for k in KINDS)


def parse_definitions(dumped: str) -> dict[str, TestDef]:
    """Test definitions by id, from the JSON that dump-tests.mjs prints."""
    definitions: dict[str, TestDef] = {}
    for suite in json.loads(dumped):
        for test in suite["tests"]:
            kind = test["kind"]
            if kind not in KINDS:
                raise ValueError(f"unknown kind {kind!r} for test {test['id']}")
            definitions[test["id"]] = TestDef(
                id=test["id"],
                suite=suite["id"],
                kind=cast(Kind, kind),
                depends_on=tuple(test["depends_on"]),
                browser_only=bool(test["browser_only"]),
            )
    return definitions


def outcome_of(
    test_id: str,
    definitions: Mapping[str, TestDef],
    results: Mapping[str, object],
    seen: frozenset[str] = frozenset(),
) -> Outcome:
    """The verdict for one test; prerequisites first, then the kind (lib/display.mjs)."""
    test = definitions[test_id]
    result = results.get(test_id)
    if result is None:
        return Outcome.UNTESTED
    seen = seen | {test_id}
    for dependency in test.depends_on:
        # an unknown or circular prerequisite can never have passed
        if dependency in seen or dependency not in definitions:
            return Outcome.DEPENDENCY_FAIL
        if outcome_of(dependency, definitions, results, seen) not in PASSING:
            return Outcome.DEPENDENCY_FAIL
    if isinstance(result, list) and result and result[0] == "Setup":
        return Outcome.RETRY if result[1:2] == ["retry"] else Outcome.SETUP_FAIL
    if result is False:
        return Outcome.HARNESS_FAIL
    match test.kind:
        case "required":
            return Outcome.PASS if result is True else Outcome.FAIL
        case "optimal":
            return Outcome.PASS if result is True else Outcome.OPTIONAL_FAIL
        case "check":
            return Outcome.YES if result is True else Outcome.NO
        case _:
            assert_never(test.kind)


def score(definitions: Mapping[str, TestDef], results: Mapping[str, object]) -> Score:
    """Every non-browser test's outcome; result ids without a definition are ignored."""
    outcomes: dict[Kind, dict[str, Outcome]] = {k: {} for k in KINDS}
    for test in applicable(definitions.values()):
        outcomes[test.kind][test.id] = outcome_of(test.id, definitions, results)
    return Score(dict(definitions), outcomes, dict(results))


def applicable(tests: Iterable[TestDef]) -> list[TestDef]:
    """The tests the command-line client runs against a proxy."""
    return [t for t in tests if not t.browser_only]


def format_result(result: object) -> str:
    """``Name: message`` for a ``[name, message]`` result, else the JSON value."""
    if isinstance(result, list) and len(result) > 1:
        return f"{result[0]}: {result[1]}"
    if result is None:
        return "no result"
    return json.dumps(result)
