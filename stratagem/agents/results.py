"""What evaluating a program gives: per episode, and per program.

Every episode that ran is exactly one of: won, drawn, lost (played to its end: ``error`` is None) or an
error of the program (``error`` is one of ``ERROR_KINDS``). ``wrong_answer`` is the error of an episode
the environment ended because the program's result was wrong (``envs/outcome.py``; matmul's wrong
product): it ended, but it was not played and lost. A draw is an episode played to its end, not won,
that the environment calls a tie (OpenSpiel); environments that cannot tie never set it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ERROR_KINDS = ("syntax", "policy", "exception", "illegal_move", "wrong_answer", "timeout", "memory", "forbidden")


class ProgramError(Exception):
    """A program that cannot be played. ``kind`` is ``syntax`` or ``policy``; ``rule`` names the rule."""

    def __init__(self, kind: str, rule: str, message: str, line: int | None = None) -> None:
        where = f" (line {line})" if line else ""
        super().__init__(f"{rule}: {message}{where}")
        self.kind, self.rule, self.message, self.line = kind, rule, message, line


@dataclass
class EpisodeResult:
    seed: int
    score: float = 0.0
    moves: int = 0
    won: bool = False
    draw: bool = False  # played to its end, not won, and the environment says it was a tie
    max_tile: int | None = None
    error: str | None = None  # one of ERROR_KINDS, or None for a game played to its end
    message: str = ""


@dataclass
class ProgramResult:
    sha: str | None
    source: str | None = None
    episodes: list[EpisodeResult] = field(default_factory=list)
    error: str | None = None  # syntax or policy: the program never ran; else a failure while building it
    rule: str | None = None  # for syntax/policy errors found before running: the rule broken (programs.py)
    message: str = ""
    seconds: float = 0.0

    @property
    def wins(self) -> int:
        return sum(e.won for e in self.episodes)

    @property
    def draws(self) -> int:
        return sum(e.draw for e in self.episodes)

    @property
    def losses(self) -> int:
        """Episodes played to their end and neither won nor drawn (errors are counted apart)."""
        return sum(e.error is None and not e.won and not e.draw for e in self.episodes)

    @property
    def win_rate(self) -> float:
        return self.wins / len(self.episodes) if self.episodes else 0.0

    @property
    def played_clean(self) -> bool:
        """The program ran, and played every episode to its end without an error."""
        return self.error is None and bool(self.episodes) and all(e.error is None for e in self.episodes)

    @property
    def mean_score(self) -> float:
        return sum(e.score for e in self.episodes) / len(self.episodes) if self.episodes else 0.0

    @property
    def moves(self) -> int:
        return sum(e.moves for e in self.episodes)
