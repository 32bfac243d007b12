"""The inside of the code sandbox: one confined worker keeps one namespace for one episode.

The zygote's payload (``zygote.py``) for code cells: ``prepare`` imports the modules cells may
use, once, before the sandbox exists; ``serve`` runs in the worker after the kernel has shut it
in (seccomp, Landlock, namespaces, an unprivileged identity, rlimits), with a writable scratch
directory as its working directory and root (a size-capped tmpfs that dies with the episode).
An audit hook stays armed for the rest of its life: it refuses processes, sockets, imports and
introspection with a PermissionError the cell sees, so honest mistakes fail fast with a clear
message; the kernel is the boundary either way. The cell's code is plain Python with every
builtin, so it can reach and rewrite this process's own objects: the parent believes only the
JSON it validates, enforces time by killing the process, takes timings with its own clock, and
keeps the process stopped (SIGSTOP) between requests, so no code runs outside a cell.

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
import sys
from typing import Any

import orjson

from stratagem.sandbox import channel
from stratagem.sandbox.audit import encode_value, lock_down
from stratagem.sandbox.confine import Sandbox
from stratagem.sandbox.timing import thrash_caches

# Importable by cells: imported here, before the guard is armed (an import after that is refused).
PRELOADED = (
    "array", "bisect", "cmath", "collections", "copy", "csv", "datetime", "decimal", "fractions", "functools",
    "glob", "heapq", "io", "itertools", "json", "math", "operator", "pathlib", "random", "re", "shutil",
    "statistics", "string", "tempfile", "textwrap", "time", "typing",
)  # fmt: skip
# compile and exec give nothing here: there is no static check to get around. Files are the cell's
# to use: Landlock and the mount namespace keep them to the scratch directory.
EXEMPT = (
    "compile", "exec", "open", "os.listdir", "os.scandir", "os.mkdir", "os.remove", "os.rename", "os.rmdir",
    "os.chmod", "os.truncate", "os.utime", "os.chdir", "os.link", "os.symlink", "shutil.copyfile",
    "shutil.copymode", "shutil.copystat", "shutil.copytree", "shutil.rmtree", "shutil.move", "glob.glob",
    "glob.glob/2", "tempfile.mkstemp", "tempfile.mkdtemp",
)  # fmt: skip
MAX_REQUEST_BYTES = 64 * 2**20


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


def call(request: dict[str, Any], namespace: dict[str, Any], limit: int, nonce: str) -> bytes:
    fn = namespace.get(request["name"])
    if not callable(fn):
        return orjson.dumps({"t": "error", "message": f"{request['name']} is not defined as a function", "n": nonce})
    try:
        value = fn(*request["args"])
    except BaseException as exc:  # the function's own failure
        stream = Capture(limit)
        report(exc, stream)
        return orjson.dumps({"t": "error", "message": stream.text(), "n": nonce})
    try:
        return encode_value(value, n=nonce)
    except ValueError as exc:  # not plain data: the message says what to return instead
        return orjson.dumps({"t": "error", "message": str(exc), "n": nonce})


def prepare(setup: dict[str, Any]) -> dict[str, Any]:
    """In the zygote, before the sandbox exists: import what cells may use (an import after that is refused)."""
    for name in PRELOADED:
        importlib.import_module(name)
    return setup


def serve(fd: int, config: dict[str, Any], box: Sandbox) -> None:
    """In the confined worker: answer requests until the parent closes the channel."""
    lock_down(EXEMPT)  # for good: nothing here needs a forbidden event from now on
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": dict(vars(builtins))}
    limit, watch, cells = config["max_output_chars"], config.get("watch"), 0
    while True:
        try:
            request = orjson.loads(channel.receive(fd, MAX_REQUEST_BYTES))
        except (channel.ChannelClosed, OSError):
            return
        kind, nonce = request.get("t"), request.get("n")  # every reply carries its request's nonce back
        if kind == "run":
            cells += 1
            reply = orjson.dumps({**run(request["code"], namespace, f"<cell {cells}>", limit, watch), "n": nonce})
        elif kind == "thrash":
            thrash_caches()
            reply = orjson.dumps({"t": "thrashed", "n": nonce})
        elif kind == "call":
            reply = call(request, namespace, limit, nonce)
        else:
            return
        channel.send(fd, reply)
