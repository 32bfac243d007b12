"""Program runs for the ``/web`` page: a pasted strategy program plays one episode, then is watched step by step.

Why a child process running ``stratagem play``: the page must not be a weaker way to run code than the
command. The child *is* that command: the same extraction and static checks, the same kernel sandbox
(seccomp, Landlock, namespaces, rlimits; refused where a layer is missing, unless the server was started
with ``--allow-weaker-sandbox``), the same limits (per move, per episode, memory, CPU) and the same
replay of the program's moves on a game it cannot reach. The program never runs in the server's process
(nor in the child, which only schedules sandboxed workers). The server adds bounds of its own: one
episode, one run at a time (429 otherwise), a session slot held while it runs (so the session cap
counts it: 503 at capacity), the child and its sandbox killed past ``RUN_TIMEOUT_S``, at most
``MAX_SHOWN_STEPS`` steps kept per run and the last ``MAX_RUNS`` runs remembered for their frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from stratagem.server.errors import ClientError, as_client_error, validate
from stratagem.server.routes import parse_json_object
from stratagem.server.sessions import SessionManager

PLAY_EPISODE_S = 60.0  # `stratagem play`'s default --episode-timeout (agents.runner.Limits.episode_s)
RUN_TIMEOUT_S = PLAY_EPISODE_S + 30.0  # the child's start-up and the sandbox's, beside the episode
MAX_PROGRAM_CHARS = 200_000  # what `stratagem play` accepts (agents.extraction.MAX_COMPLETION_CHARS)
MAX_SHOWN_STEPS = 2000
MAX_RUNS = 4
STOP_GRACE_S = 3.0  # after SIGINT, the child's pool closes cleanly; then SIGKILL to its whole group


class RunRequest(BaseModel):
    """Body of ``POST /web/run``."""

    model_config = ConfigDict(extra="forbid")
    program: str = Field(min_length=1, max_length=MAX_PROGRAM_CHARS, description="a program or a whole completion")
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="the episode's seed, as POST /reset takes it")


class ProgramRuns:
    """Runs of pasted programs: start one, then draw its frames on request."""

    def __init__(self, manager: SessionManager, params: dict[str, Any],
                 draw: Callable[[dict[str, Any], dict[str, Any]], bytes]) -> None:  # fmt: skip
        self.manager, self.params, self.draw = manager, dict(params), draw
        self.spec = manager.spec
        self.runs: OrderedDict[str, Any] = OrderedDict()  # run id -> viz.episodes.Episode, oldest first
        self.busy = asyncio.Lock()
        self.process: asyncio.subprocess.Process | None = None
        self._episode_lock = threading.Lock()  # an Atari episode rebuilds its screens lazily, one thread at a time

    def describe(self) -> dict[str, Any]:
        return {
            "episodes": 1,
            "timeout_s": RUN_TIMEOUT_S,
            "max_shown_steps": MAX_SHOWN_STEPS,
            "max_program_chars": MAX_PROGRAM_CHARS,
            "sandbox": "as `stratagem play`: the kernel sandbox, 1 s a move, 60 s an episode, 512 MB, 120 CPU s",
        }

    def command(self, program: Path, seed: int, record: Path) -> list[str]:
        """``stratagem play`` for one episode of the served environment, with the server's parameters."""
        env = str(self.spec.source) if self.spec.source else self.spec.name
        argv = [sys.executable, "-m", "stratagem.cli", "play", env, "--strategy", str(program), "--episodes", "1",
                "--seed", str(seed), "--workers", "1", "--json", "--record", str(record)]  # fmt: skip
        for key, value in self.params.items():
            argv += ["-p", f"{key}={json.dumps(value)}"]
        if self.params.get("allow_weaker_sandbox"):
            argv.append("--allow-weaker-sandbox")
        return argv

    async def start(self, raw: bytes) -> dict[str, Any]:
        """Play the program on the seed; the answer lists its steps, and ``frames`` is where each is drawn."""
        request = validate(RunRequest, parse_json_object(raw))
        if self.busy.locked():
            raise ClientError(429, "a program is already running on this server (one at a time); try again when "
                              "it has finished")  # fmt: skip
        async with self.busy:
            try:
                session = await self.manager.create("run")  # a slot of the session cap while it runs
            except Exception as exc:
                raise as_client_error(exc) from None
            try:
                async with session.lock:  # a session in a call is never reaped as idle
                    summary, episode, result = await self.play(request)
            finally:
                await self.manager.close(session, "its program run finished")
        run_id = uuid.uuid4().hex
        self.runs[run_id] = episode
        while len(self.runs) > MAX_RUNS:
            self.runs.popitem(last=False)
        steps, moves = episode.recording.steps, (result or {}).get("moves")
        return {
            "run_id": run_id,
            "program": episode.header.get("program"),
            "seed": request.seed,
            "result": result,
            "reward": summary.get("reward"),
            "seconds": summary.get("seconds"),
            "steps_total": moves + 1 if isinstance(moves, int) else len(steps),
            "shown": len(steps),
            "steps": [_log_line(i, s, episode) for i, s in enumerate(steps)],
            "frames": f"/web/runs/{run_id}/frames/",
        }

    async def play(self, request: RunRequest) -> tuple[dict[str, Any], Any, dict[str, Any] | None]:
        """Run the child; return its summary, the episode (cut to MAX_SHOWN_STEPS) and the episode's result."""
        with tempfile.TemporaryDirectory(prefix="stratagem-web-run-") as tmp:
            folder = Path(tmp)
            program, record = folder / "strategy.py", folder / "replays"
            program.write_text(request.program, encoding="utf-8")
            out, err = await self.child(self.command(program, request.seed, record))
            summary = _last_json(out)
            if summary is None:
                why = next((line for line in reversed(err.decode(errors="replace").splitlines()) if line.strip()),
                           "it printed nothing")  # fmt: skip
                raise ClientError(503, f"the program could not be run here: {why}")
            if summary.get("interrupted"):
                raise ClientError(503, "the run was stopped: the server is shutting down")
            if summary.get("program_error"):
                raise ClientError(422, f"the program was refused before it ran ({summary['program_error']}): "
                                  f"{summary.get('message', '')}")  # fmt: skip
            files = sorted(record.glob("*.jsonl*"))
            if not files:
                raise ClientError(503, "the program ran but left no recording of its episode")
            episode, result = await self.manager.run(_load, files[0])
        return summary, episode, result

    async def child(self, argv: list[str]) -> tuple[bytes, bytes]:
        """Run ``argv`` in a session of its own (so it and its sandbox can be killed together); bounded in time."""
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.process = process
        try:
            return await asyncio.wait_for(process.communicate(), RUN_TIMEOUT_S)
        except asyncio.TimeoutError:  # not yet TimeoutError on Python 3.10
            raise ClientError(504, f"the program's run took longer than {RUN_TIMEOUT_S:g} s and was stopped") from None
        finally:
            self.process = None
            if process.returncode is None:  # timed out, or the server is stopping
                await _end(process)

    async def frame(self, run_id: str, index: str) -> bytes:
        """Step ``index`` of run ``run_id`` as PNG, drawn by the viewer's render path."""
        episode = self.runs.get(run_id)
        if episode is None:
            raise ClientError(404, f"unknown run {run_id!r}: the server keeps the last {MAX_RUNS} runs; run the "
                              "program again")  # fmt: skip
        number = index.removesuffix(".png")
        if not number.isdigit() or int(number) >= len(episode):
            raise ClientError(404, f"run {run_id} has steps 0..{len(episode) - 1}, not {index!r}")

        def draw() -> bytes:
            with self._episode_lock:
                step = episode.step(int(number))
            return self.draw(step, episode.header)

        try:
            return await self.manager.run(draw)
        except Exception as exc:
            raise as_client_error(exc) from None

    def interrupt(self) -> None:
        """Ctrl-C or SIGTERM reached the server: stop a run now (uvicorn waits for requests in flight to end)."""
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGINT)

    async def stop(self) -> None:
        """The server is stopping: end a run still going (its child and sandbox)."""
        if self.process is not None and self.process.returncode is None:
            await _end(self.process)


async def _end(process: asyncio.subprocess.Process) -> None:
    """SIGINT to the child's group (``stratagem play`` then closes its sandbox pool), SIGKILL if it lingers."""
    for sig, wait_s in ((signal.SIGINT, STOP_GRACE_S), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            await asyncio.wait_for(process.wait(), wait_s)
            return
        except asyncio.TimeoutError:
            continue


def _log_line(i: int, step: dict[str, Any], episode: Any) -> dict[str, Any]:
    return {"step": step.get("step", i), "action": episode.action_label(i), "reward": step.get("reward"),
            "done": step.get("done")}  # fmt: skip


def _last_json(out: bytes) -> dict[str, Any] | None:
    for line in reversed(out.decode(errors="replace").splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        return value if isinstance(value, dict) else None
    return None


def _load(path: Path) -> tuple[Any, dict[str, Any] | None]:
    """The recording as a viewer's Episode, cut to MAX_SHOWN_STEPS (then marked as cut), and its result."""
    from stratagem.viz.episodes import Episode
    from stratagem.viz.recording import read_recording

    recording = read_recording(path)
    result = recording.end
    if len(recording.steps) > MAX_SHOWN_STEPS:
        recording.steps, recording.end = recording.steps[:MAX_SHOWN_STEPS], None
    return Episode(recording), result
