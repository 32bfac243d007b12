"""A hostile zygote payload: a strategy worker that lies to its parent, for ``test_hostile.py``.

A program that escaped every Python-level check could write anything on its channel (fd 3). This
payload stands in for it, so the *parent's* side (``jobs.py``, ``job_modes.py``, ``runner.py``, ``channel.FrameReader``)
can be driven with every kind of bad frame through the real scheduler. It is confined exactly like
``stratagem.agents.worker`` (the zygote confines every worker before it runs a payload), then reads
its job and picks a behaviour by the word of ``BEHAVIOURS`` found in the program's source; a
source naming none is served by the real worker, so honest programs play normally in the same pool.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

from stratagem.agents import worker
from stratagem.sandbox import channel
from stratagem.sandbox.channel import HEADER
from stratagem.sandbox.confine import Sandbox

BIG_PARTIAL_BYTES = 40 * 2**20  # how much of a never-finished 60 MiB frame BIG_PARTIAL sends


def prepare(setup: dict[str, Any]) -> worker.WorkerState:
    return worker.prepare(setup)


def _frame(message: Any) -> bytes:
    payload = message if isinstance(message, bytes) else orjson.dumps(message)
    return HEADER.pack(len(payload)) + payload


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _hang() -> None:
    time.sleep(60)  # nanosleep is allowed: the parent's clock must end this


class _Replayed:
    """The ``channel`` module as ``worker.serve`` uses it, handing back the job this payload already read."""

    ChannelClosed = channel.ChannelClosed
    HEADER = channel.HEADER

    def __init__(self, job: bytes) -> None:
        self.job: bytes | None = job

    def receive(self, fd: int, max_bytes: int) -> bytes:
        if self.job is not None:
            job, self.job = self.job, None
            return job
        return channel.receive(fd, max_bytes)

    def send(self, fd: int, payload: bytes) -> None:
        channel.send(fd, payload)


def _episode(index: int, actions: list[Any], **extra: Any) -> dict[str, Any]:
    return {"t": "episode", "i": index, "a": actions, "error": None, "message": "", **extra}


def _behave(name: str, fd: int, index: int) -> None:
    up = {"action_id": 0}
    built = _frame({"t": "built"})
    if name == "HALF_FRAME":  # a header for 100 bytes, 10 of them, then silence
        _write(fd, built + HEADER.pack(100) + b'{"t":"mov')
        _hang()
    elif name == "SLOW_DRIP":  # a whole frame, one byte every 0.3 s: each byte is under move_s, the frame is not
        _write(fd, built)
        for byte in _frame(_episode(index, [up] * 50)):
            _write(fd, bytes([byte]))
            time.sleep(0.3)
    elif name == "HUGE_HEADER":  # a 4 GiB frame announced: the cap must refuse it before reading a byte
        _write(fd, built + b"\xff\xff\xff\xff" + b"x" * 1000)
        _hang()
    elif name == "BIG_PARTIAL":  # a 60 MiB frame (under the 64 MiB cap), 40 MiB of it sent, never finished
        _write(fd, built + HEADER.pack(60 * 2**20))
        chunk = b"[" * 2**20
        for _ in range(BIG_PARTIAL_BYTES // len(chunk)):
            _write(fd, chunk)
        _hang()
    elif name == "GARBAGE":  # an HTTP request where frames belong ("GET " reads as a 1.2 GB length)
        _write(fd, built + b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n" * 100)
        _hang()
    elif name == "ZEROS":  # zero bytes: a run of empty frames, none of them JSON
        _write(fd, built + bytes(4096))
        _hang()
    elif name == "NOT_JSON":  # a well-framed body that is not JSON
        _write(fd, built + _frame(b"\x00\xffnot json at all{"))
        _hang()
    elif name == "NOT_A_DICT":
        _write(fd, built + _frame([1, 2, 3]))
        _hang()
    elif name == "DEEP_JSON":  # nesting past any parser's recursion limit
        _write(fd, built + _frame(b"[" * 100_000 + b"]" * 100_000))
        _hang()
    elif name == "FAKE_EPISODE":  # an episode of made-up moves ("up" 5000 times) with a claimed win
        _write(fd, built + _frame(_episode(index, [up] * 5000, won=True, score=1e9)))
        _hang()
    elif name == "FAKE_SCORE":  # no moves at all, a score and a win claimed in fields the parent must ignore
        _write(fd, built + _frame(_episode(index, [], score=123456.0, won=True, max_tile=2048)))
        _hang()
    elif name == "BAD_ACTIONS":  # actions the replay cannot parse: huge ints, strings, nested junk
        _write(fd, built + _frame(_episode(index, [{"action_id": 2**62}, "3", [0], {"action_id": 1.5}])))
        _hang()
    elif name == "BUILT_TWICE":
        _write(fd, built + built)
        _hang()
    elif name == "SETUP_FAILED_LATE":  # the sandbox's "could not confine" message, after the program started
        _write(fd, built + _frame({"t": "setup-failed", "message": "pretend"}))
        _hang()
    elif name == "WRONG_SEED":  # an episode nobody asked for (the next one, before this one)
        _write(fd, built + _frame(_episode(index + 1, [up])))
        _hang()
    elif name == "UNKNOWN_ERROR":  # an error kind the parent does not know, to dodge the ladder
        _write(fd, built + _frame(_episode(index, [up], error="harmless")))
        _hang()
    elif name == "DONE_EARLY":  # "done" before any episode
        _write(fd, built + _frame({"t": "done"}))
        _hang()
    elif name == "FORGED_FORBIDDEN_THEN_HANG":  # the worker's own "forbidden" report, then a hang: still a cheat
        _write(fd, built + _frame({"t": "forbidden", "event": "open"}))
        _hang()
    elif name == "FLOOD":  # small frames of one real-looking move each, as fast as the socket takes them
        _write(fd, built)
        frame = _frame({"t": "moves", "i": index, "a": [up] * 100})
        while True:
            _write(fd, frame * 64)
    elif name == "TINY_FLOOD":  # 32 MiB of 6-byte frames, in writes of 8 MiB: faster than the parent parses them
        _write(fd, built)
        chunk = _frame(b"{}") * (8 * 2**20 // 6)
        for _ in range(4):
            _write(fd, chunk)
        _hang()
    elif name == "EMPTY_MOVES":  # a "moves" frame without moves: a heartbeat to keep the parent's clock happy
        _write(fd, built)
        frame = _frame({"t": "moves", "i": index, "a": []})
        while True:
            _write(fd, frame)
            time.sleep(0.05)
    elif name == "LONG_MESSAGE":  # a 10 MB error message: the result keeps a few hundred characters of it
        _write(fd, built + _frame(_episode(index, [], error="exception", message="m" * 10**7)))
        _hang()
    elif name == "FAT_MOVES":  # 64 frames, each one "move" of 4 MiB: every frame is under the cap
        _write(fd, built)
        frame = _frame({"t": "moves", "i": index, "a": ["x" * 4 * 2**20]})
        for _ in range(64):
            _write(fd, frame)
        _hang()
    elif name == "SILENT_EXIT":  # the worker exits cleanly without a word after starting the program
        _write(fd, built)
        os._exit(0)
    elif name == "CLOSE_AND_LINGER":  # closes its channel and keeps running: the parent must not wait on it
        _write(fd, built)
        os.close(fd)
        _hang()


BEHAVIOURS = (
    "HALF_FRAME", "SLOW_DRIP", "HUGE_HEADER", "BIG_PARTIAL", "GARBAGE", "ZEROS", "NOT_JSON", "NOT_A_DICT", "DEEP_JSON",
    "FAKE_EPISODE", "FAKE_SCORE", "BAD_ACTIONS", "BUILT_TWICE", "SETUP_FAILED_LATE", "WRONG_SEED", "UNKNOWN_ERROR",
    "DONE_EARLY", "FORGED_FORBIDDEN_THEN_HANG", "FLOOD", "EMPTY_MOVES", "LONG_MESSAGE", "SILENT_EXIT", "FAT_MOVES",
    "TINY_FLOOD", "CLOSE_AND_LINGER",
)  # fmt: skip


def serve(fd: int, state: worker.WorkerState, box: Sandbox) -> None:
    try:
        raw = channel.receive(fd, worker.MAX_JOB_BYTES)
    except (channel.ChannelClosed, OSError):
        return
    job = orjson.loads(raw)
    words = set(job["source"].replace("'", " ").split())
    name = next((b for b in BEHAVIOURS if b in words), None)
    if name is None:  # an honest program: the real worker plays it
        worker.channel = _Replayed(raw)  # type: ignore[assignment]
        return worker.serve(fd, state, box)
    _behave(name, fd, 0)
