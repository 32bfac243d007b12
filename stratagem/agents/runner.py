"""Play strategy programs over episodes in sandboxed processes, and trust only the replay.

``Runner.evaluate(completions, seeds)`` plays every program on the same seeds (common random
numbers across a GRPO group). Each program gets a fresh process forked from a pre-started
fork server (``worker.py`` confines it), a few at a time in parallel. The parent:

- enforces time from outside: a per-move limit (the worker stamps a shared heartbeat when
  a move starts) and a per-episode limit; past either, the process is killed, so no
  ``try/except`` inside the program can buy time;
- reads back only JSON it validates (seed, actions, error kind), never a pickled object and
  never a string it must produce by calling program code;
- replays each episode's actions on its own environment with the same seed; scores, tiles and
  wins come from that replay, so a program that tampered with the worker's game gains
  nothing (an action the replay refuses is reported as ``forbidden``).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from stratagem.agents.programs import ProgramError, load
from stratagem.envs.core import InvalidAction
from stratagem.envs.spec import EnvSpec, resolve

ERROR_KINDS = ("syntax", "policy", "exception", "illegal_move", "timeout", "memory", "forbidden")
MAX_MESSAGE = 500


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
    episodes: list[EpisodeResult] = field(default_factory=list)
    error: str | None = None  # syntax/policy: the program never ran
    message: str = ""
    seconds: float = 0.0

    @property
    def win_rate(self) -> float:
        return sum(e.won for e in self.episodes) / len(self.episodes) if self.episodes else 0.0

    @property
    def mean_score(self) -> float:
        return sum(e.score for e in self.episodes) / len(self.episodes) if self.episodes else 0.0


@dataclass
class Limits:
    move_s: float = 1.0  # wall clock per call of the program
    episode_s: float = 60.0  # wall clock per episode
    memory_mb: int = 512  # address space the program may add
    cpu_s: float = 120.0  # CPU seconds for the whole program


@dataclass
class _Job:
    index: int
    sha: str
    source: str
    seeds: list[int]
    process: Any = None
    conn: Any = None
    heartbeat: Any = None
    episode_started: float = 0.0
    pending: list[int] = field(default_factory=list)


class Runner:
    """Evaluate programs for one environment; reuse the instance (the fork server stays up)."""

    def __init__(self, env: str | EnvSpec = "2048", params: dict[str, Any] | None = None,
                 workers: int | None = None, limits: Limits | None = None) -> None:  # fmt: skip
        self.spec = resolve(env) if isinstance(env, str) else env
        self.params = params or {}
        self.workers = workers or os.cpu_count() or 1
        self.limits = limits or Limits()
        self.replay_env = self.spec.make(**self.params)
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["stratagem.agents.worker"])
        self._spec_json = self.spec.model_dump(mode="json")

    def evaluate(self, completions: Sequence[str], seeds: Sequence[int]) -> list[ProgramResult]:
        """Every completion on every seed; results in the order of ``completions``."""
        results: list[ProgramResult] = []
        jobs: list[_Job] = []
        for index, completion in enumerate(completions):
            try:
                program = load(completion, self.spec.strategy)
            except ProgramError as exc:
                results.append(ProgramResult(sha=None, error=exc.kind, message=str(exc)))
                continue
            results.append(ProgramResult(sha=program.sha))
            jobs.append(_Job(index, program.sha, program.source, list(seeds)))
        for job, episodes, seconds, build_error in self._run(jobs):
            result = results[job.index]
            result.episodes, result.seconds = episodes, seconds
            if build_error is not None:
                result.error, result.message = build_error
        return results

    # --- processes --------------------------------------------------------------------
    def _start(self, job: _Job) -> None:
        from stratagem.agents.worker import serve

        parent_conn, child_conn = self.ctx.Pipe(duplex=False)
        job.heartbeat = self.ctx.Value("d", 0.0, lock=False)
        payload = orjson.dumps({
            "spec": self._spec_json, "params": self.params, "source": job.source, "sha": job.sha,
            "seeds": job.pending, "memory_mb": self.limits.memory_mb, "cpu_s": self.limits.cpu_s,
        })  # fmt: skip
        job.process = self.ctx.Process(target=serve, args=(child_conn, job.heartbeat, payload), daemon=True)
        job.process.start()
        child_conn.close()
        job.conn = parent_conn
        job.episode_started = time.monotonic()

    def _stop(self, job: _Job) -> None:
        if job.process is not None:
            if job.process.exitcode is None:  # not reaped yet, so the pid is still this worker's
                try:
                    os.kill(job.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass  # it exited just now
            job.process.join(timeout=5)
        if job.conn is not None:
            job.conn.close()

    def _run(self, jobs: list[_Job]) -> Iterator[tuple[_Job, list[EpisodeResult], float, tuple[str, str] | None]]:
        waiting = list(jobs)
        running: list[_Job] = []
        played: dict[int, list[EpisodeResult]] = {job.index: [] for job in jobs}
        started: dict[int, float] = {}
        build_errors: dict[int, tuple[str, str]] = {}
        while waiting or running:
            while waiting and len(running) < self.workers:
                job = waiting.pop(0)
                job.pending = list(job.seeds)
                started[job.index] = time.monotonic()
                self._start(job)
                running.append(job)
            ready = multiprocessing.connection.wait([job.conn for job in running], timeout=0.02)
            now = time.monotonic()
            for job in list(running):
                finished = False
                if job.conn in ready:
                    finished = self._read(job, played[job.index], build_errors)
                else:
                    beat = job.heartbeat.value
                    if beat and now - beat > self.limits.move_s:
                        finished = self._timeout(job, played[job.index], f"a move took over {self.limits.move_s:g} s")
                    elif now - job.episode_started > self.limits.episode_s:
                        finished = self._timeout(
                            job, played[job.index], f"the episode took over {self.limits.episode_s:g} s"
                        )
                if finished:
                    self._stop(job)
                    running.remove(job)
                    yield job, played[job.index], time.monotonic() - started[job.index], build_errors.get(job.index)

    def _timeout(self, job: _Job, episodes: list[EpisodeResult], why: str) -> bool:
        """Kill; the episode in progress and the ones not yet played count as timeouts."""
        for seed in job.pending:
            episodes.append(EpisodeResult(seed=seed, error="timeout", message=why if seed == job.pending[0]
                                          else "not played: the program timed out in an earlier episode"))  # fmt: skip
        job.pending = []
        return True

    def _read(self, job: _Job, episodes: list[EpisodeResult], build_errors: dict[int, tuple[str, str]]) -> bool:
        """One message from the worker; True when the job is over."""
        try:
            raw = job.conn.recv_bytes(maxlength=16 * 2**20)
            message = orjson.loads(raw)
        except (EOFError, OSError, orjson.JSONDecodeError):
            return self._died(job, episodes)
        kind = message.get("t") if isinstance(message, dict) else None
        if kind == "done":
            for seed in job.pending:  # stopped early (a cheating program): the rest are forfeited
                episodes.append(EpisodeResult(seed=seed, error="forbidden", message="not played: the program cheated"))
            return True
        if kind == "build":
            error = message.get("error")
            error = error if error in ERROR_KINDS else "exception"
            build_errors[job.index] = (error, _text(message.get("message")))
            for seed in job.pending:
                episodes.append(EpisodeResult(seed=seed, error=error, message=_text(message.get("message"))))
            return True
        if kind == "episode" and job.pending and message.get("seed") == job.pending[0]:
            job.pending.pop(0)
            episodes.append(self._replay(message))
            job.episode_started = time.monotonic()
            return False
        return self._died(job, episodes, "the worker sent an unexpected message")

    def _died(self, job: _Job, episodes: list[EpisodeResult], why: str | None = None) -> bool:
        job.process.join(timeout=5)
        code = job.process.exitcode
        if code == -signal.SIGXCPU:
            kind, text = "timeout", "the program used up its CPU-seconds budget"
        elif why is None and code is not None and code < 0:
            kind, text = "exception", f"the worker was killed by signal {-code}"
        else:
            kind, text = "exception", why or f"the worker exited with code {code}"
        for seed in job.pending:
            episodes.append(EpisodeResult(seed=seed, error=kind, message=text))
        job.pending = []
        return True

    def _replay(self, message: dict[str, Any]) -> EpisodeResult:
        """The authoritative result: the worker's actions replayed on our own seeded game."""
        seed, actions = message["seed"], message.get("actions")
        error = message.get("error")
        result = EpisodeResult(seed=seed, error=error if error in ERROR_KINDS else None,
                               message=_text(message.get("message")))  # fmt: skip
        if error is not None and error not in ERROR_KINDS:
            result.error, result.message = "exception", "the worker reported an unknown error kind"
        env = self.replay_env
        obs = env.reset(seed=seed, episode_id=f"seed-{seed}")
        if not isinstance(actions, list):
            actions = []
            result.error, result.message = "forbidden", "the worker's action list was not a list"
        for raw in actions:
            try:
                obs = env.step(env.action_type.model_validate(raw))
            except (InvalidAction, ValueError) as exc:
                result.error = "forbidden"
                result.message = f"the replay refused a move the worker accepted: {_text(str(exc))}"
                break
            result.moves += 1
            result.score += obs.reward or 0.0
        if result.error is None and not obs.done:
            result.error, result.message = "forbidden", "the worker stopped before the game ended"
        result.won = bool(getattr(obs, "won", False)) and obs.done
        result.max_tile = getattr(obs, "max_tile", None)
        return result


def _text(value: Any) -> str:
    return value[:MAX_MESSAGE] if isinstance(value, str) else ""
