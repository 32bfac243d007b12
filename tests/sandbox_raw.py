"""Raw code in a confined worker: the kernel's layers with every Python-level check out of the way.

A zygote payload (``stratagem/sandbox/zygote.py``) for tests: the worker is confined exactly as a
strategy worker (or a code cell) is, by the policy's layers, then execs the test's code with every
builtin and no audit hook. This is what a program that got past the AST rules and the audit hook
would have: the tests use it to show what each kernel layer stops on its own.

``run_raw(code, layers=...)`` returns what the code reported (``report(value)`` inside it sends one
JSON frame) and how the worker ended.
"""

from __future__ import annotations

import builtins
import select
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from stratagem.sandbox import channel
from stratagem.sandbox.confine import LAYERS, Policy, Sandbox
from stratagem.sandbox.pool import WorkerPool


def prepare(setup: dict[str, Any]) -> dict[str, Any]:
    return setup


def serve(fd: int, state: dict[str, Any], box: Sandbox) -> None:
    code = orjson.loads(channel.receive(fd, 1 << 24))["code"]

    def report(value: Any) -> None:
        channel.send(fd, orjson.dumps({"t": "report", "v": value}, default=repr))

    namespace = {"__builtins__": builtins, "__name__": "__raw__", "report": report}
    exec(compile(code, "<raw>", "exec"), namespace)
    channel.send(fd, b'{"t":"done"}')


@dataclass
class RawResult:
    reports: list[Any] = field(default_factory=list)
    exit_code: int | str | None = None  # negative: killed by that signal
    done: bool = False  # the code ran to its end
    timed_out: bool = False


def run_raw(code: str, layers: tuple[str, ...] = LAYERS, cell: bool = False, memory_mb: int = 256,
            cpu_s: float = 20.0, timeout_s: float = 20.0) -> RawResult:  # fmt: skip
    """Run ``code`` in one confined worker with only ``layers``; wait for it to end (or kill it at ``timeout_s``)."""
    policy = Policy(memory_mb=memory_mb, cpu_s=cpu_s, cell=cell, layers=tuple(layers), allow_weaker=True)
    result = RawResult()
    with WorkerPool("tests.sandbox_raw", {}, policy) as pool:
        worker = pool.acquire()
        worker.reader.send(orjson.dumps({"code": code}))
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                result.timed_out = True
                pool.kill(worker)
                break
            select.select([worker.reader], [], [], left)
            try:
                frames = worker.reader.poll()
            except channel.ChannelClosed:
                break
            for frame in frames:
                message = orjson.loads(frame)
                if message.get("t") == "report":
                    result.reports.append(message["v"])
                elif message.get("t") == "done":
                    result.done = True
        result.exit_code = pool.exit_code(worker)
        pool.release(worker)
    return result
