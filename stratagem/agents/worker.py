"""The inside of the sandbox: one forked process plays one program over its episodes.

The parent (``runner.py``) forks this from a pre-started fork server, sends a job, and trusts
nothing that comes back beyond plain JSON it validates: per episode, the seed, the list of
action ids, and an error kind. Before the program is built the process confines itself:

- rlimits: address space, CPU seconds, no file growth (RLIMIT_FSIZE=0), no new descriptors,
  no core dumps; a network namespace of its own when the kernel allows it;
- stdout/stderr to /dev/null;
- an audit hook (PEP 578) that refuses and records every event that reaches files, processes,
  sockets, imports, ctypes, frames or code objects. A program that catches the refusal is
  still caught: the record decides, not the exception.

Time is not enforced here: the parent watches a shared heartbeat (when the current move
started) and kills this process when a move or an episode runs too long.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import time
from typing import Any

import orjson

from stratagem.agents.programs import Program, ProgramError, build, safe_builtins
from stratagem.envs.core import InvalidAction
from stratagem.envs.spec import EnvSpec

MESSAGE_CHARS = 300
FORBIDDEN_PREFIXES = (
    "open", "os.", "subprocess.", "socket.", "ctypes.", "import", "sys.", "code.", "function.", "compile",
    "exec", "marshal.", "pickle.", "shutil.", "signal.", "resource.", "builtins.input", "urllib.", "http.",
    "ftplib.", "smtplib.", "sqlite3.", "glob.", "tempfile.", "gc.", "mmap.", "_posixsubprocess", "object.",
    "cpython.", "fcntl.", "pty.", "syslog.", "time.sleep",
)  # fmt: skip


class AuditGuard:
    """Refuses forbidden events once armed; ``permit`` lets named events through a counted number of times."""

    def __init__(self) -> None:
        self.armed = False
        self.events: list[str] = []
        self.permits: dict[str, int] = {}

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.armed or not event.startswith(FORBIDDEN_PREFIXES):
            return
        if self.permits.get(event, 0) > 0:
            self.permits[event] -= 1
            return
        self.events.append(event)
        raise PermissionError(f"forbidden in the sandbox: {event}")


def confine(memory_mb: int, cpu_s: float) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past RLIMIT_FSIZE fails with EFBIG, visibly
    vm_bytes = _current_vm_bytes()
    limits = [
        (resource.RLIMIT_AS, vm_bytes + memory_mb * 2**20),
        (resource.RLIMIT_CPU, int(time.process_time() + cpu_s) + 1),
        (resource.RLIMIT_FSIZE, 0),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NOFILE, _highest_fd() + 1),
    ]
    for which, value in limits:
        _, hard = resource.getrlimit(which)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(which, (value, value))
    _leave_the_network()


def _current_vm_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _highest_fd() -> int:
    return max(int(fd) for fd in os.listdir("/proc/self/fd"))


def _leave_the_network() -> None:
    """A fresh network namespace has only a downed loopback; skipped where not permitted."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.unshare(0x40000000)  # CLONE_NEWNET
    except (OSError, AttributeError):
        pass


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


def serve(conn: Any, heartbeat: Any, job_bytes: bytes) -> None:
    """Entry point in the forked child: confine, build, play, report; then exit."""
    job = orjson.loads(job_bytes)
    spec = EnvSpec.model_validate(job["spec"])
    spec.source = None
    env = spec.make(**job["params"])
    program = Program(source=job["source"], function=spec.strategy.function, sha=job["sha"])
    safe_builtins(spec.strategy.imports)  # build the module proxies now, before imports are refused
    guard = AuditGuard()
    confine(job["memory_mb"], job["cpu_s"])
    sys.addaudithook(guard)
    guard.permits = {"compile": 1, "exec": 1}  # exactly our own build of the program
    guard.armed = True

    def send(message: dict[str, Any]) -> None:
        guard.armed = False  # our own write to the pipe
        conn.send_bytes(orjson.dumps(message))
        guard.armed = True

    try:
        fn = build(program, spec.strategy)
    except ProgramError as exc:
        return send({"t": "build", "error": "policy", "message": _short(str(exc))})
    except MemoryError:
        return send({"t": "build", "error": "memory", "message": "MemoryError while building the program"})
    except BaseException as exc:  # anything the program's top level raised
        kind = "forbidden" if guard.events else "exception"
        return send({"t": "build", "error": kind, "message": _describe(exc), "events": guard.events[:5]})
    for seed in job["seeds"]:
        actions, error, message = [], None, ""
        guard.armed = False
        obs = env.reset(seed=seed, episode_id=f"seed-{seed}")
        guard.armed = True
        while not obs.done:
            inputs = env.program_inputs(obs)
            heartbeat.value = time.monotonic()
            try:
                value = fn(*inputs)
            except MemoryError:
                error, message = "memory", "MemoryError"
            except RecursionError:
                error, message = "exception", "RecursionError: maximum recursion depth exceeded"
            except BaseException as exc:  # the program's own failure
                error, message = "exception", _describe(exc)
            finally:
                heartbeat.value = 0.0
            if guard.events:
                error, message = "forbidden", f"forbidden event: {guard.events[0]}"
            if error is None:
                guard.armed = False
                try:
                    action = env.program_action(value)
                    obs = env.step(action)
                    actions.append(action.model_dump(exclude_none=True))
                except (ValueError, InvalidAction) as exc:
                    error, message = "illegal_move", _short(str(exc))
                finally:
                    guard.armed = True
            if error is not None:
                break
        send({"t": "episode", "seed": seed, "actions": actions, "error": error, "message": message})
        if error == "forbidden":
            break  # a program that tried to cheat plays no further episode
    send({"t": "done"})
