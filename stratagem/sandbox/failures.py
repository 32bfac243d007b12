"""The sandbox's errors, and the words for how a process ended: one module, below everything that says them.

More than the pool raises and explains them: the zygote's handle (``zygote_control.py``), which the pool
sits on, raises ``PoolError`` and describes how a zygote ended; a job reports how its worker ended; the CLI
and the dashboard only catch a failure or say why the sandbox cannot start. Kept below the pool and the
zygote's handle (importing neither), they reach each of these without an import circle, and each message
reads the same wherever it is printed.
"""

from __future__ import annotations

import signal

from stratagem.sandbox.confine import LAYERS

SIGNAL_SOURCES = {
    signal.SIGKILL: "the OOM killer or a `kill -9`",
    signal.SIGINT: "Ctrl-C or `kill -INT`",
    signal.SIGTERM: "a `kill` or a service manager stopping it",
    signal.SIGHUP: "a closed terminal or a `kill -HUP`",
}


class PoolError(RuntimeError):
    """The sandbox could not start, or its zygote failed for good; the message says why."""


class SandboxUnavailable(PoolError):
    """This kernel lacks a layer of the sandbox, and weaker confinement was not allowed."""


class WorkersKilled(PoolError):
    """The sandbox's processes keep being killed from outside; the run stops rather than blame a program."""


def describe_signal(signum: int) -> str:
    """``signal 9, SIGKILL: the OOM killer or a `kill -9``` (the likely senders, where there are usual ones)."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"SIGRT{signum}" if signal.SIGRTMIN <= signum <= signal.SIGRTMAX else "unknown"
    source = SIGNAL_SOURCES.get(signum)
    return f"signal {signum}, {name}" + (f": {source}" if source else "")


def describe_exit(code: int | None) -> str:
    """A process's end as ``subprocess`` reports it (negative: the signal that killed it)."""
    if code is None:
        return "still running"
    return f"killed by {describe_signal(-code)}" if code < 0 else f"exit status {code}"


def unavailable_message(missing: dict[str, str]) -> str:
    """``SandboxUnavailable``'s message, for the pool and ``stratagem serve``'s early check alike: what this
    kernel lacks, and how to run anyway with the layers that work."""
    kept = [layer for layer in LAYERS if layer not in missing]
    lines = [f"  {layer}: {why}" for layer, why in missing.items()]
    return ("the sandbox cannot run untrusted code safely on this machine; missing:\n" + "\n".join(lines) +
            f"\npass --allow-weaker-sandbox (Python: allow_weaker=True) to run with the layers that work here "
            f"({', '.join(kept) or 'none'}); `stratagem doctor` shows them all")  # fmt: skip
