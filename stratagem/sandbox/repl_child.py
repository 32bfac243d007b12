"""The inside of the code sandbox: one confined process keeps one namespace for one episode.

Started by ``repl.py`` as ``python -m stratagem.sandbox.repl_child FD`` with a scrubbed
environment. It reads its limits, imports the modules code may use, confines itself
(``confine.py``: rlimits, no network, no process or thread of its own, under root a uid of its
own) and locks itself down with an audit hook that stays armed for the rest of its life.
Unlike a strategy program, the code here is plain Python with every builtin, so it can reach
and rewrite this process's own objects: no phase of this process is trusted once the first
cell ran. The parent believes only the JSON it validates, enforces time by killing the
process, and takes timings with its own clock.

Requests, one at a time, each answered by one reply:

- ``{"t": "run", "code"}``: exec the cell in the namespace; the value of a final expression
  statement becomes ``result`` (its repr, capped) as in a notebook. Reply ``{"t": "ran",
  "stdout", "stderr", "exit_code": 0 or 1, "result", "rebound"}``; ``rebound``: the cell
  bound a new callable to the watched name (a task's function).
- ``{"t": "thrash"}`` -> ``{"t": "thrashed"}``: cold caches before a timed call.
- ``{"t": "call", "name", "args"}`` -> ``{"t": "value", "v"}`` or ``{"t": "error", "message"}``.
  The arguments arrive only now, after the parent started its clock: a cell that rewired
  this process cannot get a head start on them.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import io
import os
import sys
from multiprocessing.connection import Connection
from typing import Any

import orjson

from stratagem.sandbox.confine import confine, die_with_parent, encode_value, lock_down
from stratagem.sandbox.timing import thrash_caches

# Importable by cells: imported here, before the guard is armed (an import after that is refused).
PRELOADED = (
    "array", "bisect", "cmath", "collections", "copy", "datetime", "decimal", "fractions", "functools",
    "heapq", "itertools", "json", "math", "operator", "random", "re", "statistics", "string", "textwrap",
    "time", "typing",
)  # fmt: skip
# compile and exec give nothing here: there is no static check to get around. object.__setattr__
# stays refused: setting a class's attributes could rewrite the guard's own class.
EXEMPT = ("compile", "exec")
CHANNEL_FD = 3


class Capture(io.TextIOBase):
    """A text stream that keeps the first and last ``limit // 2`` characters written to it."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.head, self.tail, self.total = limit, "", "", 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        written, half = len(text), self.limit // 2
        self.total += written
        room = half - len(self.head)
        if room > 0:
            self.head, text = self.head + text[:room], text[room:]
        if text:
            self.tail = (self.tail + text[-half:])[-half:]
        return written

    def text(self) -> str:
        """What was written, capped; lone surrogates escaped, so that the text is valid UTF-8 JSON."""
        omitted = self.total - len(self.head) - len(self.tail)
        text = self.head + self.tail
        if omitted > 0:
            text = f"{self.head}\n... [{omitted} characters omitted] ...\n{self.tail}"
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def cap(text: str, limit: int) -> str:
    capture = Capture(limit)
    capture.write(text)
    return capture.text()


def report(exc: BaseException, stream: Capture, with_traceback: bool = True) -> None:
    """The exception as Python prints it, without this module's frame, into ``stream``.

    The interpreter's own printer reads frames in C, so it works under the armed guard (which
    refuses ``tb_frame`` to Python code); cell sources are not files, so lines show no source.
    """
    saved = sys.stderr
    sys.stderr = stream
    try:
        tb = exc.__traceback__.tb_next if with_traceback and exc.__traceback__ is not None else None
        sys.__excepthook__(type(exc), exc.with_traceback(tb), tb)
    except BaseException:  # a hostile exception that cannot even be printed
        stream.write(f"{type(exc).__name__} (its traceback could not be printed)\n")
    finally:
        sys.stderr = saved


def run(code: str, namespace: dict[str, Any], cell: str, limit: int, watch: str | None) -> dict[str, Any]:
    """Exec one cell; the last expression's value is the result. Exceptions of any kind are the cell's."""
    stdout, stderr = Capture(limit), Capture(limit)
    result, exit_code, parsed = None, 0, False
    before = namespace.get(watch) if watch else None
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = stdout, stderr
    try:
        tree = ast.parse(code, filename=cell)
        parsed = True
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, cell, "exec"), namespace)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), cell, "eval"), namespace)
            if value is not None:
                namespace["_"] = value
                result = cap(repr(value), limit)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: they end the cell, not this process
        exit_code = 1
        report(exc, stderr, with_traceback=parsed)  # a syntax error is shown as Python shows it, without one
    finally:
        sys.stdout, sys.stderr = saved
    after = namespace.get(watch) if watch else None
    rebound = watch is not None and after is not before and callable(after)
    return {"t": "ran", "stdout": stdout.text(), "stderr": stderr.text(), "exit_code": exit_code,
            "result": result, "rebound": rebound}  # fmt: skip


def call(request: dict[str, Any], namespace: dict[str, Any], limit: int) -> bytes:
    fn = namespace.get(request["name"])
    if not callable(fn):
        return orjson.dumps({"t": "error", "message": f"{request['name']} is not defined as a function"})
    try:
        value = fn(*request["args"])
    except BaseException as exc:  # the function's own failure
        stream = Capture(limit)
        report(exc, stream)
        return orjson.dumps({"t": "error", "message": stream.text()})
    try:
        return encode_value(value)
    except ValueError as exc:  # not plain data: the message says what to return instead
        return orjson.dumps({"t": "error", "message": str(exc)})


def serve(conn: Connection, config: dict[str, Any]) -> None:
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": dict(vars(builtins))}
    limit, watch, cells = config["max_output_chars"], config.get("watch"), 0
    while True:
        try:
            request = orjson.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        kind = request.get("t")
        if kind == "run":
            cells += 1
            reply = orjson.dumps(run(request["code"], namespace, f"<cell {cells}>", limit, watch))
        elif kind == "thrash":
            thrash_caches()
            reply = orjson.dumps({"t": "thrashed"})
        elif kind == "call":
            reply = call(request, namespace, limit)
        else:
            return
        conn.send_bytes(reply)


def main(fd: int) -> None:
    die_with_parent()
    if fd != CHANNEL_FD:  # descriptors 0-3 and no other: the limit on descriptors then leaves no free one
        os.dup2(fd, CHANNEL_FD)
        os.close(fd)
    conn = Connection(CHANNEL_FD)
    config = orjson.loads(conn.recv_bytes())
    try:
        for name in PRELOADED:
            importlib.import_module(name)
        confine(config["memory_mb"], config["cpu_s"], single_process=True)
        lock_down(EXEMPT)  # for good: nothing here needs a forbidden event from now on
    except Exception as exc:  # stderr is /dev/null by now: the parent reports it
        conn.send_bytes(orjson.dumps({"t": "failed", "message": f"{type(exc).__name__}: {exc}"}))
        return
    conn.send_bytes(orjson.dumps({"t": "ready"}))
    serve(conn, config)


if __name__ == "__main__":
    main(int(sys.argv[1]))
