"""What evaluating a program gives: per episode, and per program."""

from __future__ import annotations

from dataclasses import dataclass, field

ERROR_KINDS = ("syntax", "policy", "exception", "illegal_move", "timeout", "memory", "forbidden")


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
    def win_rate(self) -> float:
        return sum(e.won for e in self.episodes) / len(self.episodes) if self.episodes else 0.0

    @property
    def mean_score(self) -> float:
        return sum(e.score for e in self.episodes) / len(self.episodes) if self.episodes else 0.0

    @property
    def moves(self) -> int:
        return sum(e.moves for e in self.episodes)
