"""The process confinement on its own, with the AST policy out of the way: every layer must hold
even for code that the static checks would never have let through."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent(
    """
    import ctypes, json, os, socket, subprocess, sys, tempfile
    from stratagem.agents.worker import AuditGuard, confine

    report = os.fdopen(int(sys.argv[1]), "w")
    scratch = tempfile.TemporaryFile()
    confine(memory_mb=256, cpu_s=20)
    guard = AuditGuard()
    sys.addaudithook(guard)
    guard.armed = True
    outcomes = {}

    def attempt(name, action):
        try:
            action()
            outcomes[name] = "allowed"
        except MemoryError:
            outcomes[name] = "memory"
        except BaseException as exc:
            outcomes[name] = type(exc).__name__

    attempt("read a file", lambda: open("/etc/hostname").read())
    attempt("write a file", lambda: open("/tmp/stratagem-probe", "w").write("x"))
    attempt("grow an open file", lambda: (scratch.write(b"x" * 10), scratch.flush()))
    attempt("os.system", lambda: os.system("true"))
    attempt("subprocess", lambda: subprocess.run(["true"]))
    attempt("fork", lambda: os.fork())
    attempt("socket", lambda: socket.socket())
    attempt("ctypes", lambda: ctypes.CDLL(None))
    attempt("import", lambda: __import__("xmlrpc.client"))
    attempt("frames", lambda: sys._getframe())
    attempt("allocate 2 GiB", lambda: bytearray(2 * 2**30))
    attempt("plain arithmetic", lambda: sum(range(1000)))
    guard.armed = False
    report.write(json.dumps({"outcomes": outcomes, "events": guard.events}))
    report.close()
    """
)


def test_every_layer_holds_without_the_static_checks(tmp_path):
    read, write = os.pipe()
    proc = subprocess.Popen([sys.executable, "-c", PROBE, str(write)], pass_fds=(write,), stdin=subprocess.DEVNULL,
                            cwd=tmp_path)  # fmt: skip
    os.close(write)
    with os.fdopen(read) as pipe:
        data = json.loads(pipe.read())
    assert proc.wait(timeout=60) == 0
    outcomes, events = data["outcomes"], data["events"]
    refused = {
        k: v for k, v in outcomes.items() if k not in ("grow an open file", "allocate 2 GiB", "plain arithmetic")
    }
    assert set(refused.values()) == {"PermissionError"}, outcomes
    assert outcomes["grow an open file"] == "OSError"  # RLIMIT_FSIZE: EFBIG
    assert outcomes["allocate 2 GiB"] == "memory"  # RLIMIT_AS
    assert outcomes["plain arithmetic"] == "allowed"
    for event in ("open", "os.system", "subprocess.Popen", "os.fork", "socket.__new__", "ctypes.dlopen", "import",
                  "sys._getframe"):  # fmt: skip
        assert event in events, (event, events)
    assert not os.path.exists("/tmp/stratagem-probe")
