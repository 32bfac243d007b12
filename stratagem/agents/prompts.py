"""Task prompts, built from an environment's manifest so that every environment gets one.

The manifest's ``strategy`` block says what to write (function name and arguments), what the
arguments hold (``inputs``), what to return (``returns``) and which modules may be imported;
the prompt states those and the sandbox rules, in the style of the public 2048 notebook. The
environment's parameters given for the run (``-p game=Freeway``) are named in it too: one manifest
serves many games, and the policy must know which one it plays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stratagem.envs.spec import EnvSpec

TEMPLATE = """{description}

Write a short Python function `{signature}` that {goal}
Input: {inputs}
Return: {returns}

Rules: only these standard-library modules may be imported: {imports}. No file, network or
process access; no eval, exec, open, getattr, classes, or names and attributes starting with
an underscore. Put any helpers in the same code block.
Answer with the complete function in one ```python code block."""


def task_prompt(spec: EnvSpec, params: Mapping[str, Any] | None = None) -> str:
    strategy = spec.strategy
    description = spec.description.strip() or f"An environment called {spec.name}."
    if params:
        description += "\nThis run: " + ", ".join(f"{name}={value}" for name, value in sorted(params.items())) + "."
    return TEMPLATE.format(
        description=description,
        signature=f"def {strategy.function}({', '.join(strategy.args)})",
        goal=strategy.goal,
        inputs=strategy.inputs or ", ".join(strategy.args),
        returns=strategy.returns,
        imports=", ".join(strategy.imports) or "none",
    )
