"""The matmul speed task from the kernel-RL notebook: ``matmul(A, B)`` in pure Python, fast.

An episode is ``trials`` calls on fresh random float matrices whose shapes vary, drawn from the
episode's keyed stream (``envs/rng.py``): knowing the seed, a program still cannot know its
inputs before the call that brings them. Each answer is checked against the textbook triple
loop (``TEXTBOOK_MATMUL``) run here on the same matrices, caches thrashed first; that run's CPU
time is the baseline. A wrong answer ends the episode with reward 0 and, in its metadata, the
outcome ``wrong_answer`` and the first wrong cell (``envs/outcome.py``): the runner scores that as an
error of the program, below a loss. ``trials`` right answers end it with the speedup as the last
step's reward: total baseline time / total program time, capped at ``MAX_SPEEDUP`` (1000). It is won
only when the speedup is above 1, faster than the baseline measured in the same episode; a correct
program no faster than the textbook loop has played to the end and lost. The program's time is the
runner's word (below); over the wire it is the client's, and a client could claim any time, so the
reward has a ceiling that a manifest can declare (pure Python stays far below it: around 10x).

What the program's clock covers. The program's time arrives with each answer as ``elapsed_s``,
measured by whoever ran it from outside the program's process. The runners here (the strategy
runner and the code sandbox) read the program process's CPU clock (user + system): each answer
is charged with all the CPU its process used since the previous answer, and the first answer
with everything since the process took the program, so work done while the module loads (top-
level code, default arguments, tables built at import) counts as much as work done in the call.
Only the cache thrashing before each call, which is ours, is left out; decoding the matrices and
encoding the answer stay in (a bias against the program, about 1% at the default size, never for
it). CPU time, unlike wall time, is not inflated by whatever else the machine runs.

Two runners drive these same rules: the strategy runner (a program, checked statically, in a
pool worker) and the code sandbox (``envs/sandbox.py`` with ``task: matmul``: an agent's cell
defines ``matmul`` in its REPL process, which is timed the same way from outside).

What a program cannot use: the reference product (it never leaves this process), the timer
(it runs in another process), numpy (not importable), a cache (every call gets fresh
matrices, so a cache can only hand back a stale answer), or a lazy result (the answer must be
plain lists of numbers before the clock stops).
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

from pydantic import Field

from stratagem.envs.core import Action, Environment, EpisodeNotActive, InvalidAction, Observation, State
from stratagem.envs.outcome import LOSS, OUTCOME, WIN, wrong_answer
from stratagem.envs.rng import WARM_UP, Seed, episode_rng, new_seed, seed_number
from stratagem.sandbox.timing import thrash_caches

TEXTBOOK_MATMUL = """def matmul(A, B):
    n, k, m = len(A), len(B), len(B[0])
    C = [[0.0] * m for _ in range(n)]
    for i in range(n):
        for j in range(m):
            total = 0.0
            for p in range(k):
                total += A[i][p] * B[p][j]
            C[i][j] = total
    return C
"""
_namespace: dict[str, Any] = {}
exec(TEXTBOOK_MATMUL, _namespace)  # our own constant code: one text serves as reference and baseline program
reference_matmul = _namespace["matmul"]

RELATIVE_TOLERANCE = 1e-9
MAX_SPEEDUP = 1000.0  # the reward's ceiling (the manifest's validation.reward.range)


MATRICES = "matmul/matrices"


class MatmulAction(Action):
    C: list[list[float]] = Field(description="the product A times B")
    elapsed_s: float = Field(
        gt=0,
        description="the program's time for this answer, measured outside it (the "
        "runners charge CPU time since the previous answer, the first since loading)",
    )


class MatmulObservation(Observation):
    A: list[list[float]] = Field(description="n x k, the left factor of this trial ([] once done)")
    B: list[list[float]] = Field(description="k x m, the right factor of this trial ([] once done)")
    trial: int = Field(description="trials answered so far")
    trials: int
    correct: bool | None = Field(default=None, description="whether the last answer was right")
    speedup: float | None = Field(
        default=None, description="baseline time / program time (at most 1000), once all trials are right"
    )
    won: bool = Field(default=False, description="every trial right and the speedup above 1")


class MatmulState(State):
    seed: int | None = None
    trial: int = 0
    trials: int = 0
    baseline_s: list[float] = Field(default_factory=list, description="the textbook loop's time, per trial")
    program_s: list[float] = Field(default_factory=list, description="the program's time, per trial")
    done: bool = False

    def speedup(self) -> float:
        """Total over total, so the load time charged to the first answer counts (a median would drop it);
        at most ``MAX_SPEEDUP``."""
        return min(sum(self.baseline_s) / sum(self.program_s), MAX_SPEEDUP)


class MatmulEnv(Environment):
    action_type = MatmulAction
    observation_type = MatmulObservation
    state_type = MatmulState
    timed_calls = True

    def __init__(self, size: int = 96, trials: int = 3, max_episode_steps: int | None = None) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or not 2 <= size <= 256:
            raise ValueError(f"size must be an integer in 2..256 (the largest matrix side), got {size!r}")
        if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= 100:
            raise ValueError(f"trials must be an integer in 1..100, got {trials!r}")
        self.size, self.trials = size, trials
        self._rng = episode_rng(WARM_UP, MATRICES)
        self._state = MatmulState(trials=trials)
        self._A: list[list[float]] = []
        self._B: list[list[float]] = []
        self._C: list[list[float]] = []

    def reset(self, seed: Seed | None = None, episode_id: str | None = None) -> MatmulObservation:
        seed = new_seed() if seed is None else seed
        self._rng = episode_rng(seed, MATRICES)
        self._state = MatmulState(
            episode_id=episode_id or str(uuid.uuid4()), seed=seed_number(seed), trials=self.trials
        )
        self._draw()
        return self._observe(reward=None, correct=None)

    def step(self, action: Action | dict[str, Any], timeout_s: float | None = None) -> MatmulObservation:
        action = self.parse_action(action)
        st = self._state
        if st.episode_id is None:
            raise EpisodeNotActive("no episode has started: call reset first")
        if st.done:
            raise EpisodeNotActive("the episode is over: call reset to start a new one")
        n, m = len(self._A), len(self._B[0])
        if len(action.C) != n or any(len(row) != m for row in action.C):
            rows = {len(row) for row in action.C}
            raise InvalidAction(f"the product of a {n}x{len(self._B)} and a {len(self._B)}x{m} matrix is {n}x{m}; "
                                f"got {len(action.C)} rows of lengths {sorted(rows)[:5]}")  # fmt: skip
        wrong = first_wrong_cell(action.C, self._C)
        st.step_count += 1
        st.trial += 1
        st.program_s.append(action.elapsed_s)
        if wrong is not None:
            st.done = True
            return self._observe(reward=0.0, correct=False, wrong=wrong)
        if st.trial == self.trials:
            st.done = True
            return self._observe(reward=st.speedup(), correct=True)
        self._draw()
        return self._observe(reward=0.0, correct=True)

    @property
    def state(self) -> MatmulState:
        return self._state

    def program_inputs(self, observation: MatmulObservation) -> tuple[list[list[float]], list[list[float]]]:
        return [row[:] for row in observation.A], [row[:] for row in observation.B]

    def program_action(self, value: Any, elapsed_s: float) -> MatmulAction:
        """Exactly a list of lists of int/float: nothing lazy, nothing that converts itself."""
        if type(value) is not list or any(type(row) is not list for row in value):
            raise ValueError(
                f"matmul returned a {type(value).__name__}; expected a list of rows, each a list of floats"
            )
        if any(type(x) not in (float, int) for row in value for x in row):
            raise ValueError("matmul returned a matrix holding something other than numbers")
        return MatmulAction(C=value, elapsed_s=elapsed_s)

    # Gymnasium's view (gym/env.py): the factors zero-padded to size x size, where the padded product is the
    # product padded, so ``obs["A"] @ obs["B"]`` is a right answer; ``shape`` is (n, k, m), zeros once done.
    def gym_spaces(self) -> tuple[Any, Any]:
        import numpy as np
        from gymnasium import spaces

        s = self.size
        factor = spaces.Box(-1.0, 1.0, (s, s), np.float64)
        observation = spaces.Dict({"A": factor, "B": factor, "shape": spaces.MultiDiscrete([s + 1] * 3)})
        return observation, spaces.Box(-float(s), float(s), (s, s), np.float64)  # |C_ij| <= k <= size

    def to_gym_obs(self, observation: MatmulObservation) -> dict[str, Any]:
        import numpy as np

        padded = {}
        for name, rows in (("A", observation.A), ("B", observation.B)):
            padded[name] = np.zeros((self.size, self.size), dtype=np.float64)
            if rows:
                padded[name][: len(rows), : len(rows[0])] = rows
        n, k = len(observation.A), len(observation.B)
        m = len(observation.B[0]) if observation.B else 0
        return {**padded, "shape": np.array([n, k, m], dtype=np.int64)}

    def from_gym_action(self, action: Any, observation: MatmulObservation, elapsed_s: float) -> MatmulAction:
        """The top-left n x m block of the padded answer; ``elapsed_s`` is the agent's time, taken by the adapter."""
        import numpy as np

        n, m = len(observation.A), len(observation.B[0]) if observation.B else 0
        return MatmulAction(C=np.asarray(action, dtype=np.float64)[:n, :m].tolist(), elapsed_s=elapsed_s)

    def _draw(self) -> None:
        """Fresh matrices for the next trial, and the baseline's answer and time on them."""
        rng, low = self._rng, max(1, self.size // 2)
        n, k, m = rng.randint(low, self.size), rng.randint(low, self.size), rng.randint(low, self.size)
        self._A = [[rng.uniform(-1.0, 1.0) for _ in range(k)] for _ in range(n)]
        self._B = [[rng.uniform(-1.0, 1.0) for _ in range(m)] for _ in range(k)]
        thrash_caches()
        started = time.thread_time()  # CPU time, as the program's: whatever else runs does not count
        self._C = reference_matmul(self._A, self._B)
        self._state.baseline_s.append(time.thread_time() - started)

    def _observe(self, reward: float | None, correct: bool | None, wrong: str | None = None) -> MatmulObservation:
        st = self._state
        finished = st.done and correct is True
        speedup = st.speedup() if finished else None
        won = speedup is not None and speedup > 1.0
        metadata = wrong_answer(wrong) if wrong is not None else {OUTCOME: WIN if won else LOSS} if finished else {}
        return MatmulObservation(
            A=[] if st.done else self._A,
            B=[] if st.done else self._B,
            trial=st.trial,
            trials=self.trials,
            correct=correct,
            speedup=speedup,
            won=won,
            done=st.done,
            reward=reward,
            metadata=metadata,
        )


def first_wrong_cell(got: list[list[float]], want: list[list[float]]) -> str | None:
    """None when every cell of ``got`` is within tolerance of ``want`` (same shape); else the first wrong one."""
    for i, (got_row, want_row) in enumerate(zip(got, want, strict=True)):
        for j, (value, expected) in enumerate(zip(got_row, want_row, strict=True)):
            if not math.isclose(value, expected, rel_tol=RELATIVE_TOLERANCE, abs_tol=RELATIVE_TOLERANCE):
                return (f"wrong product: C[{i}][{j}] = {value!r}, expected {expected!r} "
                        f"(relative tolerance {RELATIVE_TOLERANCE:g})")  # fmt: skip
    return None
