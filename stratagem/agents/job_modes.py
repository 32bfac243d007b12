"""The two ways a job plays its episodes, and how an episode's result is settled and recorded.

The result of an episode must be the parent's, never the worker's word: each mode gets it from a game
the parent holds. ``PlayJob``: the worker plays its own copy of the game and reports the actions per
episode; the parent replays them on its own copy, from the same episode key (``Environment.replay``),
and that replay is the result. ``CallJob``: the parent holds the game (its own, or a server's through
``RemoteGame``) and asks the worker for one move at a time; for environments with ``timed_calls``
it has the worker thrash its caches first, then charges each answer with the worker's CPU time
since the previous answer (the first: since the job arrived, so loading the program counts),
read from outside the worker, the thrashing excluded. Both end an episode the same way (``_finish``).
The worker itself (its frames, clock and deaths) is ``jobs.py``'s.
"""

from __future__ import annotations

import time
from typing import Any

from stratagem.agents.jobs import PLAY_FRAME_BYTES, Job, clip_text
from stratagem.agents.remote import RemoteGame, ServersDown
from stratagem.agents.results import ERROR_KINDS, EpisodeResult
from stratagem.envs.core import EnvError, Environment, InvalidAction, Observation
from stratagem.envs.outcome import DRAW, ERROR_OUTCOMES, episode_outcome
from stratagem.viz.recording import RecordingWriter


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
        result = EpisodeResult(seed=seed, error=error, message=clip_text(message.get("message")))
        if error is not None and error not in ERROR_KINDS:
            result.error, result.message = "forbidden", "the worker reported an unknown error kind"
        env, recorder = self.runner.env, self.recorder(seed)
        on_step = None if recorder is None else (lambda action, obs: _record(recorder, action, obs))
        try:
            obs, result.score = env.replay(self.runner.episode_key(seed), actions, on_step)
            result.moves = len(actions)
        except (EnvError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            obs, result.error = None, "forbidden"
            result.message = f"the replay refused a move the worker accepted: {clip_text(str(exc))}"
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
            self.end_episode(error if error in ERROR_KINDS else "forbidden", clip_text(message.get("message")))
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
            return self.end_episode("illegal_move", clip_text(str(exc)))
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
            result.error, result.message = verdict, clip_text(why) or "the environment found the result wrong"
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
