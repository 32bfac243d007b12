"""The code sandbox: an environment whose action is Python code, run like a notebook cell.

Each episode has one confined Python process (``stratagem/sandbox/``: the same kernel layers as
strategy programs, seccomp, Landlock, namespaces, an unprivileged identity, rlimits; time
enforced from outside; stopped between cells), started at reset and killed at the next reset, at
the episode's end or at close. Its root and working directory is a scratch directory of
``scratch_mb`` (files written there last until the episode ends, and nothing else is visible).
Variables persist from step to step, as in a REPL, and vanish at reset. The observation is what
a notebook shows: stdout, stderr (a traceback when the cell raised), ``exit_code`` (0 ran, 1
raised), the repr of a final expression (``result``) and the wall time. On the wire the
observation is OpenEnv's ``CodeObservation`` (``stdout``, ``stderr``, ``exit_code``), so its
``CodingEnv`` client reads it; the rest (``result``, ``duration_s``, ``state_lost``, ``steps_left``,
``task``, ``task_outcome``) travels in its ``metadata``, which every OpenEnv observation accepts,
and Python reads them as properties of the observation (``obs.result``).

When a cell runs past ``timeout_s`` the process is killed (``exit_code`` 124); when it dies of
a limit (CPU budget: 128 + SIGXCPU = 152) likewise. The episode goes on: the next step runs in
a fresh process, and the observation says ``state_lost``, with stderr naming the cause. A
notebook whose kernel died restarts it; ending the episode instead would punish an agent for
discovering the limit, and reset is there when it wants to start over.

Reward: 0.0 a step (the sandbox is a tool; a number still, as OpenEnv's validators require), unless
``task`` names a registered environment with a strategy function, such as ``matmul``. Then every
step whose cell (re)defines that function plays one episode of the task with it, in this sandbox
process, and the step's reward is that episode's score; for matmul, the speedup over the textbook
loop, timed from outside as the strategy runner times it: by the process's CPU clock, charging the
first answer with every cell run since the task was last scored (so work done ahead, in this cell or
an earlier one, is not free). The task's episodes come from this episode's keyed stream: a cell
cannot know them in advance. The task's rules stay in its environment: this module only calls
``program_inputs``, ``program_action`` and ``step``, exactly as the runner does, and read its verdict
as the runner does (``envs/outcome.py``): a wrong product is the outcome's error ``wrong_answer``, with
the first wrong cell in its message, and scores 0; a correct one no faster than the loop is not won.
"""

from __future__ import annotations

import signal
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import NotRequired, TypedDict

from stratagem.envs.core import Action, EnvError, Environment, EpisodeNotActive, Observation, State
from stratagem.envs.outcome import DRAW, ERROR_OUTCOMES, episode_outcome
from stratagem.envs.rng import WARM_UP, Seed, episode_rng, new_seed, seed_number
from stratagem.envs.spec import EnvSpec, resolve
from stratagem.sandbox.repl import TIMEOUT_EXIT, CallFailed, Lost, Ran, ReplProcess

TASKS = "sandbox/tasks"
FORBIDDEN_CALL_EXIT = 128 + signal.SIGSYS  # the process made a system call the sandbox forbids

MAX_CODE_CHARS = 100_000
CLIENT_SHARE = 0.8  # of a client's own step deadline, the most a cell may use: the rest reports back
STATE_LOST = "every variable defined so far is gone; the next step runs in a fresh process"


class SandboxAction(Action):
    code: str = Field(
        max_length=MAX_CODE_CHARS,
        description="Python source, run like a notebook cell in this episode's namespace; the value of a final "
        "expression statement is returned as `result`",
    )


class TaskOutcome(BaseModel):
    """One episode of the task, played by the function the step's cell defined."""

    model_config = ConfigDict(extra="forbid")
    function: str
    seed: int
    score: float = Field(description="the episode's total reward (0 when it ended in an error): the step's reward")
    won: bool = False
    draw: bool = Field(default=False, description="played to its end, not won, and the task's environment says tie")
    moves: int = 0
    error: str | None = Field(
        default=None, description="exception, illegal_move, wrong_answer (a wrong result), timeout, crash or forbidden"
    )
    message: str = ""


class SandboxMetadata(TypedDict, total=False):
    """What a notebook shows beside a cell's output: the observation's ``metadata`` (every key, every time)."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]
    result: NotRequired[str | None]  # repr of the final expression's value (None: no value)
    duration_s: NotRequired[float]  # wall time of the cell, measured outside the sandbox
    state_lost: NotRequired[bool]  # the sandbox process was replaced: every variable is gone
    steps_left: NotRequired[int]  # steps before the episode ends
    task: NotRequired[str | None]  # at reset, when a task is set: what to define
    task_outcome: NotRequired[TaskOutcome | None]  # the task's episode, when the step's cell played one


class SandboxObservation(Observation):
    """OpenEnv's ``CodeObservation`` (``stdout``, ``stderr``, ``exit_code``); the rest in ``metadata``."""

    stdout: str = ""
    stderr: str = Field(default="", description="the traceback when the cell raised; the cause when state was lost")
    exit_code: int = Field(default=0, description="0 ran, 1 raised, 124 killed after timeout_s, 128+N died of signal N")
    metadata: SandboxMetadata = Field(  # type: ignore[assignment]
        default_factory=dict,  # type: ignore[arg-type]
        description="result (repr of the final expression's value; null: no value), duration_s (the cell's wall "
        "time, measured outside the sandbox), state_lost (the process was replaced: every variable is gone), "
        "steps_left, task (at reset, when a task is set: what to define), task_outcome (the task's episode, when "
        "the cell played one)",
    )

    # The metadata's keys as attributes, for Python callers (``obs.result``); the wire has them in metadata.
    @property
    def result(self) -> str | None:
        return self.metadata.get("result")

    @property
    def duration_s(self) -> float:
        return self.metadata.get("duration_s", 0.0)

    @property
    def state_lost(self) -> bool:
        return self.metadata.get("state_lost", False)

    @property
    def steps_left(self) -> int:
        return self.metadata.get("steps_left", 0)

    @property
    def task(self) -> str | None:
        return self.metadata.get("task")

    @property
    def task_outcome(self) -> TaskOutcome | None:
        outcome = self.metadata.get("task_outcome")
        return TaskOutcome.model_validate(outcome) if isinstance(outcome, dict) else outcome


class SandboxState(State):
    seed: int | None = None
    done: bool = False
    last_exit_code: int = Field(default=0, description="the last cell's exit_code (OpenEnv's CodeState field)")
    restarts: int = Field(default=0, description="sandbox processes replaced after a timeout or a crash")
    task: str | None = None


def _check(name: str, value: Any, low: float, high: float, kind: type = float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ValueError(f"{name} must be {'a number' if kind is float else 'an integer'}, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low:g}..{high:g}, got {value!r}")


class SandboxTask:
    """A registered environment with a strategy function, played through the sandbox process."""

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        spec: EnvSpec = resolve(name)
        if issubclass(spec.env_class(), SandboxEnv):
            raise ValueError("task must name an environment with a strategy function, not the sandbox itself")
        self.name, self.strategy = spec.name, spec.strategy
        self.env = spec.make(**params)

    def prompt(self) -> str:
        s = self.strategy
        inputs = f" Input: {s.inputs}." if s.inputs else ""
        return (f"Define {s.function}({', '.join(s.args)}) that {s.goal}{inputs} Return: {s.returns}. Each step whose "
                f"code (re)defines {s.function} is scored on one episode of {self.name!r}: that score is the step's "
                "reward.")  # fmt: skip

    def play(self, repl: ReplProcess, seed: int, timeout_s: float) -> tuple[TaskOutcome, bool]:
        """(outcome, whether the sandbox process was lost) of one episode played by the cell's function."""
        env, function = self.env, self.strategy.function
        outcome, lost = TaskOutcome(function=function, seed=seed, score=0.0), False
        obs = env.reset(seed=seed, episode_id=f"seed-{seed}")
        try:
            while not obs.done:
                value, elapsed = repl.call(function, list(env.program_inputs(obs)), timeout_s, timed=env.timed_calls)
                action = env.program_action(value, elapsed_s=elapsed) if env.timed_calls else env.program_action(value)
                obs = env.step(action)
                outcome.moves += 1
                outcome.score += obs.reward or 0.0
            verdict, message = episode_outcome(obs.metadata)
            if verdict in ERROR_OUTCOMES:  # e.g. a wrong product: an error of the function, not a game it lost
                outcome.error, outcome.message = verdict, message[:500]
            else:
                outcome.won = bool(getattr(obs, "won", False))
                outcome.draw = not outcome.won and verdict == DRAW
        except CallFailed as exc:
            outcome.error, outcome.message = "exception", str(exc)
        except Lost as exc:
            outcome.error = {TIMEOUT_EXIT: "timeout", FORBIDDEN_CALL_EXIT: "forbidden"}.get(exc.exit_code, "crash")
            outcome.message, lost = f"{function}: {exc.message}; {STATE_LOST}", True
        except (ValueError, EnvError) as exc:  # the return value, refused as a move
            outcome.error, outcome.message = "illegal_move", str(exc)[:500]
        if outcome.error is not None:
            outcome.score = 0.0  # an error never scores above playing and losing
        return outcome, lost


class SandboxEnv(Environment):
    # A step starts and drives the environment's own sandboxed process: the runner holds the environment in the
    # parent and asks the program for one cell at a time, since the program's sandbox may not start processes.
    slow_steps = True
    action_type = SandboxAction
    observation_type = SandboxObservation
    state_type = SandboxState

    def __init__(self, timeout_s: float = 10.0, memory_mb: int = 512, cpu_s: float = 300.0,
                 max_output_chars: int = 8192, max_episode_steps: int = 50, task: str | None = None,
                 task_params: dict[str, Any] | None = None, scratch_mb: int = 64,
                 allow_weaker_sandbox: bool = False) -> None:  # fmt: skip
        _check("timeout_s", timeout_s, 0.01, 600)
        _check("memory_mb", memory_mb, 64, 65536, int)  # timed calls thrash 32 MiB
        _check("cpu_s", cpu_s, 1, 86400)
        _check("max_output_chars", max_output_chars, 100, 1_000_000, int)
        _check("max_episode_steps", max_episode_steps, 1, 1_000_000, int)
        _check("scratch_mb", scratch_mb, 1, 65536, int)
        if not isinstance(allow_weaker_sandbox, bool):
            raise ValueError(f"allow_weaker_sandbox must be true or false, got {allow_weaker_sandbox!r}")
        if task is not None and not isinstance(task, str):
            raise ValueError(f"task must be the name of a registered environment (e.g. matmul), got {task!r}")
        if task_params is not None and (task is None or not isinstance(task_params, dict)):
            raise ValueError("task_params must be a mapping of the task's parameters, and needs a task")
        self.timeout_s, self.memory_mb, self.cpu_s = float(timeout_s), memory_mb, float(cpu_s)
        self.max_output_chars, self.max_episode_steps = max_output_chars, max_episode_steps
        self.scratch_mb, self.allow_weaker_sandbox = scratch_mb, allow_weaker_sandbox
        self.task = SandboxTask(task, task_params or {}) if task else None
        self._repl: ReplProcess | None = None
        self._rng = episode_rng(WARM_UP, TASKS)
        self._state = SandboxState()

    def reset(self, seed: Seed | None = None, episode_id: str | None = None) -> SandboxObservation:
        self._stop()
        seed = new_seed() if seed is None else seed
        self._rng = episode_rng(seed, TASKS)  # the task's episodes: reproducible from the seed, unknowable without
        self._state = SandboxState(episode_id=episode_id or str(uuid.uuid4()), seed=seed_number(seed),
                                   task=self.task.name if self.task else None)  # fmt: skip
        self._repl = self._start()  # starts while the agent thinks; the first step waits for it if need be
        return self._observe(Ran(), reward=None, task=self.task.prompt() if self.task else None)

    def step(self, action: Action | dict[str, Any], timeout_s: float | None = None) -> SandboxObservation:
        """Run the cell. A client's own deadline (``timeout_s``) caps the cell at 80% of it, leaving time to answer."""
        action = self.parse_action(action)
        st = self._state
        if st.episode_id is None:
            raise EpisodeNotActive("no episode has started: call reset first")
        if st.done:
            raise EpisodeNotActive(f"the episode is over (max_episode_steps={self.max_episode_steps}): call reset")
        limit = self.timeout_s if timeout_s is None else min(self.timeout_s, CLIENT_SHARE * timeout_s)
        if self._repl is None:
            self._repl = self._start()
        ran = self._repl.run(action.code, limit)
        if ran.state_lost:
            ran.stderr = f"{ran.stderr}; {STATE_LOST}"
            self._lost()
        reward, outcome = 0.0, None
        if self.task is not None:
            if ran.rebound and self._repl is not None:
                outcome, lost = self.task.play(self._repl, self._rng.randrange(2**31), limit)
                reward = outcome.score
                if lost:
                    ran.state_lost = True
                    self._lost()
        st.step_count += 1
        st.last_exit_code = ran.exit_code
        st.done = st.step_count >= self.max_episode_steps
        if st.done:
            self._stop()
        return self._observe(ran, reward=reward, outcome=outcome)

    @property
    def state(self) -> SandboxState:
        return self._state

    def close(self) -> None:
        """Kill the process but keep its handle: a step racing the close then reports the kill
        (``state_lost``, exit 137) instead of quietly starting a fresh process."""
        if self._repl is not None:
            self._repl.kill()

    def _start(self) -> ReplProcess:
        return ReplProcess(self.memory_mb, self.cpu_s, self.max_output_chars,
                           watch=self.task.strategy.function if self.task else None, scratch_mb=self.scratch_mb,
                           allow_weaker_sandbox=self.allow_weaker_sandbox)  # fmt: skip

    def _lost(self) -> None:
        self._stop()
        self._state.restarts += 1

    def _stop(self) -> None:
        repl, self._repl = self._repl, None
        if repl is not None:
            repl.kill()

    def _observe(self, ran: Ran, reward: float | None, task: str | None = None,
                 outcome: TaskOutcome | None = None) -> SandboxObservation:  # fmt: skip
        st = self._state
        return SandboxObservation(
            stdout=ran.stdout,
            stderr=ran.stderr,
            exit_code=ran.exit_code,
            metadata={
                "result": ran.result,
                "duration_s": ran.duration_s,
                "state_lost": ran.state_lost,
                "steps_left": self.max_episode_steps - st.step_count,
                "task": task,
                "task_outcome": outcome,
            },
            done=st.done,
            reward=reward,
        )

    # --- Gymnasium (gym/env.py) ---------------------------------------------------------------
    def gym_spaces(self) -> tuple[Any, Any]:
        """The cell's code as ``Text``; what a notebook shows as a ``Dict``.

        Texts are escaped to printable ASCII (``gym_text.py``), so any output fits its space;
        ``result`` is "" when the cell had no value, ``task_outcome`` the outcome as JSON less its
        score, which is the reward ("" when no task was played), ``state_lost`` 1 when the process
        was replaced. ``duration_s`` is left out: check_env requires the same observation and info
        from the same seed and actions, and a wall time is never the same twice.
        """
        import numpy as np
        from gymnasium import spaces

        from stratagem.envs.gym_text import text_space

        text = text_space(self._gym_text_length)
        return spaces.Dict({
            "stdout": text, "stderr": text, "result": text, "task": text, "task_outcome": text,
            "exit_code": spaces.Box(0, 255, (), np.int64),
            "state_lost": spaces.Discrete(2),
            "steps_left": spaces.Discrete(self.max_episode_steps + 1),
        }), text_space(MAX_CODE_CHARS)  # fmt: skip

    def to_gym_obs(self, observation: SandboxObservation) -> dict[str, Any]:
        import numpy as np

        from stratagem.envs.gym_text import printable

        outcome = observation.task_outcome.model_dump_json(exclude={"score"}) if observation.task_outcome else ""
        texts = {"stdout": observation.stdout, "stderr": observation.stderr, "result": observation.result or "",
                 "task": observation.task or "", "task_outcome": outcome}  # fmt: skip
        return {
            **{name: printable(value, self._gym_text_length) for name, value in texts.items()},
            "exit_code": np.array(observation.exit_code, dtype=np.int64),
            "state_lost": np.int64(observation.state_lost),
            "steps_left": np.int64(observation.steps_left),
        }

    def from_gym_action(self, action: Any, observation: SandboxObservation) -> SandboxAction:
        return SandboxAction(code=action)

    def gym_info(self, metadata: dict[str, Any]) -> dict[str, Any]:
        """What Gymnasium's ``info`` takes from a step's metadata: all but ``duration_s``, a wall time
        (check_env requires the same info from the same seed and actions, as the observation leaves it out)."""
        return {key: value for key, value in metadata.items() if key != "duration_s"}

    @property
    def _gym_text_length(self) -> int:
        """Room for a capped output, its omission note and a lost state's note, every character escaped."""
        from stratagem.envs.gym_text import ESCAPE_WIDTH

        return ESCAPE_WIDTH * (self.max_output_chars + len(STATE_LOST) + 200)
