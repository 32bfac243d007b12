"""The parent's side of one sandboxed worker, whatever it plays: its frames, its clock, its end.

A worker runs a program we do not trust, so everything the parent learns of it (the frames it sends,
how long it takes, how it ended) is checked here, in one place, before any episode's logic sees it; the
two ways of playing episodes (``job_modes.py``) build on ``Job`` and never read the worker themselves.

The parent believes only its own clocks and the kernel: a call's time limit is the gap between the
worker's frames (play) or between request and answer (call); the CPU budget is the kernel's
RLIMIT_CPU (death by SIGXCPU); a death by SIGSYS is a system call the sandbox forbids. Frames
are read without blocking and with a size cap, and every field is validated. Any sign of
cheating (a forbidden event reported by the worker, SIGSYS, a frame out of protocol, moves the
replay refuses) scores the program as a cheat, whatever happens after it.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any, Protocol

import orjson

from stratagem.agents.programs import Program
from stratagem.agents.results import ERROR_KINDS, EpisodeResult
from stratagem.envs.core import Environment
from stratagem.envs.rng import EpisodeKey
from stratagem.envs.spec import EnvSpec
from stratagem.sandbox.audit import FORBIDDEN_EXIT, MAX_VALUE_BYTES
from stratagem.sandbox.channel import ChannelClosed, FrameTooLarge
from stratagem.sandbox.failures import PoolError, describe_exit
from stratagem.sandbox.keys import derive_seed
from stratagem.sandbox.pool import Worker, WorkerPool
from stratagem.viz.recording import RecordingWriter, recording_path


class Host(Protocol):
    """What a job needs of the runner that schedules it (``runner.py``), named here so jobs never import it."""

    spec: EnvSpec
    params: dict[str, Any]
    env: Environment  # the parent's own game: replays and the program bridge
    limits: Any  # runner.Limits: move_s, episode_s, cpu_s
    timed: bool
    url: str | None
    servers: Any  # client.pool.EnvPool of the servers in ``url``'s list, or None (``url`` is None)
    pool: WorkerPool
    secret: bytes
    max_actions: int

    def episode_key(self, seed: int) -> EpisodeKey: ...


MAX_MESSAGE = 500
# How far past its limit a call may run before the parent notices: the worker holds moves back up to
# FLUSH_S (worker.py), and the parent looks every SCHEDULE_TICK_S (runner.py); both are small.
CLOCK_SLACK_S = 0.1
PLAY_FRAME_BYTES = 1 << 20  # a play frame holds the moves of ~2 ms; far more is a worker flooding the parent
CALL_FRAME_BYTES = MAX_VALUE_BYTES + (1 << 16)  # one return value


class Job:
    """One program on its seeds, in one worker. Subclasses drive the two modes."""

    mode = ""
    frame_bytes = CALL_FRAME_BYTES

    def __init__(self, runner: Host, index: int, program: Program, seeds: list[int], record: Path | None,
                 attempt: int = 1) -> None:  # fmt: skip
        self.runner, self.index, self.program, self.record = runner, index, program, record
        self.attempt = attempt
        self.pending = list(seeds)  # seeds whose episode has not been reported yet
        self.episodes: list[EpisodeResult] = []
        self.build_error: tuple[str, str] | None = None
        self.finished = self.lost = False
        self.lost_why = ""  # what took the worker, when ``lost``: never the program (``died``)
        self.confined = self.built = False
        self.worker: Worker = None  # type: ignore[assignment]
        self.started = self.episode_started = self.clock = 0.0
        self.seconds = 0.0
        self.job: dict[str, Any] | None = None  # held back until the worker is ready, where its CPU is charged

    def start(self, worker: Worker) -> None:
        self.worker = worker
        worker.reader.max_bytes = self.frame_bytes
        self.started = self.episode_started = self.clock = time.monotonic()
        program_seeds = [derive_seed(self.runner.secret, "program-random", seed) for seed in self.pending]
        self.job = {"mode": self.mode, "source": self.program.source, "sha": self.program.sha,
                    "program_seeds": program_seeds, **self.episodes_message()}  # fmt: skip
        if not self.runner.timed:
            self.send(self.job)

    def episodes_message(self) -> dict[str, Any]:
        """What the worker is told of the episodes it will play."""
        return {}

    def on_ready(self) -> None:
        """The worker is confined and waits for its job: a timed job's CPU clock starts now."""
        if self.runner.timed:
            self.send(self.job)

    def stop(self) -> None:
        self.seconds = time.monotonic() - self.started
        self.runner.pool.release(self.worker)

    def send(self, message: dict[str, Any]) -> None:
        try:  # a worker that does not take its message within a call's time has stopped reading: its clock runs
            self.worker.reader.send(orjson.dumps(message), timeout_s=self.runner.limits.move_s + CLOCK_SLACK_S)
        except OSError:
            pass  # the worker died (its channel reads EOF next; ``died`` says why) or stopped reading (its clock runs)

    def receive(self) -> None:
        """Handle every frame the worker has sent so far."""
        try:
            frames = self.worker.reader.poll()
        except ChannelClosed:
            return self.died()
        except FrameTooLarge as exc:
            return self.cheated(str(exc))
        for raw in frames:
            if self.finished:
                return
            try:
                message = orjson.loads(raw)
            except orjson.JSONDecodeError:
                return self.cheated("the worker sent a frame that is not JSON")
            kind = message.get("t") if isinstance(message, dict) else None
            self.clock = time.monotonic()
            if not self.confined:  # the first frame comes from the sandbox, before the job is read
                if kind == "setup-failed":
                    raise PoolError(f"the sandbox could not confine a worker: {clip_text(message.get('message'))}")
                if kind != "ready":
                    return self.cheated("the worker spoke before it was confined")
                self.confined = True
                self.on_ready()
            elif kind == "forbidden":
                return self.cheated(f"forbidden event: {clip_text(message.get('event'))}")
            elif kind == "build" and not self.built:
                error = message.get("error")
                self.build_error = (error if error in ERROR_KINDS else "exception", clip_text(message.get("message")))
                return self.forfeit(*self.build_error)
            elif kind == "built" and not self.built:
                self.built = True
                self.episode_started = self.clock
                self.on_built()
            elif kind == "done" and self.built:
                return self.cheated("the worker stopped before every episode was played")
            elif not (self.built and self.handle(kind, message)):
                return self.cheated(f"the worker sent a message out of protocol ({str(kind)[:40]})")

    def on_built(self) -> None:
        """The program's top level ran; the first episode may start."""

    def handle(self, kind: str | None, message: dict[str, Any]) -> bool:
        raise NotImplementedError

    def waiting_on_worker(self) -> bool:
        """Whether the worker owes the parent a frame now (so its clock runs)."""
        return True

    def paused(self, seconds: float) -> None:
        """The parent was stopped (Ctrl-Z, SIGSTOP) for ``seconds``: its wall clocks ran on while nothing was
        timed, so they move on by as much. A stop is never the program's timeout."""
        self.started += seconds
        self.episode_started += seconds
        self.clock += seconds

    def check_time(self, now: float) -> None:
        limits = self.runner.limits
        if self.waiting_on_worker() and now - self.clock > limits.move_s + CLOCK_SLACK_S:
            what = "a call of the program" if self.built else "the program's top level"
            self.timed_out(f"{what} took over {limits.move_s:g} s")
        elif self.built and now - self.episode_started > limits.episode_s:
            self.timed_out(f"the episode took over {limits.episode_s:g} s")

    def timed_out(self, why: str) -> None:
        self.kill()
        self.forfeit("timeout", why, rest="not played: the program timed out in an earlier episode")

    def cheated(self, why: str) -> None:
        self.kill()
        self.forfeit("forbidden", why, rest="not played: the program cheated in an earlier episode")

    def kill(self) -> None:
        self.runner.pool.kill(self.worker)

    def died(self) -> None:
        """The worker's channel closed before it said it was done: find out why from its exit status."""
        death = self.runner.pool.death(self.worker, timeout_s=1.0)
        code = death.code
        if code is None and self.confined and self.worker.alive():  # it closed its channel and runs on
            self.kill()
            return self.forfeit("forbidden", "the worker closed its channel to the parent and kept running")
        if death.outside or code is None or not self.confined:
            # Killed from outside (the OOM killer, a `kill`; ``WorkerPool.death`` tells), lost with its zygote, not
            # reported, or dead before it could read the program: not the program's doing. The runner plays the
            # rest again in a fresh worker.
            if death.outside or code is None:
                return self.lose(death.outside or "the sandbox's zygote did not report how the worker ended")
            return self.lose(f"the worker died before it was confined ({describe_exit(code)})")
        if code == -signal.SIGSYS:
            return self.forfeit("forbidden", "the program made a system call the sandbox forbids (killed by SIGSYS)")
        if code == FORBIDDEN_EXIT:
            return self.forfeit("forbidden", "the program raised a forbidden event")
        if code == -signal.SIGXCPU:  # RLIMIT_CPU's soft limit
            kind, text = "timeout", f"the program used up its CPU budget of {self.runner.limits.cpu_s:g} s"
        elif isinstance(code, int) and code < 0:
            kind, text = "exception", f"the worker was killed by signal {signal.Signals(-code).name}"
        else:
            kind, text = "exception", f"the worker exited unexpectedly (code {code})"
        self.forfeit(kind, text)

    def lose(self, why: str) -> None:
        """The worker is gone for a reason that is not the program's: the runner plays what is left again."""
        self.lost, self.lost_why, self.finished = True, why, True

    def forfeit(self, kind: str, message: str, rest: str | None = None) -> None:
        """Every episode not yet reported gets ``kind``; the job is over."""
        for i, seed in enumerate(self.pending):
            self.episodes.append(EpisodeResult(seed=seed, error=kind, message=message if i == 0 or rest is None
                                               else rest))  # fmt: skip
        self.pending = []
        self.finished = True

    def episode_done(self, result: EpisodeResult) -> None:
        self.episodes.append(result)
        self.pending.pop(0)
        self.episode_started = time.monotonic()
        if result.error == "forbidden":  # a program that tried to cheat plays no further episode
            self.kill()
            self.forfeit("forbidden", "not played: the program cheated in an earlier episode")
        elif not self.pending:
            self.finished = True

    def recorder(self, seed: int) -> RecordingWriter | None:
        if self.record is None:
            return None
        return RecordingWriter(recording_path(self.record, self.program.sha, seed), env=self.runner.spec.name,
                               seed=seed, program=self.program.sha, params=self.runner.params)  # fmt: skip


def clip_text(value: Any) -> str:
    """A text field of a worker's frame, as the parent will store it: a worker decides what it sends, so
    anything but a string reads as empty and a string is capped (``MAX_MESSAGE``)."""
    return value[:MAX_MESSAGE] if isinstance(value, str) else ""
