"""Run the fault matrix (tests/faults) and print it as a table: fault, expected, observed, result.

    .venv/bin/python tests/faults/matrix.py            # every case
    .venv/bin/python tests/faults/matrix.py -k detach  # extra arguments go to pytest

Each row is one test marked with `harness.fault(name, expected)`; Observed is what the test recorded
(`observed(...)`) about what the user was left with, or why it failed. The cases are ordinary pytest tests
(CI runs them with the rest); this script only runs them quietly and collects their rows.
Exit code: pytest's.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))


class Rows:
    """A pytest plugin that keeps one row per fault case."""

    def __init__(self) -> None:
        self.meta: dict[str, tuple[str, str]] = {}
        self.rows: dict[str, dict] = {}

    def pytest_collection_modifyitems(self, items) -> None:
        for item in items:
            fn = getattr(item, "function", None)
            if fn is not None and hasattr(fn, "fault_name"):
                self.meta[item.nodeid] = (fn.fault_name, fn.fault_expected)

    def pytest_runtest_logreport(self, report) -> None:
        if report.nodeid not in self.meta:
            return
        row = self.rows.setdefault(report.nodeid, {"observed": [], "result": "", "seconds": 0.0, "why": ""})
        row["seconds"] += report.duration
        row["observed"] += [v for k, v in report.user_properties if k == "observed" and v not in row["observed"]]
        if report.when == "call" or (report.when == "setup" and not report.passed):
            if hasattr(report, "wasxfail"):
                row["result"] = "XFAIL (known)" if report.skipped else "XPASS"
                row["why"] = report.wasxfail
            elif report.skipped:
                row["result"] = "skipped"
                row["why"] = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
            else:
                row["result"] = report.outcome
                if report.failed:
                    row["why"] = (report.longreprtext.strip().splitlines() or ["?"])[-1][:200]
        elif report.failed and not row["result"]:  # teardown failure
            row["result"] = "failed (teardown)"
            row["why"] = (report.longreprtext.strip().splitlines() or ["?"])[-1][:200]


def main(argv: list[str]) -> int:
    rows = Rows()
    t0 = time.monotonic()
    code = pytest.main([str(HERE), "-q", "-p", "no:cacheprovider", "--no-header", "-rN", *argv], plugins=[rows])
    table = Table(title=f"sgtui fault matrix ({time.monotonic() - t0:.0f} s)", show_lines=True, expand=True)
    table.add_column("Fault", style="bold", ratio=2)
    table.add_column("Expected", ratio=3)
    table.add_column("Observed", ratio=4)
    table.add_column("Result", ratio=1)
    table.add_column("s", justify="right", width=5)
    style = {"passed": "green", "failed": "bold red", "XPASS": "bold red", "skipped": "yellow"}
    for nodeid, (name, expected) in rows.meta.items():
        row = rows.rows.get(nodeid)
        if row is None:
            continue  # deselected
        observed = "\n".join(row["observed"]) or "-"
        if row["why"]:
            observed += ("\n" if row["observed"] else "") + f"[dim]{row['why']}[/]"
        result = row["result"]
        table.add_row(name, expected, observed, f"[{style.get(result, 'yellow')}]{result}[/]", f"{row['seconds']:.0f}")
    Console(width=max(140, Console().width)).print(table)
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
