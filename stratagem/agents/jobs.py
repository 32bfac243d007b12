"""One program on its seeds in one sandboxed worker: the parent's side of the two modes.

``PlayJob``: the worker plays its own copy of the game and reports the actions per episode;
the parent replays them on its own copy, from the same episode key (``Environment.replay``), and
that replay is the result. ``CallJob``: the parent holds the game (its own, or a server's through
``RemoteGame``) and asks the worker for one move at a time; for environments with ``timed_calls``
it has the worker thrash its caches first, then charges each answer with the worker's CPU time
since the previous answer (the first: since the job arrived, so loading the program counts),
read from outside the worker, the thrashing excluded.

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
from stratagem.agents.remote import RemoteGame, ServersDown
from stratagem.agents.results import ERROR_KINDS, EpisodeResult
from stratagem.envs.core import EnvError, Environment, InvalidAction, Observation
from stratagem.envs.outcome import DRAW, ERROR_OUTCOMES, episode_outcome
from stratagem.envs.rng import EpisodeKey
from stratagem.envs.spec import EnvSpec
from stratagem.sandbox.audit import FORBIDDEN_EXIT, MAX_VALUE_BYTES
from stratagem.sandbox.channel import ChannelClosed, FrameTooLarge
from stratagem.sandbox.keys import derive_seed
from stratagem.sandbox.pool import PoolError, Worker, WorkerPool, describe_exit
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
                    raise PoolError(f"the sandbox could not confine a worker: {_text(message.get('message'))}")
                if kind != "ready":
                    return self.cheated("the worker spoke before it was confined")
                self.confined = True
                self.on_ready()
            elif kind == "forbidden":
                return self.cheated(f"forbidden event: {_text(message.get('event'))}")
            elif kind == "build" and not self.built:
                error = message.get("error")
                self.build_error = (error if error in ERROR_KINDS else "exception", _text(message.get("message")))
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


class PlayJob(Job):
    """The worker plays its own copy of the game; the parent replays the actions on its own."""

    mode = "play"
    frame_bytes = PLAY_FRAME_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.actions: list[Any] = []  # the episode in progress, as reported so far
        self.played = 0  # episodes this job's worker has reported (its own count: a replayed job starts anew)

    def episodes_message(self) -> dict[str, Any]:
        return {"keys": [self.runner.episode_key(seed).key.hex() for seed in self.pending]}

    def handle(self, kind: str | None, message: dict[str, Any]) -> bool:
        if kind not in ("moves", "episode") or not self.pending or message.get("i") != self.played:
            return False
        actions = message.get("a")
        if not isinstance(actions, list) or (kind == "moves" and not actions):
            return False  # a frame of moves holds moves: the parent's clock must mean "a call finished"
        if not all(type(action) is dict for action in actions):
            return False  # a worker reports actions as our code made them: dicts of an action's fields
        self.actions.extend(actions)
        if len(self.actions) > self.runner.max_actions:
            return False  # more moves than an episode may have: flooding, not playing
        if kind == "episode":
            result = self.replay(message, self.actions)
            self.actions, self.played = [], self.played + 1
            self.episode_done(result)
        return True

    def replay(self, message: dict[str, Any], actions: list[Any]) -> EpisodeResult:
        """The authoritative result: the worker's actions replayed on the parent's own seeded game."""
        seed, error = self.pending[0], message.get("error")
        result = EpisodeResult(seed=seed, error=error, message=_text(message.get("message")))
        if error is not None and error not in ERROR_KINDS:
            result.error, result.message = "forbidden", "the worker reported an unknown error kind"
        env, recorder = self.runner.env, self.recorder(seed)
        on_step = None if recorder is None else (lambda action, obs: _record(recorder, action, obs))
        try:
            obs, result.score = env.replay(self.runner.episode_key(seed), actions, on_step)
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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.game: Any = None
        self.env: Environment | None = None  # the bridge to the program (program_inputs, program_action)
        self.obs: Observation | None = None
        self.result: EpisodeResult | None = None
        self.recording: RecordingWriter | None = None
        self.awaiting: str | None = None  # the reply the worker owes: "thrashed" or "value"
        self.args: list[Any] = []
        self.cpu_mark = 0.0  # the worker's CPU clock at its last answer (at first: when it took its job)
        self.cpu_excluded = 0.0  # CPU since the mark that was ours (thrashing), not the program's
        self.thrash_started = 0.0
        self.server: str | None = None  # the server this job's games are on (one of the runner's ``servers``)
        self.server_failed = False

    def on_built(self) -> None:
        runner = self.runner
        if runner.servers is not None:  # the least busy healthy server; the pool asked it what it serves
            from stratagem.client.pool import NoServer

            try:
                self.server = runner.servers.acquire()
            except NoServer as exc:
                raise ServersDown(str(exc)) from None
            self.env, self.game = runner.env, RemoteGame(runner.env, self.server, check=False)
        else:  # a game of its own: jobs of one runner play side by side
            self.env = self.game = runner.spec.make(**runner.params)
        self.new_episode()

    def waiting_on_worker(self) -> bool:
        return not self.built or self.awaiting is not None

    def handle(self, kind: str | None, message: dict[str, Any]) -> bool:
        awaiting, self.awaiting = self.awaiting, None
        if self.result is None or awaiting is None or kind not in (awaiting, "error" if awaiting == "value" else ""):
            return False
        if kind == "thrashed":
            self.cpu_excluded += self.worker_cpu() - self.thrash_started
            self.ask(self.args)
        elif kind == "value":
            self.play(message.get("v"), self.charge())
        else:  # the call raised, ran out of memory or returned something that is not plain data
            error = message.get("error")
            self.end_episode(error if error in ERROR_KINDS else "forbidden", _text(message.get("message")))
        return True

    def new_episode(self) -> None:
        seed = self.pending[0]
        self.result, self.recording = EpisodeResult(seed=seed), self.recorder(seed)
        game_seed = seed if self.runner.url else self.runner.episode_key(seed)  # a server keys seeds its own way
        self.obs = self.game.reset(seed=game_seed, episode_id=f"seed-{seed}")
        self.episode_started = time.monotonic()
        _record(self.recording, None, self.obs)
        self.next_call()

    def next_call(self) -> None:
        self.args = list(self.env.program_inputs(self.obs))
        if self.runner.timed:  # cold caches first; the arguments reach the worker only after
            self.awaiting, self.clock = "thrashed", time.monotonic()
            self.thrash_started = self.worker_cpu()
            return self.send({"t": "thrash"})
        self.ask(self.args)

    def ask(self, args: list[Any]) -> None:
        self.awaiting, self.clock = "value", time.monotonic()
        self.send({"t": "call", "args": args})

    def on_ready(self) -> None:
        self.cpu_mark = self.worker_cpu() if self.runner.timed else 0.0
        super().on_ready()

    def worker_cpu(self) -> float:
        """The worker's CPU clock; it is blocked reading whenever this is asked, so the figure is settled."""
        return self.worker.cpu_s() or 0.0

    def charge(self) -> float:
        """The CPU the program used since its last answer (the first: since it took its job), ours excluded."""
        now = self.worker_cpu()
        spent, self.cpu_mark, self.cpu_excluded = now - self.cpu_mark - self.cpu_excluded, now, 0.0
        return max(spent, 1e-9)

    def play(self, value: Any, elapsed: float) -> None:
        env, result = self.env, self.result
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
        if not self.finished:
            self.new_episode()

    def forfeit(self, kind: str, message: str, rest: str | None = None) -> None:
        if self.result is not None:  # the episode in progress is cut short: close its recording
            self.result.error, self.result.message = kind, message
            _finish(self.result, self.obs, self.recording)
            self.result = self.recording = None
        super().forfeit(kind, message, rest)

    def lose(self, why: str) -> None:
        """The episode in progress is played again from its start: its recording, cut short, is closed (the
        replay writes it anew)."""
        if self.recording is not None:
            self.recording.close()
        self.result = self.recording = None
        super().lose(why)

    def server_lost(self, why: str) -> None:
        """The job's server failed (``ServerFailed``: never the program's doing): it is out of the pool, and the
        runner plays what is left again, in a fresh worker, on another server."""
        if self.server is not None:
            self.runner.servers.failed(self.server, why)
        self.server_failed = True
        self.lose(why)

    def stop(self) -> None:
        super().stop()
        if self.recording is not None:  # stopped mid-episode (an interrupt): what was recorded stays readable
            self.recording.close()
            self.recording = None
        try:
            if self.game is not None:
                self.game.close()
                self.game = None
        finally:
            if self.server is not None:
                self.runner.servers.release(self.server)
                self.server = None


def _observation_fields(obs: Observation) -> dict[str, Any]:
    return obs.model_dump(mode="json", exclude={"reward", "done", "metadata"})


def _record(recorder: RecordingWriter | None, action: Any, obs: Observation) -> None:
    if recorder is not None:
        action_fields = None if action is None else action.model_dump(mode="json", exclude_none=True)
        recorder.step(action_fields, obs.reward, obs.done, _observation_fields(obs))


def _finish(result: EpisodeResult, obs: Observation | None, recorder: RecordingWriter | None) -> None:
    """Fill in what the final position says, and close the recording with the result.

    An episode that ended without an error of its own is judged by the environment's last word
    (``envs/outcome.py``): a wrong result is the error ``wrong_answer`` (never a game played and lost),
    a tie is a draw, and ``won`` is a win.
    """
    if obs is not None:
        verdict, why = episode_outcome(obs.metadata) if obs.done and result.error is None else (None, "")
        if verdict in ERROR_OUTCOMES:
            result.error, result.message = verdict, _text(why) or "the environment found the result wrong"
        result.won = bool(getattr(obs, "won", False)) and obs.done and result.error is None
        result.draw = not result.won and result.error is None and verdict == DRAW
        result.max_tile = getattr(obs, "max_tile", None)
    if recorder is not None:
        end = {"score": result.score, "moves": result.moves, "won": result.won, "error": result.error,
               "message": result.message}  # fmt: skip
        if result.draw:
            end["draw"] = True
        if result.max_tile is not None:  # 2048's; no other environment has a max tile
            end["max_tile"] = result.max_tile
        recorder.close(end)


def _text(value: Any) -> str:
    return value[:MAX_MESSAGE] if isinstance(value, str) else ""
