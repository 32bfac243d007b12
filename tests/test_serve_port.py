"""`serve` binds before it announces anything, says plainly why it cannot listen, and stops quietly on a signal."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from stratagem.server.app import serve
from stratagem.server.listen import ServeError, listen_socket

ROOT = Path(__file__).resolve().parent.parent
# serve() as the CLI calls it, with the statuses the CLI gives (130 for Ctrl-C, 1 when it cannot listen).
SCRIPT = """
import sys
from stratagem.server.app import serve
from stratagem.server.listen import ServeError
try:
    serve("2048", host=sys.argv[1], port=int(sys.argv[2]))
except KeyboardInterrupt:
    sys.exit(130)
except ServeError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(1)
"""


def start(host: str = "127.0.0.1", port: int = 0) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, host, str(port)], stderr=subprocess.PIPE, text=True, env=env)


def test_busy_port_is_named_and_nothing_is_announced(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ServeError, match=rf"^port {port} is in use; pass --port"):
            serve("2048", port=port)
    assert "serving" not in capsys.readouterr().err  # the old serve announced the URL, then died in uvicorn


def test_busy_port_held_by_a_running_server() -> None:
    """A second `serve` on the port of a first one: exit 1 with the message, no uvicorn Errno, no traceback."""
    first = start()
    try:
        line = first.stderr.readline()
        port = int(re.search(r"http://127\.0\.0\.1:(\d+) ", line).group(1))
        second = subprocess.run(
            [sys.executable, "-c", SCRIPT, "127.0.0.1", str(port)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=60,
        )
        assert second.returncode == 1, second.stderr
        expected = (
            f"error: port {port} is in use; pass --port with a free one (or stop what listens on 127.0.0.1:{port})"
        )
        assert second.stderr.strip() == expected
    finally:
        first.kill()
        first.wait()


def test_address_not_of_this_machine() -> None:
    with pytest.raises(ServeError, match=r"^cannot listen on 192\.0\.2\.1: it is not an address of this machine; "):
        listen_socket("192.0.2.1", 0)  # TEST-NET-1: documentation only, never a local address


def test_privileged_port_without_permission() -> None:
    """Port 80 as an unprivileged user (dropping root in a child when the tests run as root)."""
    if int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()) <= 80:
        pytest.skip("this kernel lets anyone bind port 80")
    if os.geteuid() != 0:
        with pytest.raises(ServeError) as caught:
            listen_socket("127.0.0.1", 80)
        message = str(caught.value)
    else:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.setgid(65534)
                os.setuid(65534)
                try:
                    listen_socket("127.0.0.1", 80)
                    os.write(write, b"bound")
                except ServeError as exc:
                    os.write(write, str(exc).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            message = pipe.read().decode()
        os.waitpid(pid, 0)
    assert message.startswith("no permission to listen on port 80: ports below 1024 need root"), message
    assert "pass --port" in message


def test_announced_only_once_listening_and_signals_end_quietly() -> None:
    for sig, status in ((signal.SIGINT, 130), (signal.SIGTERM, -signal.SIGTERM)):
        server = start()
        try:
            line = server.stderr.readline()
            found = re.fullmatch(
                r"serving '2048' on http://127\.0\.0\.1:(\d+) "
                r"\(WebSocket: ws://\S+/ws; in a browser: http://\S+/web\); Ctrl-C stops\n",
                line,
            )
            assert found, line
            # The line means "listening": the first request, with no retry, is answered.
            assert httpx.get(f"http://127.0.0.1:{found.group(1)}/health", timeout=10).json() == {"status": "healthy"}
            server.send_signal(sig)
            rest = server.stderr.read()
            assert server.wait(timeout=30) == status
            assert "Traceback" not in rest and "Error" not in rest, rest
        finally:
            server.kill()
            server.wait()
