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
  times the call itself;
- never blames a program for a worker it lost: one killed from outside (the OOM killer, a ``kill``)
  or lost with its zygote has its episode played again in a fresh worker, from the same key, so
  from the same game; an episode lost ``MAX_ATTEMPTS`` times stops the run with ``WorkersKilled``.

Ctrl-C (a KeyboardInterrupt) stops ``evaluate`` at once: every process of the pool is ended and
reaped, and ``Interrupted`` carries the episodes that did finish. ``on_episode`` sees each episode
as it finishes, for a progress display.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from stratagem.agents.interrupts import raises_where_it_lands
from stratagem.agents.jobs import CallJob, Job, PlayJob
from stratagem.agents.programs import Program, ProgramError, load
from stratagem.agents.remote import ServerFailed
from stratagem.agents.results import ERROR_KINDS, EpisodeResult, ProgramResult
from stratagem.envs.rng import EpisodeKey, episode_key
from stratagem.envs.spec import EnvSpec, resolve
from stratagem.sandbox.confine import LAYERS, Policy
from stratagem.sandbox.keys import machine_secret
from stratagem.sandbox.pool import PoolError, SandboxUnavailable, WorkerPool, WorkersKilled

__all__ = ["ERROR_KINDS", "EpisodeResult", "Interrupted", "Limits", "PoolError", "ProgramResult", "Runner",
           "SandboxUnavailable", "ServerFailed", "WorkersKilled"]  # fmt: skip
SCHEDULE_TICK_S = 0.02  # how often the parent looks at the clocks of workers that sent nothing
MAX_ATTEMPTS = 3  # an episode whose worker was lost (killed from outside, or with its zygote) is tried this many times
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


class _Signals:
    """The signals that matter while programs are timed, watched for the length of an ``evaluate``.

    SIGCONT ends a stop of this process (Ctrl-Z then fg, SIGSTOP): its wall clocks jumped, and the jump is not
    the programs' time. SIGINT is noted, and the scheduling loop raises KeyboardInterrupt at its next tick
    (``check``), never wherever the signal lands: raised inside a finaliser (a recording's file closing, say),
    the interpreter would print it and drop it, and the work would go on. Handlers are only set from the main
    thread, and SIGINT's only where it raises where it lands (Python's default or ``interrupts.sticky``; not
    where a caller ignores it)."""

    def __init__(self) -> None:
        self.continued, self.interrupted = 0, False
        self._previous: dict[int, Any] = {}

    def start(self) -> _Signals:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous[signal.SIGCONT] = signal.signal(signal.SIGCONT, self._on_continue)
            if raises_where_it_lands(signal.getsignal(signal.SIGINT)):
                self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_interrupt)
        return self

    def stop(self) -> None:
        import signal

        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _on_continue(self, signum: int, frame: Any) -> None:
        self.continued += 1

    def _on_interrupt(self, signum: int, frame: Any) -> None:
        self.interrupted = True

    def check(self) -> None:
        if self.interrupted:
            raise KeyboardInterrupt


class Interrupted(KeyboardInterrupt):
    """``Runner.evaluate`` was interrupted (a KeyboardInterrupt: Ctrl-C, or what a caller raises for SIGTERM).

    ``results``: one ProgramResult per completion, in their order, holding the episodes that finished (in
    seed order; the rest were not played). ``seeds``: the seeds asked for. ``interrupt``: the exception
    that stopped the work (re-raise it to keep its meaning). The pool's processes are gone when this is raised.
    """

    def __init__(self, results: list[ProgramResult], seeds: list[int], interrupt: BaseException) -> None:
        super().__init__("interrupted")
        self.results, self.seeds, self.interrupt = results, seeds, interrupt

    @property
    def episodes_done(self) -> int:
        return sum(len(result.episodes) for result in self.results)


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
        self._layers: tuple[dict[str, str], dict[str, str]] | None = None  # the last pool's (applied, missing)

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
            self._layers = (dict(self._pool.applied), dict(self._pool.missing))
        return self._pool

    @property
    def sandbox(self) -> dict[str, Any]:
        """The layers in force and the ones missing here (for run records and ``stratagem doctor``). Known
        without a pool once one has run; after an interrupt none is started again to tell (empty when the
        interrupt came before the sandbox was up)."""
        applied, missing = self._layers if self._layers is not None else (self.pool.applied, self.pool.missing)
        return {"applied": dict(applied), "missing": dict(missing), "allow_weaker": self.policy.allow_weaker}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self.env.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def evaluate(self, completions: Sequence[str], seeds: Sequence[int], record: str | Path | None = None,
                 on_episode: Callable[[EpisodeResult], None] | None = None) -> list[ProgramResult]:  # fmt: skip
        """Every completion on every seed; results in the order of ``completions``, episodes in seed order.

        When there are fewer programs than workers, each program's seeds are split over several
        workers. ``record``: a directory that receives one recording per episode (``viz/recording.py``).
        ``on_episode``: called here, in the caller's thread, with each episode as it finishes (in the
        order they finish; an episode an error ended counts too; none is reported twice).

        Raises ``Interrupted`` (a KeyboardInterrupt) with the episodes that finished when interrupted,
        after ending every process of the pool (the next call starts a fresh one); ``WorkersKilled``
        when something outside keeps killing the sandbox's workers.
        """
        seeds = list(seeds)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
            raise ValueError(f"seeds must be a non-empty list of integers >= 0, got {seeds[:5]}")
        results: list[ProgramResult] = []
        waiting: list[Job] = []
        job_type = PlayJob if self.mode == "play" else CallJob
        programs = [self._load(completion, results) for completion in completions]
        runnable = sum(program is not None for program in programs)
        chunks = min(len(seeds), -(-self.workers // max(1, runnable)))  # enough jobs to keep every worker busy
        folder = Path(record) if record else None
        for index, program in enumerate(programs):
            if program is not None:
                for part in range(chunks):
                    waiting.append(job_type(self, index, program, seeds[part::chunks], folder))
        running: list[Job] = []
        done: list[Job] = []
        try:
            self._schedule(waiting, running, done, on_episode)
        except KeyboardInterrupt as exc:
            self._abandon()
            self._collect(results, seeds, [*done, *running, *waiting])
            raise Interrupted(results, seeds, exc) from exc
        self._collect(results, seeds, done)
        return results

    def _collect(self, results: list[ProgramResult], seeds: list[int], jobs: list[Job]) -> None:
        """Each job's episodes into its program's result, in seed order. A job played again after a lost worker
        shares its episodes with the one it replaces: each list is taken once."""
        order = {seed: i for i, seed in reversed(list(enumerate(seeds)))}
        taken: set[int] = set()
        for job in dict.fromkeys(jobs):  # an interrupt can find a job in two lists at once
            result = results[job.index]
            if id(job.episodes) not in taken:
                taken.add(id(job.episodes))
                result.episodes.extend(job.episodes)
            result.seconds += job.seconds
            if job.build_error is not None:
                result.error, result.message = job.build_error
        for result in results:
            result.episodes.sort(key=lambda e: order[e.seed])

    def _abandon(self) -> None:
        """After an interrupt: end the pool's processes now (its state is no longer to be trusted)."""
        pool, self._pool = self._pool, None
        if self._layers is None:
            self._layers = ({}, {})
        if pool is not None:
            pool.close()

    def _load(self, completion: str, results: list[ProgramResult]) -> Program | None:
        try:
            program = load(completion, self.spec.strategy)
        except ProgramError as exc:
            results.append(ProgramResult(sha=None, error=exc.kind, rule=exc.rule, message=str(exc)))
            return None
        results.append(ProgramResult(sha=program.sha, source=program.source))
        return program

    def _schedule(self, waiting: list[Job], running: list[Job], done: list[Job],
                  on_episode: Callable[[EpisodeResult], None] | None) -> None:  # fmt: skip
        """Run the jobs of ``waiting`` until every one is in ``done``. Whenever it stops (an error, an interrupt),
        every job is in one of the three lists, so the episodes that finished can still be collected."""
        reported: dict[int, int] = {}  # id of a job's episode list -> how many of them ``on_episode`` has seen
        losses = _Losses(unstarted_limit=MAX_ATTEMPTS * self.workers)
        signals = _Signals().start()
        resumed, last = signals.continued, time.monotonic()
        try:
            while waiting or running:
                signals.check()
                while waiting and len(running) < self.workers:
                    worker = self.pool.acquire()
                    job = waiting[0]
                    job.start(worker)
                    running.append(job)
                    waiting.pop(0)
                ready = wait([job.worker.reader.sock for job in running], timeout=SCHEDULE_TICK_S)
                signals.check()
                now = time.monotonic()
                if signals.continued != resumed:  # stopped and continued since the last look: not the programs' time
                    resumed = signals.continued
                    for job in running:
                        job.paused(now - last)
                last = now
                for job in list(running):
                    if job.worker.reader.sock in ready:
                        job.receive()
                        if job.built:
                            losses.unstarted = 0
                    if not job.finished:
                        job.check_time(now)
                    if on_episode is not None and len(job.episodes) > reported.get(id(job.episodes), 0):
                        seen = reported.get(id(job.episodes), 0)
                        reported[id(job.episodes)] = len(job.episodes)
                        for episode in job.episodes[seen:]:
                            on_episode(episode)
                    if job.finished:  # into ``waiting`` or ``done`` before out of ``running``: never in none
                        lost = job.lost and bool(job.pending)
                        if lost:  # killed from outside, or with its zygote: never the program's doing
                            waiting.insert(0, self._again(job, losses))
                        else:
                            done.append(job)
                        running.remove(job)
                        job.stop()
                        if not lost:
                            self.pool.succeeded()
        finally:
            signals.stop()
            for job in running:  # an error (a failed server) or an interrupt
                job.stop()

    def _again(self, job: Job, losses: _Losses) -> Job:
        """The rest of a job whose worker was lost, to play in a fresh worker; the episode in progress starts
        again from its key, so it is the same game. An episode lost MAX_ATTEMPTS times stops the run, and so
        do workers that keep dying before they start (``_Losses``)."""
        attempt = losses.count(job)
        again = type(job)(self, job.index, job.program, job.pending, job.record, attempt=attempt + 1)
        again.episodes = job.episodes  # the episodes it did report stand
        return again


class _Losses:
    """Workers lost during one ``evaluate``: per episode (program, seed) once a worker had started it, and in a
    row for workers that died before their program was built (a spare killed while it waited cost no episode)."""

    def __init__(self, unstarted_limit: int) -> None:
        self.episodes: dict[tuple[int, int], int] = {}
        self.unstarted, self.unstarted_limit = 0, unstarted_limit

    def count(self, job: Job) -> int:
        """Count the job's loss; raises WorkersKilled past the limits. Returns the episode's losses so far."""
        seed, what = job.pending[0], f"sandbox workers are being killed from outside ({job.lost_why})"
        hint = ("so the run stops rather than blame the program. Find what sends the signal: the OOM killer (see "
                "`dmesg`), a `kill`, or a signal sent to this command's whole process group")  # fmt: skip
        if not job.built:
            self.unstarted += 1
            if self.unstarted >= self.unstarted_limit:
                raise WorkersKilled(f"{what}; {self.unstarted} in a row died before they started an episode, {hint}")
            return self.episodes.get((job.index, seed), 0)
        key = (job.index, seed)
        lost = self.episodes[key] = self.episodes.get(key, 0) + 1
        if lost >= MAX_ATTEMPTS:
            raise WorkersKilled(
                f"{what}; program {job.program.sha}'s episode on seed {seed} was lost {lost} times, {hint}"
            )
        return lost
