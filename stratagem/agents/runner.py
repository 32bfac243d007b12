"""Play strategy programs over episodes in sandboxed processes, and trust only what the parent saw.

``Runner.evaluate(completions, seeds)`` plays every program on the same seeds (common random
numbers across a GRPO group), each in a fresh worker from a pool of pre-started, confined
processes (``stratagem/sandbox/pool.py``, ``worker.py``), a few at a time. The parent:

- runs each program in a worker the kernel confines (``stratagem/sandbox``: seccomp, Landlock,
  namespaces, an unprivileged identity, rlimits), and refuses to start where a layer is missing
  unless ``allow_weaker_sandbox`` says otherwise;
- enforces time with its own clock: a per-call limit (the gap between the worker's frames, or
  between a call and its answer), a per-episode limit and the kernel's CPU budget; past any of
  them the worker is killed, so no ``try/except`` inside the program can buy time;
- reads back only JSON it validates, never a pickled object, never a string it must produce by
  calling program code;
- computes every result from a game the program's process cannot reach. In ``play`` mode
  (local, untimed environments: the fast path) the worker plays its own copy and reports the
  actions; the parent replays them on its own copy of the seeded game, and a move the replay
  refuses marks the program as cheating. In ``call`` mode (a server given by ``url``, an
  environment that rewards speed, or one with ``slow_steps``) the parent holds the game and asks the worker for one
  move at a time; for timed environments it thrashes the worker's caches before each call and
  times the call itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from stratagem.agents.jobs import CallJob, Job, PlayJob
from stratagem.agents.programs import Program, ProgramError, load
from stratagem.agents.remote import ServerFailed
from stratagem.agents.results import ERROR_KINDS, EpisodeResult, ProgramResult
from stratagem.envs.rng import EpisodeKey, episode_key
from stratagem.envs.spec import EnvSpec, resolve
from stratagem.sandbox.confine import LAYERS, Policy
from stratagem.sandbox.keys import machine_secret
from stratagem.sandbox.pool import PoolError, SandboxUnavailable, WorkerPool

__all__ = ["ERROR_KINDS", "EpisodeResult", "Limits", "PoolError", "ProgramResult", "Runner", "SandboxUnavailable",
           "ServerFailed"]  # fmt: skip
SCHEDULE_TICK_S = 0.02  # how often the parent looks at the clocks of workers that sent nothing
MAX_ATTEMPTS = 3  # a job whose worker was lost with its zygote is played again, this many times in all
MAX_ACTIONS = 1_000_000  # moves per episode, for environments that declare no max_episode_steps


@dataclass
class Limits:
    move_s: float = 1.0  # wall clock per call of the program (and for the module's top level)
    episode_s: float = 60.0  # wall clock per episode
    memory_mb: int = 512  # address space the program may add
    cpu_s: float = 120.0  # CPU seconds for the whole program

    def __post_init__(self) -> None:
        for name in ("move_s", "episode_s", "memory_mb", "cpu_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive number, got {value!r}")


class Runner:
    """Evaluate programs for one environment. Reuse the instance; ``close()`` (or ``with``) when done."""

    def __init__(self, env: str | EnvSpec = "2048", params: dict[str, Any] | None = None,
                 workers: int | None = None, limits: Limits | None = None, url: str | None = None,
                 allow_weaker_sandbox: bool = False, layers: tuple[str, ...] = LAYERS,
                 secret: bytes | None = None) -> None:  # fmt: skip
        """``layers``: the sandbox's layers to apply (fewer only to study one alone); ``secret``: the key of
        the episodes' randomness and the programs' own random seeds (default: this machine's,
        ``sandbox/keys.py``), so the same seeds and secret give the same games."""
        self.spec = resolve(env) if isinstance(env, (str, Path)) else env
        self.params = dict(params or {})
        self.limits = limits or Limits()
        self.url = url
        self.env = self.spec.make(**self.params)  # the parent's own game: replays, driven play, the program bridge
        self.timed = self.env.timed_calls
        self.mode = "call" if (url is not None or self.timed or self.env.slow_steps) else "play"
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        # Timed calls run one at a time, so that programs do not share the CPU while being timed.
        self.workers = 1 if self.timed else (workers or os.cpu_count() or 1)
        steps = self.params.get("max_episode_steps", self.spec.max_episode_steps)
        self.max_actions = steps if type(steps) is int and steps > 0 else MAX_ACTIONS  # per episode reported
        self.policy = Policy(memory_mb=self.limits.memory_mb, cpu_s=self.limits.cpu_s, layers=tuple(layers),
                             allow_weaker=allow_weaker_sandbox)  # fmt: skip
        self.secret = secret if secret is not None else machine_secret()
        self._pool: WorkerPool | None = None

    def episode_key(self, seed: int) -> EpisodeKey:
        """The key episode ``seed`` is played from, here and in a worker (which never learns the seed)."""
        return episode_key(seed, self.secret)

    @property
    def pool(self) -> WorkerPool:
        """The sandbox's workers, started on first use; raises SandboxUnavailable where a layer is missing."""
        if self._pool is None:
            setup = {"spec": self.spec.model_dump(mode="json"), "params": self.params,
                     "source": str(self.spec.source) if self.spec.source else None}  # fmt: skip
            self._pool = WorkerPool("stratagem.agents.worker", setup, self.policy, size=self.workers)
        return self._pool

    @property
    def sandbox(self) -> dict[str, Any]:
        """The layers in force and the ones missing here (for run records and ``stratagem doctor``)."""
        pool = self.pool
        return {"applied": dict(pool.applied), "missing": dict(pool.missing),
                "allow_weaker": self.policy.allow_weaker}  # fmt: skip

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self.env.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def evaluate(self, completions: Sequence[str], seeds: Sequence[int],
                 record: str | Path | None = None) -> list[ProgramResult]:  # fmt: skip
        """Every completion on every seed; results in the order of ``completions``, episodes in seed order.

        When there are fewer programs than workers, each program's seeds are split over several
        workers. ``record``: a directory that receives one recording per episode (``viz/recording.py``).
        """
        seeds = list(seeds)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
            raise ValueError(f"seeds must be a non-empty list of integers >= 0, got {seeds[:5]}")
        results: list[ProgramResult] = []
        jobs: list[Job] = []
        job_type = PlayJob if self.mode == "play" else CallJob
        programs = [self._load(completion, results) for completion in completions]
        runnable = sum(program is not None for program in programs)
        chunks = min(len(seeds), -(-self.workers // max(1, runnable)))  # enough jobs to keep every worker busy
        for index, program in enumerate(programs):
            if program is not None:
                for part in range(chunks):
                    jobs.append(job_type(self, index, program, seeds[part::chunks], Path(record) if record else None))
        order = {seed: i for i, seed in reversed(list(enumerate(seeds)))}
        for job in self._schedule(jobs):
            result = results[job.index]
            result.episodes = sorted([*result.episodes, *job.episodes], key=lambda e: order[e.seed])
            result.seconds += job.seconds
            if job.build_error is not None:
                result.error, result.message = job.build_error
        return results

    def _load(self, completion: str, results: list[ProgramResult]) -> Program | None:
        try:
            program = load(completion, self.spec.strategy)
        except ProgramError as exc:
            results.append(ProgramResult(sha=None, error=exc.kind, rule=exc.rule, message=str(exc)))
            return None
        results.append(ProgramResult(sha=program.sha, source=program.source))
        return program

    def _schedule(self, jobs: list[Job]) -> Any:
        waiting, running = list(jobs), []
        try:
            while waiting or running:
                while waiting and len(running) < self.workers:
                    job = waiting.pop(0)
                    job.start(self.pool.acquire())
                    running.append(job)
                ready = wait([job.worker.reader.sock for job in running], timeout=SCHEDULE_TICK_S)
                now = time.monotonic()
                for job in list(running):
                    if job.worker.reader.sock in ready:
                        job.receive()
                    if not job.finished:
                        job.check_time(now)
                    if job.finished:
                        job.stop()
                        running.remove(job)
                        if job.lost:  # its zygote died under it: play what is left again, never blame the program
                            waiting.insert(0, self._again(job))
                            continue
                        self.pool.succeeded()
                        yield job
        finally:
            for job in running:  # an error (a failed server) or an abandoned generator
                job.stop()

    def _again(self, job: Job) -> Job:
        if job.attempt >= MAX_ATTEMPTS:
            raise PoolError(f"the sandbox lost program {job.program.sha}'s worker {job.attempt} times; giving up")
        again = type(job)(self, job.index, job.program, job.pending, job.record, attempt=job.attempt + 1)
        again.episodes = job.episodes  # the episodes it did report stand
        return again
