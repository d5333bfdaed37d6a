# SPDX-License-Identifier: MIT
"""checks: the reporting every Python test shares.

check() prints one "ok:" or "FAIL:" line per assertion; summary() prints the
failed ones again (a log shown by its tail still names them), then the
"N passed, N failed" line, and returns the exit status (1 on any failure,
and on no check at all, since a test that checked nothing proved nothing)."""

counts = {"passed": 0, "failed": 0}
failures = []
FAILURE_DETAIL_SHOWN = 300  # characters of each failure's detail repeated at the end


def check(name, condition, detail=""):
    """Records one assertion; returns whether it held."""
    if condition:
        counts["passed"] += 1
        print("ok: " + name, flush=True)
    else:
        counts["failed"] += 1
        failures.append("%s %s" % (name, str(detail)[:FAILURE_DETAIL_SHOWN]))
        print("FAIL: %s %s" % (name, detail), flush=True)
    return bool(condition)


def failed():
    return counts["failed"]


def summary():
    for failure in failures:
        print("failed: " + failure)
    print("%d passed, %d failed" % (counts["passed"], counts["failed"]))
    return 1 if counts["failed"] or not counts["passed"] else 0
