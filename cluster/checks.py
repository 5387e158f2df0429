"""One check result, OK / WARN / FAIL with the fix, shared by `inv doctor` and the launch
preflight so both speak the same table: a FAIL refuses a launch, a WARN does not."""

from __future__ import annotations

from dataclasses import dataclass

from tabulate import tabulate

OK, WARN, FAIL = "OK", "WARN", "FAIL"


@dataclass(frozen=True)
class Check:
    node: str
    name: str
    status: str  # OK, WARN or FAIL
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


def render_checks(checks: list[Check]) -> str:
    rows = [[c.status, c.node, c.name, c.detail, c.fix] for c in checks]
    return tabulate(rows, headers=["", "node", "check", "detail", "fix"], tablefmt="simple")


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == FAIL]


def warned(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == WARN]
