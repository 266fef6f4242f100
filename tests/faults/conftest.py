"""The fault-injection suite's ledger: what each test tried and checked, per stage, printed at the end."""

from __future__ import annotations

from collections import defaultdict

import pytest

COLUMNS = ("faults", "kills landed", "reruns", "files compared", "runs checked", "lost")
LEDGER: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COLUMNS, 0))


@pytest.fixture
def ledger():
    """``ledger(stage, **counts)`` adds to a stage's row (keys: COLUMNS with "_" for " ")."""

    def add(stage: str, **counts: int) -> None:
        for key, n in counts.items():
            LEDGER[stage][key.replace("_", " ")] += n

    return add


def pytest_terminal_summary(terminalreporter):
    if not LEDGER:
        return
    rows = [[stage, *(str(LEDGER[stage][c]) for c in COLUMNS)] for stage in sorted(LEDGER)]
    total = ["total", *(str(sum(LEDGER[s][c] for s in LEDGER)) for c in COLUMNS)]
    widths = [max(len(r[i]) for r in [["stage", *COLUMNS], *rows, total]) for i in range(len(COLUMNS) + 1)]
    terminalreporter.section("fault injection")
    for row in [["stage", *COLUMNS], *rows, total]:
        terminalreporter.write_line(
            "  ".join(
                cell.rjust(w) if i else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )
