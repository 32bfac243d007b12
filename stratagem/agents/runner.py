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

Scaling out, with the same results: ``url`` may list several environment servers, used as one pool
(``client/pool.py``: health checks; a server that fails costs a replay of its episodes on another, never
the program's score); ``ray`` spreads each ``evaluate`` over a Ray cluster, one actor per node holding
this same local pool (``ray_backend.py``).

Ctrl-C (a KeyboardInterrupt) stops ``evaluate`` at once: every process of the pool is ended and
reaped, and ``Interrupted`` carries the episodes that did finish. ``on_episode`` sees each episode
as it finishes, for a progress display.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from stratagem.agents.interrupts import ScheduleSignals
from stratagem.agents.job_modes import CallJob, PlayJob
from stratagem.agents.jobs import Job
from stratagem.agents.programs import Program, ProgramError, load
from stratagem.agents.remote import ServerFailed, ServersDown
from stratagem.agents.results import ERROR_KINDS, EpisodeResult, ProgramResult
from stratagem.envs.rng import EpisodeKey, episode_key
from stratagem.envs.spec import EnvSpec, resolve
from stratagem.sandbox.confine import LAYERS, Policy
from stratagem.sandbox.failures import PoolError, SandboxUnavailable, WorkersKilled
from stratagem.sandbox.keys import machine_secret
from stratagem.sandbox.pool import WorkerPool

__all__ = ["ERROR_KINDS", "EpisodeResult", "Interrupted", "Limits", "PoolError", "ProgramResult", "Runner",
           "SandboxUnavailable", "ServerFailed", "ServersDown", "WorkersKilled"]  # fmt: skip
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
                 workers: int | None = None, limits: Limits | None = None, url: str | Sequence[str] | None = None,
                 allow_weaker_sandbox: bool = False, layers: tuple[str, ...] = LAYERS,
                 secret: bytes | None = None, ray: Any = None) -> None:  # fmt: skip
        """``layers``: the sandbox's layers to apply (fewer only to study one alone); ``secret``: the key of
        the episodes' randomness and the programs' own random seeds (default: this machine's,
        ``sandbox/keys.py``), so the same seeds and secret give the same games. ``url``: an environment
        server, or several used as one pool. ``ray``: a Ray address (``"auto"``, ``"local"``, ``HOST:PORT``,
        ``ray://HOST:PORT``) or a ``ray_backend.RayCluster``; ``workers`` is then the sandbox workers per actor.
        Without Ray installed, ``ray`` raises ``RayUnavailable`` (a ValueError) before any work."""
        if ray is not None:  # checked first: without Ray installed, or with a bad address, nothing is started
            from stratagem.agents.ray_backend import RayBackend, RayCluster, require_ray

            require_ray()
            ray = RayCluster(ray) if isinstance(ray, str) else ray
        self.spec = resolve(env) if isinstance(env, (str, Path)) else env
        self.params = dict(params or {})
        self.limits = limits or Limits()
        self.urls = [url] if isinstance(url, str) else list(url or [])
        self.url = self.urls[0] if self.urls else None  # call mode on a server; jobs take theirs from ``servers``
        self.env = self.spec.make(**self.params)  # the parent's own game: replays, driven play, the program bridge
        self.timed = self.env.timed_calls
        self.mode = "call" if (self.urls or self.timed or self.env.slow_steps) else "play"
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
        self.servers: Any = None  # client.pool.EnvPool over ``urls``
        if self.urls:
            from stratagem.client.identify import check_serves
            from stratagem.client.pool import EnvPool

            self.servers = EnvPool(self.urls, check=lambda server: check_serves(server, self.env))
        self._ray: Any = None
        if ray is not None:
            self._ray = RayBackend(ray, type(self), self.spec, workers, {
                "params": self.params, "limits": self.limits, "url": self.urls or None, "layers": tuple(layers),
                "allow_weaker_sandbox": allow_weaker_sandbox, "secret": self.secret})  # fmt: skip

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
        if self._ray is not None:  # every node's: a layer missing on one node is missing
            return self._ray.sandbox(self.policy.allow_weaker)
        applied, missing = self._layers if self._layers is not None else (self.pool.applied, self.pool.missing)
        return {"applied": dict(applied), "missing": dict(missing), "allow_weaker": self.policy.allow_weaker}

    def close(self) -> None:
        if self._ray is not None:
            self._ray.close()
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        self.env.close()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def evaluate(self, completions: Sequence[str], seeds: Sequence[int], record: str | Path | None = None,
                 on_episode: Callable[[EpisodeResult], None] | None = None, *, parts: int | None = None,
                 jobs: Collection[tuple[int, int]] | None = None) -> list[ProgramResult]:  # fmt: skip
        """Every completion on every seed; results in the order of ``completions``, episodes in seed order.

        When there are fewer programs than workers, each program's seeds are split over several
        workers. ``record``: a directory that receives one recording per episode (``viz/recording.py``).
        ``on_episode``: called here, in the caller's thread, with each episode as it finishes (in the
        order they finish; an episode an error ended counts too; none is reported twice).

        Raises ``Interrupted`` (a KeyboardInterrupt) with the episodes that finished when interrupted,
        after ending every process of the pool (the next call starts a fresh one); ``WorkersKilled``
        when something outside keeps killing the sandbox's workers; ``ServersDown`` when every server is.

        A job is one program on ``seeds[part::parts]``; ``parts`` (default: enough jobs to keep every worker
        busy) and ``jobs`` (the (program, part) pairs to play; default all) let a backend that splits one
        evaluation over several runners (``ray_backend.py``) play exactly the jobs this runner would.
        """
        seeds = list(seeds)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
            raise ValueError(f"seeds must be a non-empty list of integers >= 0, got {seeds[:5]}")
        results: list[ProgramResult] = []
        waiting: list[Job] = []
        job_type = PlayJob if self.mode == "play" else CallJob
        programs = [self._load(completion, results) for completion in completions]
        if self._ray is not None and jobs is None:  # spread over the cluster's actors (ray_backend.py)
            try:
                self._ray.run(list(completions), [i for i, p in enumerate(programs) if p], seeds, results, record,
                              on_episode)  # fmt: skip
            except KeyboardInterrupt as exc:
                self._ray.abandon()
                raise Interrupted(_in_seed_order(results, seeds), seeds, exc) from exc
            return _in_seed_order(results, seeds)
        runnable = sum(program is not None for program in programs)
        chunks = parts or min(len(seeds), -(-self.workers // max(1, runnable)))  # enough jobs for every worker
        folder = Path(record) if record else None
        wanted = None if jobs is None else set(jobs)
        for index, program in enumerate(programs):
            if program is not None:
                for part in range(chunks):
                    if wanted is None or (index, part) in wanted:
                        waiting.append(job_type(self, index, program, seeds[part::chunks], folder))
        if self.servers is not None:
            self.servers.refresh()  # servers out since the last call may be back; dead ones are known before play
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
        taken: set[int] = set()
        for job in dict.fromkeys(jobs):  # an interrupt can find a job in two lists at once
            result = results[job.index]
            if id(job.episodes) not in taken:
                taken.add(id(job.episodes))
                result.episodes.extend(job.episodes)
            result.seconds += job.seconds
            if job.build_error is not None:
                result.error, result.message = job.build_error
        _in_seed_order(results, seeds)

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
        signals = ScheduleSignals().start()
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
                        try:
                            job.receive()
                        except ServerFailed as exc:  # one server of several: out of the pool, the rest replayed
                            if self.servers is None or isinstance(exc, ServersDown) or not isinstance(job, CallJob):
                                raise
                            job.server_lost(str(exc))
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
        if getattr(job, "server_failed", False):  # its server's failure: bounded by the servers (each failure
            attempt = job.attempt  # takes one out until the next evaluate), never counted as a worker's
        else:
            attempt = losses.count(job) + 1
        again = type(job)(self, job.index, job.program, job.pending, job.record, attempt=attempt)
        again.episodes = job.episodes  # the episodes it did report stand
        return again


def _in_seed_order(results: list[ProgramResult], seeds: list[int]) -> list[ProgramResult]:
    order = {seed: i for i, seed in reversed(list(enumerate(seeds)))}
    for result in results:
        result.episodes.sort(key=lambda e: order[e.seed])
    return results


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
