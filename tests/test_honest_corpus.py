"""The honest corpus (``honest_corpus.py``) scores exactly as it does without any sandbox, in every environment.

A false cheat is as serious as an escape: it teaches a policy to avoid correct code. Every program here is
honest, many in unusual ways, and each is played twice on the same episodes: through ``Runner.evaluate``
with every kernel layer on (extraction, the static rules, a confined worker, the parent's replay), and
in this process, called directly by the environment's own loop (``in_process``). Score, moves, error and
outcome must be identical; for matmul, whose score is a speedup (a time) and whose win is a speedup above 1,
the moves and error (a wrong product is an error: ``wrong_answer``).

One ``Runner.evaluate`` call per environment batches all its programs. The programs' own ``random`` is
seeded here as the worker seeds it, and every episode is played from the key the runner plays it from
(``Runner.episode_key``), so even programs that draw random numbers must agree move for move.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from stratagem.agents.programs import build, load
from stratagem.agents.rewards import outcomes
from stratagem.agents.runner import Limits, Runner
from stratagem.envs.core import EnvError, InvalidAction
from stratagem.envs.outcome import ERROR_OUTCOMES, episode_outcome
from stratagem.envs.spec import load_spec, manifest_paths, resolve
from stratagem.sandbox.keys import derive_seed
from tests.honest_corpus import CORPORA, EXAMPLES, Honest, example

LIMITS = Limits(move_s=2.0, episode_s=60, memory_mb=512, cpu_s=60)
HIGHER_LOWER = EXAMPLES / "custom_env" / "openenv.yaml"
# corpus -> (environment, parameters, seeds). Few seeds and short Atari episodes: the corpus is wide, not deep.
ENVIRONMENTS: dict[str, tuple[str | Path, dict[str, Any], list[int]]] = {
    "2048": ("2048", {}, [5]),
    "pong": ("pong", {"max_episode_steps": 150}, [3]),
    "breakout": ("breakout", {"max_episode_steps": 150}, [3]),
    "tic_tac_toe": ("openspiel", {"game": "tic_tac_toe"}, [0, 1]),
    "connect_four": ("openspiel", {"game": "connect_four"}, [0]),
    "kuhn_poker": ("openspiel", {"game": "kuhn_poker"}, [0, 1]),
    "matmul": ("matmul", {"size": 12, "trials": 2}, [0]),
    "higher-lower": (HIGHER_LOWER, {}, [0, 1, 2]),
}
# Every built-in manifest with a strategy function, and the corpora that play it.
COVERAGE = {
    "2048": ["2048"],
    "atari": ["pong", "breakout"],  # the generic Atari manifest: the same entry point, Pong unless told otherwise
    "pong": ["pong"],
    "breakout": ["breakout"],
    "openspiel": ["tic_tac_toe", "connect_four", "kuhn_poker"],
    "matmul": ["matmul"],
}
NOT_STRATEGY_ENVIRONMENTS = {"sandbox"}  # code cells, not a strategy function (its matmul task is a cell's)


def fenced(source: str) -> str:
    """The completion a model would give: one fenced block, taken by extraction exactly as written."""
    return f"```python\n{source}\n```"


def spec_of(env: str | Path) -> Any:
    return load_spec(env) if isinstance(env, Path) else resolve(env)


class _ProgramFailed(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def _guarded(fn: Any) -> Any:
    """The program's call as the worker makes it: its own failure (an exception, memory) is its error kind."""

    def call(*args: Any) -> Any:
        try:
            return fn(*args)
        except MemoryError:
            raise _ProgramFailed("memory") from None
        except Exception:
            raise _ProgramFailed("exception") from None

    return call


def _play(env: Any, call: Any, seed: int) -> tuple:
    """``env.play`` then ``env.replay``, as the worker and the parent do between them."""
    actions: list = []
    error = None
    try:
        env.play(seed, call, actions)
    except _ProgramFailed as exc:
        error = exc.kind
    except (ValueError, EnvError):
        error = "illegal_move"
    obs, score = env.replay(seed, actions)
    error = error or _verdict(obs)
    return score, len(actions), error, bool(getattr(obs, "won", False)) and obs.done and error is None


def _verdict(obs: Any) -> str | None:
    """The environment's word on a finished episode, as the runner reads it: a wrong result is an error."""
    outcome, _ = episode_outcome(obs.metadata) if obs.done else (None, "")
    return outcome if outcome in ERROR_OUTCOMES else None


def _drive(env: Any, call: Any, seed: int, timed: bool) -> tuple:
    """One call per move with plain data both ways, as the parent drives a worker in call mode."""
    obs, moves, score, error = env.reset(seed=seed, episode_id=f"seed-{seed}"), 0, 0.0, None
    while not obs.done:
        args = orjson.loads(orjson.dumps(list(env.program_inputs(obs))))
        try:
            value = orjson.loads(orjson.dumps(call(*args)))
        except _ProgramFailed as exc:
            error = exc.kind
            break
        try:
            obs = env.step(env.program_action(value, elapsed_s=1.0) if timed else env.program_action(value))
        except (ValueError, InvalidAction):
            error = "illegal_move"
            break
        moves += 1
        score += obs.reward or 0.0
    error = error or _verdict(obs)
    won = bool(getattr(obs, "won", False)) and obs.done and error is None
    return None if timed else score, moves, error, None if timed else won


def in_process(runner: Runner, env: Any, source: str, seeds: list[int]) -> list[tuple]:
    """(score, moves, error, won) per seed, the program called directly in this process: no sandbox at all.

    ``env`` is a game of this process's own (made like the runner's); every episode starts with a reset.
    """
    spec, key = runner.spec, getattr(runner, "episode_key", lambda seed: seed)
    program_seeds = [derive_seed(runner.secret, "program-random", seed) for seed in seeds]
    random.seed(program_seeds[0])  # the worker seeds the program's random before building it
    call = _guarded(build(load(fenced(source), spec.strategy), spec.strategy))
    played = []
    for seed, program_seed in zip(seeds, program_seeds, strict=True):
        if runner.mode == "play":
            random.seed(program_seed)  # and again before each episode it plays
            played.append(_play(env, call, key(seed)))
        else:  # call mode: once per job
            played.append(_drive(env, call, key(seed), runner.timed))
    return played


def sandboxed(runner: Runner, result: Any) -> list[tuple]:
    return [(None if runner.timed else e.score, e.moves, e.error, None if runner.timed else e.won)
            for e in result.episodes]  # fmt: skip


@pytest.mark.timeout(120)
@pytest.mark.parametrize("corpus", list(ENVIRONMENTS))
def test_honest_programs_score_as_they_do_without_a_sandbox(corpus: str) -> None:
    env, params, seeds = ENVIRONMENTS[corpus]
    programs = CORPORA[corpus]()
    with Runner(spec_of(env), params, workers=2, limits=LIMITS) as runner:
        results = runner.evaluate([fenced(p.source) for p in programs], seeds)
        game, mismatches = runner.spec.make(**runner.params), []
        for program, result in zip(programs, results, strict=True):
            if result.error is not None or "cheat" in outcomes(result):
                mismatches.append((program.name, "refused or cheat", result.error, result.rule, result.message,
                                   [e.message for e in result.episodes]))  # fmt: skip
                continue
            if " corpus " not in program.name and any(e.error for e in result.episodes):  # hand-written: clean
                mismatches.append((program.name, "did not play clean", [(e.error, e.message) for e in result.episodes]))
                continue
            expected = in_process(runner, game, program.source, seeds)
            if sandboxed(runner, result) != expected:
                mismatches.append((program.name, "sandboxed", sandboxed(runner, result), "in-process", expected))
        game.close()
    assert not mismatches, "\n".join(map(str, mismatches))


def test_the_corpus_is_wide_and_covers_every_environment_with_a_strategy_function() -> None:
    sizes = {corpus: len(make()) for corpus, make in CORPORA.items()}
    assert sum(sizes.values()) >= 200, sizes
    assert all(size >= 5 for size in sizes.values()), sizes
    manifests = {load_spec(path).name for path in manifest_paths()}
    assert manifests - NOT_STRATEGY_ENVIRONMENTS == set(COVERAGE), manifests
    assert {c for covered in COVERAGE.values() for c in covered} | {"higher-lower"} == set(ENVIRONMENTS)
    assert load_spec(HIGHER_LOWER).strategy.function == "strategy"  # the example environment with a manifest
    names = [p.name for make in CORPORA.values() for p in make()]
    assert len(names) == len(set(names)), "every program has its own name"


# Honest uses of ``typing`` at run time, where typing's own code raises audit events for its bookkeeping:
# typing_extensions (imported by pydantic in the zygote) makes any subscription (``typing.List[int]`` as a value)
# call sys._getframe; TypeVar and ParamSpec call it themselves; ``typing.overload`` reads ``func.__code__``
# (object.__getattr__). Raised by a library frame, not the program's, these are not cheats (audit.py's
# LIBRARY_BOOKKEEPING); the same events raised by the program's own frame are (test_hostile.py).
CORNER = example("strategies/corner_2048.py")
TYPING_AT_RUN_TIME: list[Honest] = [
    Honest("a typing alias", "import typing\n\nBoard = typing.List[typing.List[int]]\n" + CORNER),
    Honest("typing subscripted in a call", CORNER.replace(
        "def strategy(board):\n", "import typing\n\n\ndef strategy(board):\n    typing.Optional[int]\n", 1)),
    Honest("a TypeVar", "import typing\n\nT = typing.TypeVar('T')\n" + CORNER),
    Honest("typing.overload", "import typing\n\n\n@typing.overload\ndef f(x: int) -> int: ...\n\n\n" + CORNER),
]  # fmt: skip


@pytest.fixture(scope="module")
def typing_results() -> dict[str, Any]:
    with Runner("2048", workers=2, limits=LIMITS) as runner:
        results = runner.evaluate([fenced(p.source) for p in TYPING_AT_RUN_TIME], [5])
    return {p.name: result for p, result in zip(TYPING_AT_RUN_TIME, results, strict=True)}


@pytest.mark.parametrize("name", [p.name for p in TYPING_AT_RUN_TIME])
def test_honest_uses_of_typing_at_run_time_are_not_cheats(typing_results: dict[str, Any], name: str) -> None:
    assert outcomes(typing_results[name]) == ["loss"], typing_results[name].episodes
