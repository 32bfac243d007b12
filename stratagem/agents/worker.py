"""The inside of the sandbox for strategy programs: the zygote's payload (``stratagem/sandbox/zygote.py``).

``prepare`` runs once in the zygote, trusted: it builds the environment, imports the modules
programs may use and resets the environment once, so that the imports a first reset makes lazily
are done before any program runs. ``serve`` runs in each forked worker *after* the kernel has
shut it in (seccomp, Landlock, namespaces, an unprivileged identity, rlimits): it reads one job,
builds the program and plays.

From the program's first line on, an audit hook watches for forbidden events raised by the
program's own frames (a finalizer or a generator's ``finally`` included): the first one is
reported to the parent in its own frame and ends the process, so nothing the program does next
(a hang, a crash, a misbehaving ``__str__``) can make a cheat look milder.

Two modes. ``play``: the worker holds its own copy of the game, plays every episode (by its key,
``envs/rng.py``: the worker is never told a seed, nor the secret the keys come from) and sends the
actions it took, in frames at most ``FLUSH_S`` apart, and once more when an episode ends; the
parent replays them on its own copy (so tampering with this process's game gains nothing) and
times the gap between frames with its own clock (so no call can take longer than its limit
unseen). ``call``: the parent holds the game and sends the program's arguments; the worker
answers each call with the return value as plain data; for timed environments it first thrashes
its caches, and the parent reads this process's CPU clock: all of its work from the moment it
took the job (loading the program included) is charged to its answers, the thrashing excluded.
"""

from __future__ import annotations

import importlib
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from stratagem.agents.programs import Program, ProgramError, build, new_namespace
from stratagem.envs.core import EnvError, Environment
from stratagem.envs.rng import WARM_UP, EpisodeKey
from stratagem.envs.spec import EnvSpec
from stratagem.sandbox import channel
from stratagem.sandbox.audit import encode_value, watch_program
from stratagem.sandbox.confine import Sandbox
from stratagem.sandbox.timing import thrash_caches

MESSAGE_CHARS = 300
MAX_JOB_BYTES = 64 * 2**20  # the job (a program's source) and call arguments (matmul's matrices)
FLUSH_S = 0.002  # the longest a worker holds finished moves back from the parent (the parent's clock relies on it)


@dataclass
class WorkerState:
    """What the zygote prepared once, for every worker it forks."""

    spec: EnvSpec
    env: Environment


def prepare(setup: dict[str, Any]) -> WorkerState:
    spec = EnvSpec.model_validate(setup["spec"])
    if setup.get("source"):
        spec.source = Path(setup["source"])
    env = spec.make(**setup.get("params", {}))
    for name in spec.strategy.imports:  # now, so that no real import happens once the program runs
        importlib.import_module(name)
    obs = env.reset(seed=WARM_UP, episode_id="warm-up")  # the first reset imports what the game needs lazily
    env.program_inputs(obs)
    return WorkerState(spec=spec, env=env)


def serve(fd: int, state: WorkerState, box: Sandbox) -> None:
    """In a confined worker: one job, then exit."""
    try:
        job = orjson.loads(channel.receive(fd, MAX_JOB_BYTES))
    except (channel.ChannelClosed, OSError):
        return  # the pool closed before this spare was used

    def send(message: dict[str, Any]) -> None:
        channel.send(fd, orjson.dumps(message))

    strategy = state.spec.strategy
    program = Program(source=job["source"], function=strategy.function, sha=job["sha"])
    namespace = new_namespace(strategy)
    watch_program(namespace, _reporter(fd))
    random.seed(job["program_seeds"][0])
    try:
        fn = build(program, strategy, namespace)
    except ProgramError as exc:
        return send({"t": "build", "error": "policy", "message": _short(str(exc))})
    except MemoryError:
        return send({"t": "build", "error": "memory", "message": "MemoryError while building the program"})
    except BaseException as exc:  # anything the program's top level raised
        return send({"t": "build", "error": "exception", "message": _describe(exc)})
    send({"t": "built"})
    call = _caller(fn)
    if job["mode"] == "play":
        keys = [EpisodeKey(bytes.fromhex(key)) for key in job["keys"]]
        _play(call, state.env, keys, job["program_seeds"], send)
    else:
        _answer(call, fd, send)
    send({"t": "done"})


def _reporter(fd: int) -> Callable[[str], None]:
    """The audit hook's report: everything it uses captured now, before a program could rewire a module."""
    write, dumps, header = os.write, orjson.dumps, channel.HEADER.pack

    def report(event: str) -> None:
        data = dumps({"t": "forbidden", "event": event[:100]})
        write(fd, header(len(data)) + data)

    return report


class ProgramFailed(Exception):
    """The program raised or ran out of memory during a call."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


def _caller(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One call of the program: (value, error kind or None, message)."""

    def call(args: Any) -> tuple[Any, str | None, str]:
        try:
            return fn(*args), None, ""
        except MemoryError:
            return None, "memory", "MemoryError"
        except RecursionError:
            return None, "exception", "RecursionError: maximum recursion depth exceeded"
        except BaseException as exc:  # the program's own failure, SystemExit included
            return None, "exception", _describe(exc)

    return call


def _play(call: Callable[..., Any], env: Environment, keys: list[EpisodeKey], program_seeds: list[int],
          send: Any) -> None:  # fmt: skip
    """Every episode through ``env.play``, one after the other: each by its key, never its seed."""
    for index, (key, program_seed) in enumerate(zip(keys, program_seeds, strict=True)):
        random.seed(program_seed)  # the program's randomness: reproducible, and unrelated to the game's
        _play_episode(call, env, index, key, send)


def _play_episode(call: Callable[..., Any], env: Environment, index: int, key: EpisodeKey, send: Any) -> None:
    """One episode; finished moves go out at least every FLUSH_S (the parent's clock), the rest at the end."""
    clock, actions = time.monotonic, []
    sent, flushed = 0, clock()

    def policy(*args: Any) -> Any:
        nonlocal sent, flushed
        if len(actions) > sent and clock() - flushed >= FLUSH_S:
            send({"t": "moves", "i": index, "a": actions[sent:]})
            sent, flushed = len(actions), clock()
        value, error, message = call(args)
        if error is not None:
            raise ProgramFailed(error, message)
        return value

    error, message = None, ""
    try:
        env.play(key, policy, actions)
    except ProgramFailed as exc:
        error, message = exc.kind, exc.message
    except (ValueError, EnvError) as exc:  # the program's move, refused by the environment
        error, message = "illegal_move", _short(str(exc))
    send({"t": "episode", "i": index, "a": actions[sent:], "error": error, "message": message})


def _answer(call: Callable[..., Any], fd: int, send: Any) -> None:
    while True:
        try:
            request = orjson.loads(channel.receive(fd, MAX_JOB_BYTES))
        except (channel.ChannelClosed, OSError):
            return
        kind = request.get("t")
        if kind == "thrash":  # cold caches before a timed call; its arguments come only after
            thrash_caches()
            send({"t": "thrashed"})
            continue
        if kind != "call":
            return
        value, error, message = call(request["args"])
        if error is None:
            try:
                reply = encode_value(value)
            except ValueError as exc:
                error, message = "illegal_move", _short(str(exc))
        if error is not None:
            reply = orjson.dumps({"t": "error", "error": error, "message": message})
        channel.send(fd, reply)


def _short(text: str) -> str:
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + "..."


def _describe(exc: BaseException) -> str:
    """A message made by our code only: a builtin exception's text when its arguments are plain data,
    else its type's name (a program's object in the arguments could run code when printed)."""
    if type(exc).__module__ != "builtins" or any(type(a) not in (str, int, float, bool) for a in exc.args):
        return type(exc).__name__
    try:
        return _short(f"{type(exc).__name__}: {exc}")
    except Exception:
        return type(exc).__name__
