"""How a ``stratagem validate`` check concludes, and how its conclusions are shown.

The protocol checks and the runtime graders live apart but must conclude alike: raise
``Failed`` or ``Skipped`` with what was seen, so that one driver records every check the same
way and one table reports them. Both import this; it imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass


class Failed(Exception):
    pass


class Skipped(Exception):
    pass


@dataclass
class CheckResult:
    name: str
    outcome: str  # PASS, FAIL or SKIP
    detail: str


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise Failed(message)


def format_table(results: list[CheckResult]) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"{'check':<{width}}  result  detail", f"{'-' * width}  ------  ------"]
    lines += [f"{r.name:<{width}}  {r.outcome:<6}  {r.detail}" for r in results]
    passed = sum(r.outcome == "PASS" for r in results)
    failed = sum(r.outcome == "FAIL" for r in results)
    lines.append(f"{passed} passed, {failed} failed, {len(results) - passed - failed} skipped")
    return "\n".join(lines)
