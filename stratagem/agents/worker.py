"""The inside of the sandbox: one forked process runs one program, then exits.

The parent (``runner.py``) gets this process from the pool (``pool.py``), sends one job, and
trusts nothing that comes back beyond plain JSON it validates. Before the program is built the
process confines itself (``stratagem/sandbox/confine.py``: rlimits, no network, stdout/stderr
to /dev/null, an audit hook that refuses and records every event reaching files, processes,
sockets, imports, ctypes, frames or code objects); the guard is armed exactly while program
code runs.

Two modes. ``play``: the worker holds its own copy of the game, plays every seed and sends,
per episode, the actions taken (the parent replays them on its own copy, so a program that
tampers with this process's game gains nothing). ``call``: the parent holds the game (local,
remote or timed) and sends the program's arguments; the worker answers each call with the
return value as plain data. Time is never enforced here: the worker stamps a shared heartbeat
when a call starts, and the parent kills the process when a call or an episode runs too long.
"""

from __future__ import annotations

import importlib
import mmap
import os
import random
import struct
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import orjson

from stratagem.agents.programs import Program, ProgramError, build
from stratagem.envs.core import EnvError, Environment
from stratagem.envs.spec import EnvSpec, StrategySpec
from stratagem.sandbox.confine import AuditGuard, confine, die_with_parent, encode_value
from stratagem.sandbox.timing import thrash_caches

MESSAGE_CHARS = 300


def _short(text: str) -> str:
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + "..."


def _describe(exc: BaseException) -> str:
    """A message made only by our code from builtin exception types (programs cannot define classes)."""
    if type(exc).__module__ != "builtins":
        return type(exc).__name__
    try:
        return _short(f"{type(exc).__name__}: {exc}")
    except Exception:  # a hostile str(); report the type alone
        return type(exc).__name__


_HEARTBEAT = struct.Struct("d")


def preload(strategy: StrategySpec) -> None:
    """Import the modules programs may use now, so that no real import happens once the hook is armed."""
    for name in strategy.imports:
        importlib.import_module(name)


def run_child(channel_fd: int, heartbeat_fd: int, env: Environment, spec: EnvSpec) -> None:
    """Entry point in a freshly forked child: wait for the job, confine, build, run, report; return."""
    die_with_parent()  # if the zygote dies, so does this process
    conn = Connection(channel_fd)
    page = mmap.mmap(heartbeat_fd, _HEARTBEAT.size)
    os.close(heartbeat_fd)
    try:
        job = orjson.loads(conn.recv_bytes())
    except (EOFError, OSError):
        return  # the pool closed before this spare was used
    guard = AuditGuard()
    confine(job["memory_mb"], job["cpu_s"])
    sys.addaudithook(guard)

    def send(message: dict[str, Any]) -> None:
        conn.send_bytes(orjson.dumps(message))

    def beat(started: float) -> None:
        _HEARTBEAT.pack_into(page, 0, started)

    # The guard is armed exactly while program code runs: the module's top level, then each call.
    program = Program(source=job["source"], function=spec.strategy.function, sha=job["sha"])
    guard.permits = {"compile": 1, "exec": 1}  # exactly our own build of the program
    guard.armed = True
    beat(time.monotonic())  # the top level runs under the same per-call limit
    try:
        fn = build(program, spec.strategy)
    except ProgramError as exc:
        return send({"t": "build", "error": "policy", "message": _short(str(exc))})
    except MemoryError:
        return send({"t": "build", "error": "memory", "message": "MemoryError while building the program"})
    except BaseException as exc:  # anything the program's top level raised
        kind = "forbidden" if guard.events else "exception"
        return send({"t": "build", "error": kind, "message": _describe(exc), "events": guard.events[:5]})
    finally:
        guard.armed = False
        beat(0.0)
    call = _caller(fn, guard, beat)
    if job["mode"] == "play":
        _play(call, env, job["seeds"], send)
    else:
        _answer(call, conn, send)
    send({"t": "done"})


class ProgramFailed(Exception):
    """The program raised, ran out of memory or touched something forbidden during a call."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


def _caller(fn: Callable[..., Any], guard: AuditGuard, beat: Callable[[float], None]) -> Callable[..., Any]:
    """One call of the program: (value, error kind or None, message); the guard armed for its duration."""

    def call(args: Any) -> tuple[Any, str | None, str]:
        value, error, message = None, None, ""
        beat(time.monotonic())
        guard.armed = True
        try:
            value = fn(*args)
        except MemoryError:
            error, message = "memory", "MemoryError"
        except RecursionError:
            error, message = "exception", "RecursionError: maximum recursion depth exceeded"
        except BaseException as exc:  # the program's own failure, SystemExit included
            error, message = "exception", _describe(exc)
        finally:
            guard.armed = False
            beat(0.0)
        if guard.events:
            return None, "forbidden", f"forbidden event: {guard.events[0]}"
        return value, error, message

    return call


def _play(call: Callable[..., Any], env: Environment, seeds: list[int], send: Any) -> None:
    """Every seed through ``env.play``; per episode, the actions taken and what stopped the game early."""

    def policy(*args: Any) -> Any:
        value, error, message = call(args)
        if error is not None:
            raise ProgramFailed(error, message)
        return value

    for seed in seeds:
        actions: list[dict[str, Any]] = []
        error, message = None, ""
        random.seed(seed)  # a program's own randomness repeats with the episode: reproducible rewards, exact resumes
        try:
            env.play(seed, policy, actions)
        except ProgramFailed as exc:
            error, message = exc.kind, exc.message
        except (ValueError, EnvError) as exc:  # the program's move, refused by the environment
            error, message = "illegal_move", _short(str(exc))
        send({"t": "episode", "seed": seed, "actions": actions, "error": error, "message": message})
        if error == "forbidden":
            return  # a program that tried to cheat plays no further episode


def _answer(call: Callable[..., Any], conn: Connection, send: Any) -> None:
    send({"t": "ready"})
    prepared: Any = []
    while True:
        try:
            request = orjson.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        kind = request.get("t")
        if kind == "prepare":  # a timed call: arguments first, then cold caches, then "go" starts the clock
            prepared = request["args"]
            thrash_caches()
            send({"t": "prepared"})
            continue
        if kind == "go":
            args = prepared
        elif kind == "call":
            args = request["args"]
        else:
            return
        value, error, message = call(args)
        if error is None:
            try:
                reply = encode_value(value)
            except ValueError as exc:
                error, message = "illegal_move", _short(str(exc))
        if error is not None:
            reply = orjson.dumps({"t": "error", "error": error, "message": message})
        conn.send_bytes(reply)
        if error == "forbidden":
            return
