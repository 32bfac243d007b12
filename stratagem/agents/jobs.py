"""One program on its seeds in one sandboxed worker: the parent's side of the two modes.

``PlayJob``: the worker plays its own copy of the game and reports the actions per episode;
the parent replays them on its own seeded copy (``Environment.replay``), and that replay is the
result. ``CallJob``: the parent holds the game (its own, or a server's through ``RemoteGame``)
and asks the worker for one move at a time; for environments with ``timed_calls`` it has the
worker load the arguments and thrash its caches first, then times the call itself. Both kill
the worker when a call or an episode overruns its limit, and read only JSON they validate.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from stratagem.agents.pool import Worker
from stratagem.agents.programs import Program
from stratagem.agents.results import ERROR_KINDS, EpisodeResult
from stratagem.envs.core import EnvError, Environment, InvalidAction, Observation
from stratagem.viz.recording import RecordingWriter, recording_path

if TYPE_CHECKING:
    from stratagem.agents.runner import Runner

MAX_MESSAGE = 500
MAX_WORKER_MESSAGE = 64 * 2**20


class ServerFailed(RuntimeError):
    """The environment server (``url``) failed; not the program's fault, so no result is made up."""


class Job:
    """One program on its seeds, in one worker. Subclasses drive the two modes."""

    mode = ""

    def __init__(self, runner: Runner, index: int, program: Program, seeds: list[int], record: Path | None) -> None:
        self.runner, self.index, self.program, self.record = runner, index, program, record
        self.pending = list(seeds)  # seeds whose episode has not been reported yet
        self.episodes: list[EpisodeResult] = []
        self.build_error: tuple[str, str] | None = None
        self.finished = False
        self.worker: Worker = None  # type: ignore[assignment]
        self.started = self.episode_started = 0.0
        self.seconds = 0.0

    def start(self, worker: Worker) -> None:
        self.worker = worker
        self.started = self.episode_started = time.monotonic()
        limits = self.runner.limits
        self.send({"mode": self.mode, "source": self.program.source, "sha": self.program.sha,
                   "seeds": self.pending, "memory_mb": limits.memory_mb, "cpu_s": limits.cpu_s})  # fmt: skip

    def stop(self) -> None:
        self.seconds = time.monotonic() - self.started
        self.runner.pool.release(self.worker)

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.worker.conn.send_bytes(orjson.dumps(message))
        except OSError:
            pass  # the worker died; its socket reads EOF next and ``died`` says why

    def receive(self) -> None:
        try:
            message = orjson.loads(self.worker.conn.recv_bytes(maxlength=MAX_WORKER_MESSAGE))
        except (EOFError, OSError, orjson.JSONDecodeError):
            return self.died()
        kind = message.get("t") if isinstance(message, dict) else None
        if kind == "build":
            error = message.get("error")
            self.build_error = (error if error in ERROR_KINDS else "exception", _text(message.get("message")))
            return self.forfeit(*self.build_error)
        if kind == "done":
            return self.forfeit("forbidden", "not played: the program cheated in an earlier episode")
        if not self.handle(kind, message):
            self.kill()
            self.forfeit("forbidden", "the worker sent a message out of protocol")

    def handle(self, kind: str | None, message: dict[str, Any]) -> bool:
        raise NotImplementedError

    def check_time(self, now: float) -> None:
        limits = self.runner.limits
        beat = self.worker.beat()
        if beat and now - beat > limits.move_s:
            self.timed_out(f"a call of the program took over {limits.move_s:g} s")
        elif now - self.episode_started > limits.episode_s:
            self.timed_out(f"the episode took over {limits.episode_s:g} s")

    def timed_out(self, why: str) -> None:
        self.kill()
        self.forfeit("timeout", why, rest="not played: the program timed out in an earlier episode")

    def kill(self) -> None:
        self.runner.pool.kill(self.worker)

    def died(self) -> None:
        """The worker's socket closed before it said it was done: find out why from its exit code."""
        code = self.runner.pool.exit_code(self.worker)
        if code == -signal.SIGXCPU:  # RLIMIT_CPU's soft limit
            kind, text = "timeout", "the program used up its CPU-seconds budget"
        elif code is not None and code < 0:
            kind, text = "exception", f"the worker was killed by signal {signal.Signals(-code).name}"
        else:
            kind, text = "exception", f"the worker exited unexpectedly (code {code})"
        self.forfeit(kind, text)

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
        if not self.pending:
            self.finished = True

    def recorder(self, seed: int) -> RecordingWriter | None:
        if self.record is None:
            return None
        return RecordingWriter(recording_path(self.record, self.program.sha, seed), env=self.runner.spec.name,
                               seed=seed, program=self.program.sha, params=self.runner.params)  # fmt: skip


class PlayJob(Job):
    """The worker plays its own copy of the game; the parent replays the actions on its own."""

    mode = "play"

    def handle(self, kind: str | None, message: dict[str, Any]) -> bool:
        if kind != "episode" or not self.pending or message.get("seed") != self.pending[0]:
            return False
        self.episode_done(self.replay(message))
        return True

    def replay(self, message: dict[str, Any]) -> EpisodeResult:
        """The authoritative result: the worker's actions replayed on the parent's own seeded game."""
        seed, actions, error = message["seed"], message.get("actions"), message.get("error")
        result = EpisodeResult(seed=seed, error=error, message=_text(message.get("message")))
        if error is not None and error not in ERROR_KINDS:
            result.error, result.message = "forbidden", "the worker reported an unknown error kind"
        if not isinstance(actions, list):
            actions, result.error, result.message = [], "forbidden", "the worker's action list was not a list"
        env, recorder = self.runner.env, self.recorder(seed)
        on_step = None if recorder is None else (lambda action, obs: _record(recorder, action, obs))
        try:
            obs, result.score = env.replay(seed, actions, on_step)
            result.moves = len(actions)
        except (EnvError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            obs, result.error = None, "forbidden"
            result.message = f"the replay refused a move the worker accepted: {_text(str(exc))}"
        if result.error is None and not obs.done:
            result.error, result.message = "forbidden", "the worker stopped before the game ended"
        _finish(result, obs, recorder)
        return result


class CallJob(Job):
    """The parent holds the game (local or on a server) and asks the worker for one move at a time."""

    mode = "call"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.game: Any = None
        self.obs: Observation | None = None
        self.result: EpisodeResult | None = None
        self.recording: RecordingWriter | None = None
        self.call_started = 0.0

    def handle(self, kind: str | None, message: dict[str, Any]) -> bool:
        if kind == "ready" and self.game is None:
            self.game = RemoteGame(self.runner.env, self.runner.url) if self.runner.url else self.runner.env
            self.new_episode()
        elif kind == "prepared" and self.result is not None:
            self.call_started = time.perf_counter()  # the clock covers the call and the answer's return only
            self.send({"t": "go"})
        elif kind == "value" and self.result is not None:
            self.play(message.get("v"), time.perf_counter() - self.call_started)
        elif kind == "error" and self.result is not None:
            error = message.get("error")
            self.end_episode(error if error in ERROR_KINDS else "forbidden", _text(message.get("message")))
        else:
            return False
        return True

    def new_episode(self) -> None:
        seed = self.pending[0]
        self.result, self.recording = EpisodeResult(seed=seed), self.recorder(seed)
        self.obs = self.game.reset(seed=seed, episode_id=f"seed-{seed}")
        self.episode_started = time.monotonic()
        _record(self.recording, None, self.obs)
        self.next_call()

    def next_call(self) -> None:
        args = list(self.runner.env.program_inputs(self.obs))
        if self.runner.timed:  # the worker loads the arguments and thrashes its caches, then says "prepared"
            return self.send({"t": "prepare", "args": args})
        self.call_started = time.perf_counter()
        self.send({"t": "call", "args": args})

    def play(self, value: Any, elapsed: float) -> None:
        env, result = self.runner.env, self.result
        try:
            action = env.program_action(value, elapsed_s=elapsed) if self.runner.timed else env.program_action(value)
            self.obs = self.game.step(action)
        except (ValueError, InvalidAction) as exc:
            return self.end_episode("illegal_move", _text(str(exc)))
        _record(self.recording, action, self.obs)
        result.moves += 1
        result.score += self.obs.reward or 0.0
        if self.obs.done:
            self.end_episode(None, "")
        else:
            self.next_call()

    def end_episode(self, error: str | None, message: str) -> None:
        result = self.result
        result.error, result.message = error, message
        _finish(result, self.obs, self.recording)
        self.result = self.recording = None
        self.episode_done(result)
        if error == "forbidden":  # as in play mode: a program that tried to cheat plays no further episode
            self.kill()
            self.forfeit(error, "not played: the program cheated in an earlier episode")
        elif self.pending:
            self.new_episode()
        else:
            self.send({"t": "stop"})

    def forfeit(self, kind: str, message: str, rest: str | None = None) -> None:
        if self.result is not None:  # the episode in progress is cut short: close its recording
            self.result.error, self.result.message = kind, message
            _finish(self.result, self.obs, self.recording)
            self.result = self.recording = None
        super().forfeit(kind, message, rest)

    def stop(self) -> None:
        super().stop()
        if isinstance(self.game, RemoteGame):
            self.game.close()


class RemoteGame:
    """A game on an environment server (WebSocket), seen through the local class's observation model."""

    def __init__(self, env: Environment, url: str) -> None:
        from stratagem.envs.client import EnvClient

        self.env = env
        try:
            self.client = EnvClient.connect(url)
        except (OSError, ValueError) as exc:
            raise ServerFailed(f"cannot reach the environment server at {url}: {exc}") from None

    def reset(self, seed: int, episode_id: str) -> Observation:
        return self._observation(self._call(self.client.reset, seed=seed, episode_id=episode_id))

    def step(self, action: Any) -> Observation:
        return self._observation(self._call(self.client.step, action))

    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        from stratagem.envs.client import RemoteError

        try:
            return method(*args, **kwargs)
        except InvalidAction:
            raise  # the server refused the program's move: the program's fault, scored as such
        except (RemoteError, OSError) as exc:
            raise ServerFailed(f"the environment server failed: {exc}") from None

    def _observation(self, result: Any) -> Observation:
        try:
            return self.env.observation_type.model_validate(
                {**result.observation, "reward": result.reward, "done": result.done}
            )
        except ValidationError as exc:
            raise ServerFailed(
                f"the server's observation does not fit environment {type(self.env).__name__}: {exc}"
            ) from None

    def close(self) -> None:
        self.client.close()


def _observation_fields(obs: Observation) -> dict[str, Any]:
    return obs.model_dump(mode="json", exclude={"reward", "done", "metadata"})


def _record(recorder: RecordingWriter | None, action: Any, obs: Observation) -> None:
    if recorder is not None:
        action_fields = None if action is None else action.model_dump(mode="json", exclude_none=True)
        recorder.step(action_fields, obs.reward, obs.done, _observation_fields(obs))


def _finish(result: EpisodeResult, obs: Observation | None, recorder: RecordingWriter | None) -> None:
    """Fill in what the final position says, and close the recording with the result."""
    if obs is not None:
        result.won = bool(getattr(obs, "won", False)) and obs.done and result.error is None
        result.max_tile = getattr(obs, "max_tile", None)
    if recorder is not None:
        recorder.close({"score": result.score, "moves": result.moves, "won": result.won,
                        "max_tile": result.max_tile, "error": result.error, "message": result.message})  # fmt: skip


def _text(value: Any) -> str:
    return value[:MAX_MESSAGE] if isinstance(value, str) else ""
