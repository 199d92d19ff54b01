"""Judge a conformance report written by ``ojs_conformance.py --json-out``.

The runner exits 1 on any failing test, but the suite has known defects (tests that no server can
pass, listed in ``known-suite-defects.txt`` beside this file). This checker reads the report's
``tests`` list (one entry per test: ``test_id``, ``name``, ``status`` in pass/fail/error/skip and,
for failures, ``failures`` with ``step_id``/``field``/``message``/``expected``/``actual``) and
exits 1 when any test failed or errored other than a listed known defect (and, when the list
gives a field regex for it, other than on matching fields), or when fewer tests ran than expected.

Usage: ``python .ci/check_conformance.py REPORT.json [--name NAME] [--min-tests N]
[--known-defects FILE]``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

DEFAULT_KNOWN_DEFECTS = Path(__file__).with_name("known-suite-defects.txt")
DEFAULT_MIN_TESTS = 133
BAD_STATUSES = ("fail", "error")


def load_known_defects(path: Path) -> dict[str, re.Pattern[str] | None]:
    """Parse ``path``: lines ``TEST_ID [FIELD_REGEX]``, where ``#`` starts a comment.

    Maps each test id to the regex that every failed assertion's ``field`` must fully match for
    the failure to be tolerated, or to ``None`` when any failure of that test is tolerated.
    """
    known: dict[str, re.Pattern[str] | None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("#", 1)[0].split(None, 1)
        if parts:
            known[parts[0]] = re.compile(parts[1].strip()) if len(parts) > 1 else None
    return known


def is_tolerated(test: dict[str, Any], known: dict[str, re.Pattern[str] | None]) -> bool:
    """Whether a failed ``test`` is a known suite defect, failing only where it is expected to."""
    test_id = test.get("test_id")
    if test_id not in known:
        return False
    scope = known[test_id]
    if scope is None:
        return True
    failures = test.get("failures") or []
    return bool(failures) and all(scope.fullmatch(f.get("field", "")) for f in failures)


def describe_failure(failure: dict[str, Any]) -> str:
    """One line for one failed assertion, shaped like the runner's own failure lines."""
    text = f"[{failure.get('step_id', '')}] "
    field = failure.get("field", "")
    message = failure.get("message", "")
    if field and field not in message:
        text += f"{field}: "
    text += message
    expected = failure.get("expected", "")
    if expected and expected not in message:
        text += f" | expected: {expected} | actual: {failure.get('actual', '')}"
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def check(
    report: dict[str, Any], known: dict[str, re.Pattern[str] | None], min_tests: int, name: str
) -> int:
    """Print a summary of ``report`` and return the exit code (0 ok, 1 not ok)."""
    tests: list[dict[str, Any]] = report["tests"]
    ran = [t for t in tests if t.get("status") != "skip"]
    passed = [t for t in ran if t.get("status") == "pass"]
    bad = [t for t in ran if t.get("status") in BAD_STATUSES]
    tolerated = [t for t in bad if is_tolerated(t, known)]
    unexpected = [t for t in bad if t not in tolerated]
    bad_ids = {t.get("test_id") for t in bad}
    fixed = sorted(i for i in known if i in {t.get("test_id") for t in passed} - bad_ids)

    for t in bad:
        tag = "known suite defect" if t in tolerated else str(t.get("status")).upper()
        print(f"  {tag}: {t.get('test_id')} {t.get('name', '')}")
        for failure in t.get("failures") or []:
            print(f"      -> {describe_failure(failure)}")
    for test_id in fixed:
        print(f"  note: {test_id} is listed as a known suite defect but passed")

    ok = True
    if len(ran) < min_tests:
        print(f"  ERROR: only {len(ran)} tests ran, expected at least {min_tests}")
        ok = False
    if unexpected:
        ids = ", ".join(str(t.get("test_id")) for t in unexpected)
        print(f"  ERROR: {len(unexpected)} test(s) failed that are not known suite defects: {ids}")
        ok = False
    if tolerated:
        print(f"  {len(tolerated)} failure(s) tolerated as known suite defects")
    print(f"{name}: {len(passed)} passed, {len(bad)} failed")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, read the report and check it."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("report", type=Path, help="JSON report from ojs_conformance.py --json-out")
    parser.add_argument("--name", default="conformance", help="label for the summary line")
    parser.add_argument("--min-tests", type=int, default=DEFAULT_MIN_TESTS)
    parser.add_argument("--known-defects", type=Path, default=DEFAULT_KNOWN_DEFECTS)
    args = parser.parse_args(argv)

    try:
        report = json.loads(args.report.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"{args.name}: cannot read conformance report {args.report}: {exc}")
        return 1
    if not isinstance(report, dict) or not isinstance(report.get("tests"), list):
        print(f"{args.name}: {args.report} has no 'tests' list; not a conformance report")
        return 1
    return check(report, load_known_defects(args.known_defects), args.min_tests, args.name)


if __name__ == "__main__":
    sys.exit(main())
