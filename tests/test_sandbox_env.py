"""The code sandbox: a REPL per episode in a confined process, hostile code, the matmul task, the wire."""

from __future__ import annotations

import json
import os
import socket
import threading

import httpx
import pytest
from websockets.sync.client import connect

from stratagem.agents.baselines import MATMUL_TEXTBOOK
from stratagem.envs import EpisodeNotActive, ManifestError, make
from stratagem.envs.sandbox import MAX_CODE_CHARS, SandboxEnv

H = "X-Session-Id"
LIMITS = {"timeout_s": 5.0, "memory_mb": 256, "cpu_s": 60.0}


@pytest.fixture
def env():
    sandbox = SandboxEnv(**LIMITS)
    sandbox.reset(seed=1)
    yield sandbox
    sandbox.close()


def gone(pid: int | None) -> bool:
    """Whether the host process ``pid`` has exited and been reaped (a cell's own os.getpid() is its
    pid inside its namespace; ``env._repl.host_pid`` is the one the host sees)."""
    assert pid is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_variables_persist_across_steps_and_vanish_at_reset(env):
    assert env.step({"code": "x = 41\ndef inc(v):\n    return v + 1"}).result is None
    obs = env.step({"code": "inc(x)"})
    assert obs.result == "42" and obs.exit_code == 0 and obs.reward == 0.0 and obs.steps_left == 48  # a number
    assert env.step({"code": "_ * 2"}).result == "84"  # a notebook's last value
    assert env.step({"code": "import os\nos.getpid()"}).result == "2"  # pid 2 of its own namespace
    pid = env._repl.host_pid
    obs = env.reset(seed=2)
    assert obs.stdout == obs.stderr == "" and obs.steps_left == 50 and not obs.state_lost
    obs = env.step({"code": "x"})
    assert obs.exit_code == 1 and "NameError: name 'x' is not defined" in obs.stderr and not obs.state_lost
    assert gone(pid)  # reset killed the old process, and reaped it


def test_stdout_stderr_result_and_exceptions(env):
    obs = env.step({"code": "import sys\nprint('out', 1)\nprint('err', file=sys.stderr)\n'text'"})
    assert (obs.stdout, obs.stderr, obs.result, obs.exit_code) == ("out 1\n", "err\n", "'text'", 0)
    assert obs.duration_s > 0
    obs = env.step({"code": "kept = 'yes'\nprint('before')\ndef f():\n    return 1 / 0\nf()"})
    assert obs.exit_code == 1 and obs.stdout == "before\n" and obs.result is None and not obs.state_lost
    assert obs.stderr.startswith("Traceback") and "line 4, in f" in obs.stderr
    assert obs.stderr.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "repl_child" not in obs.stderr  # the sandbox's own frame is not the code's
    obs = env.step({"code": "raise SystemExit(3)"})
    assert obs.exit_code == 1 and "SystemExit: 3" in obs.stderr
    obs = env.step({"code": "def broken(:\n    pass"})
    assert obs.exit_code == 1 and "SyntaxError" in obs.stderr
    assert env.step({"code": "kept"}).result == "'yes'"  # an exception costs no state
    assert env.step({"code": "None"}).result is None


def test_output_and_result_are_capped():
    sandbox = SandboxEnv(**LIMITS, max_output_chars=1000)
    try:
        sandbox.reset(seed=0)
        obs = sandbox.step({"code": "print('a' * 50_000 + 'END')\n'b' * 50_000"})
        assert len(obs.stdout) < 1100 and "[49004 characters omitted]" in obs.stdout and obs.stdout.endswith("END\n")
        assert len(obs.result) < 1100 and "characters omitted" in obs.result
    finally:
        sandbox.close()


def test_a_timeout_is_enforced_from_outside_and_the_next_step_starts_fresh():
    sandbox = SandboxEnv(**{**LIMITS, "timeout_s": 0.5})
    try:
        sandbox.reset(seed=0)
        sandbox.step({"code": "import os\nstate = 1\nos.getpid()"})
        pid = sandbox._repl.host_pid
        # A loop that swallows every exception, SIGALRM's included, is still stopped: the parent kills it.
        obs = sandbox.step({"code": "while True:\n    try:\n        while True:\n            pass\n"
                                    "    except BaseException:\n        pass"})  # fmt: skip
        assert obs.exit_code == 124 and obs.state_lost and not obs.done
        assert "timed out after 0.5 s" in obs.stderr and "every variable defined so far is gone" in obs.stderr
        assert gone(pid) and sandbox.state.restarts == 1
        obs = sandbox.step({"code": "'state' in globals()"})
        assert obs.exit_code == 0 and not obs.state_lost and obs.result == "False"
    finally:
        sandbox.close()


def test_the_cpu_budget_kills_the_process():
    sandbox = SandboxEnv(timeout_s=60, memory_mb=256, cpu_s=1)
    try:
        sandbox.reset(seed=0)
        obs = sandbox.step({"code": "while True:\n    pass"})
        assert obs.exit_code == 128 + 24 and obs.state_lost and "CPU budget of 1 s" in obs.stderr
    finally:
        sandbox.close()


def test_hostile_code_is_refused_and_harms_nothing(env, tmp_path, monkeypatch):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    target = tmp_path / "written"
    refusals = {
        "open('/etc/passwd').read()": "No such file or directory",  # its root is its own scratch directory
        f"open({str(target)!r}, 'w').write('x')": "No such file or directory",
        f"import os\nos.system('touch {target}')": "forbidden in the sandbox: os.system",
        "import os\nwhile True:\n    os.fork()": "forbidden in the sandbox: os.fork",
        f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))": "forbidden in the sandbox: socket",
        "import os\nos.kill(os.getppid(), 9)": "forbidden in the sandbox: os.kill",
        "import ctypes\nctypes.CDLL(None).system(b'true')": "forbidden in the sandbox: ctypes",
        # A module of this process can be rewritten (that is not audited), but the hook keeps what it captured.
        "import sys\nsys.modules['stratagem.sandbox.audit'].FORBIDDEN_PREFIXES = ()\n"
        "import os\nos.system('true')": "forbidden in the sandbox: os.system",
        "big = bytearray(8 * 2**30)": "MemoryError",
    }
    env.step({"code": "survivor = 'still here'"})
    for code, needle in refusals.items():
        obs = env.step({"code": code})
        assert obs.exit_code == 1 and needle in obs.stderr and not obs.state_lost, (code, obs.stderr)
    assert env.step({"code": "survivor"}).result == "'still here'"
    assert not target.exists()
    with pytest.raises(BlockingIOError):
        listener.accept()  # nothing connected
    listener.close()
    monkeypatch.setenv("STRATAGEM_TEST_SECRET", "hunter2")
    env.reset(seed=3)
    assert env.step({"code": "import os\nos.environ.get('STRATAGEM_TEST_SECRET'), os.getcwd()"}).result == "(None, '/')"


def test_a_process_that_forges_replies_or_exits_is_replaced(env):
    # The cell writes a frame of its own on the channel to the parent, ahead of the real reply.
    forge = "import os, struct\nm = b'{\"t\": \"ran\"}'\nos.write(3, struct.pack('!I', len(m)) + m)"
    obs = env.step({"code": forge})
    assert obs.state_lost and obs.exit_code == 1
    assert "out of protocol" in obs.stderr or "a message nobody asked for" in obs.stderr  # it lacks the nonce
    obs = env.step({"code": "import os\nos._exit(7)"})
    assert obs.state_lost and obs.exit_code == 7 and "exited with code 7" in obs.stderr
    assert env.step({"code": "'fine'"}).result == "'fine'" and env.state.restarts == 2


def test_a_step_racing_close_reports_the_kill_and_starts_nothing(env):
    env.step({"code": "1"})
    pid = env._repl.host_pid
    env.close()  # a server closing the session while this step was on its way in
    assert gone(pid)
    obs = env.step({"code": "1"})
    assert obs.state_lost and obs.exit_code == 128 + 9 and "killed by SIGKILL" in obs.stderr


def test_the_matmul_task_is_scored_through_the_sandbox():
    sandbox = make("sandbox", **LIMITS, task="matmul", task_params={"size": 12, "trials": 2})
    try:
        obs = sandbox.reset(seed=0)
        assert "Define matmul(A, B)" in obs.task and sandbox.state.task == "matmul"
        obs = sandbox.step({"code": "helper = 1"})
        assert obs.reward == 0.0 and obs.task_outcome is None
        obs = sandbox.step({"code": MATMUL_TEXTBOOK})
        outcome = obs.task_outcome
        assert outcome.moves == 2 and outcome.error is None and obs.reward == outcome.score > 0
        assert outcome.won == (outcome.score > 1)  # right: won only when faster than the loop
        # Using the function without redefining it plays no episode.
        obs = sandbox.step({"code": "matmul([[1.0, 2.0]], [[3.0], [4.0]])"})
        assert obs.result == "[[11.0]]" and obs.task_outcome is None and obs.reward == 0.0
        obs = sandbox.step({"code": "def matmul(A, B):\n    return [[1.0]]"})  # a shape no draw has
        assert obs.reward == 0.0 and obs.task_outcome.error == "illegal_move" and not obs.task_outcome.won
        obs = sandbox.step({"code": "def matmul(A, B):\n    return (row for row in A)"})
        assert obs.task_outcome.error == "exception" and "plain data" in obs.task_outcome.message
        obs = sandbox.step({"code": "def matmul(A, B):\n    return [[0.0] * len(B[0]) for _ in A]"})
        outcome = obs.task_outcome  # a wrong product: the function's error, naming the first wrong cell
        assert obs.reward == 0.0 and outcome.error == "wrong_answer" and not outcome.won and outcome.score == 0.0
        assert outcome.message.startswith("wrong product: C[0][0] = 0.0, expected ")
    finally:
        sandbox.close()


def test_a_task_call_that_hangs_is_killed_and_says_the_state_is_lost():
    sandbox = SandboxEnv(**{**LIMITS, "timeout_s": 0.5}, task="matmul", task_params={"size": 4, "trials": 1})
    try:
        sandbox.reset(seed=0)
        obs = sandbox.step({"code": "kept = 1\ndef matmul(A, B):\n    while True:\n        pass"})
        assert obs.exit_code == 0 and obs.state_lost and obs.reward == 0.0
        assert (
            obs.task_outcome.error == "timeout" and "every variable defined so far is gone" in obs.task_outcome.message
        )
        assert sandbox.step({"code": "kept"}).exit_code == 1
    finally:
        sandbox.close()


def test_episode_bounds_and_bad_parameters():
    sandbox = SandboxEnv(**LIMITS, max_episode_steps=2)
    try:
        with pytest.raises(EpisodeNotActive, match="call reset first"):
            sandbox.step({"code": "1"})
        sandbox.reset(seed=0)
        sandbox.step({"code": "1"})
        pid = sandbox._repl.host_pid
        obs = sandbox.step({"code": "2"})
        assert obs.done and obs.steps_left == 0 and obs.result == "2" and gone(pid)
        with pytest.raises(EpisodeNotActive, match="max_episode_steps=2"):
            sandbox.step({"code": "3"})
    finally:
        sandbox.close()
    for params, message in [({"timeout_s": 0}, "timeout_s must be in"), ({"memory_mb": "big"}, "memory_mb must be"),
                            ({"task": "matmull"}, "Did you mean 'matmul'"), ({"task": "sandbox"}, "not the sandbox"),
                            ({"task_params": {"size": 4}}, "needs a task")]:  # fmt: skip
        with pytest.raises((ValueError, ManifestError), match=message):
            SandboxEnv(**params)


@pytest.fixture(scope="module")
def url():
    from stratagem.server.app import create_app
    from tests.conftest import running

    with running(create_app("sandbox", {"timeout_s": 20, "memory_mb": 256})) as base:
        yield base


def test_http_sessions_are_isolated_and_run_concurrently(url):
    with httpx.Client(base_url=url, timeout=60) as http:
        a = http.post("/reset", json={"seed": 1}).headers[H]
        b = http.post("/reset", json={"seed": 2}).headers[H]

        def step(sid: str, code: str, **extra) -> httpx.Response:
            return http.post("/step", json={"action": {"code": code}, **extra}, headers={H: sid})

        step(a, "x = 'a'")
        step(b, "x = 'b'")
        assert step(a, "x").json()["observation"]["metadata"]["result"] == "'a'"
        blocked: dict[str, httpx.Response] = {}
        # A blocks for good (a lock acquired twice costs no CPU); B answers meanwhile.
        hang = threading.Thread(target=lambda: blocked.update(a=step(a, "import _thread\nl = _thread.allocate_lock()\n"
                                                                            "l.acquire()\nl.acquire()")))  # fmt: skip
        hang.start()
        assert step(b, "x").json()["observation"]["metadata"]["result"] == "'b'"
        assert hang.is_alive()
        while True:  # until A's step holds its session (then A's /state waits for it), so the close races nothing
            try:
                http.get("/state", headers={H: a}, timeout=0.5)
            except httpx.ReadTimeout:
                break
        assert http.delete("/session", headers={H: a}).json()["closed"] is True  # closing kills A's process
        hang.join(timeout=30)
        observation = blocked["a"].json()["observation"]
        assert blocked["a"].status_code == 200 and observation["metadata"]["state_lost"]
        assert observation["exit_code"] == 128 + 9
        # A client's own deadline caps the cell, leaving time to answer (no 504).
        capped = step(b, "while True:\n    pass", timeout_s=1.0)
        assert capped.status_code == 200 and capped.json()["observation"]["exit_code"] == 124
        assert "timed out after 0.8 s" in capped.json()["observation"]["stderr"]


@pytest.mark.parametrize(
    ("action", "needle"),
    [
        ({}, "action.code: Field required"),
        ({"code": 5}, "action.code: Input should be a valid string"),
        ({"code": ["print(1)"]}, "action.code: Input should be a valid string"),
        ({"code": "x" * (MAX_CODE_CHARS + 1)}, f"action.code: String should have at most {MAX_CODE_CHARS} characters"),
        ({"code": "1", "language": "python"}, "action.language: Extra inputs are not permitted"),
    ],
)
def test_bad_actions_are_422_with_what_was_wrong(url, action, needle):
    with httpx.Client(base_url=url, timeout=30) as http:
        sid = http.post("/reset", json={}).headers[H]
        response = http.post("/step", json={"action": action}, headers={H: sid})
        assert response.status_code == 422 and needle in response.json()["detail"]
        assert (
            http.post("/step", json={"action": {"code": "1 + 1"}}, headers={H: sid}).json()["metadata"]["result"] == "2"
        )
        http.delete("/session", headers={H: sid})


def test_websocket_session_beside_an_http_one(url):
    with connect(url.replace("http://", "ws://") + "/ws", open_timeout=10) as ws, httpx.Client(base_url=url) as http:

        def call(message: dict) -> dict:
            ws.send(json.dumps(message))
            return json.loads(ws.recv(timeout=30))

        sid = http.post("/reset", json={}).headers[H]
        http.post("/step", json={"action": {"code": "x = 'http'"}}, headers={H: sid})
        assert call({"type": "reset", "data": {"seed": 5}})["type"] == "observation"
        reply = call({"type": "step", "data": {"code": "x = 'ws'\nprint(x)\nx"}})
        assert reply["data"]["observation"]["stdout"] == "ws\n" and reply["data"]["metadata"]["result"] == "'ws'"
        error = call({"type": "step", "data": {"code": 5}})
        assert error["type"] == "error" and error["data"]["code"] == "VALIDATION_ERROR"
        assert "valid string" in error["data"]["message"]
        assert call({"type": "step", "data": {"code": "x"}})["data"]["observation"]["metadata"]["result"] == "'ws'"
        assert call({"type": "state"})["data"]["step_count"] == 2
        step = http.post("/step", json={"action": {"code": "x"}}, headers={H: sid}).json()
        assert step["observation"]["metadata"]["result"] == "'http'"
        http.delete("/session", headers={H: sid})


def test_the_wire_shape_is_openenvs_code_observation(url):
    """stdout, stderr and exit_code at the top, as OpenEnv's CodeObservation has them (extra keys forbidden); the
    rest in metadata, inside the observation and at the top level; a numeric reward on every step."""
    with httpx.Client(base_url=url, timeout=30) as http:
        reset = http.post("/reset", json={"seed": 3})
        sid = reset.headers[H]
        assert set(reset.json()["observation"]) == {"stdout", "stderr", "exit_code", "metadata"}
        body = http.post("/step", json={"action": {"code": "print('hi')\n6 * 7"}}, headers={H: sid}).json()
        observation = body["observation"]
        assert set(observation) == {"stdout", "stderr", "exit_code", "metadata"} and body["reward"] == 0.0
        assert (observation["stdout"], observation["exit_code"], observation["metadata"]["result"]) == ("hi\n", 0, "42")
        assert {k: body["metadata"][k] for k in observation["metadata"]} == observation["metadata"]
        assert http.get("/state", headers={H: sid}).json()["last_exit_code"] == 0
        failed = http.post("/step", json={"action": {"code": "1/0"}}, headers={H: sid}).json()
        assert failed["observation"]["exit_code"] == 1 and failed["reward"] == 0.0
        assert http.get("/state", headers={H: sid}).json()["last_exit_code"] == 1  # OpenEnv's CodeState field
        http.delete("/session", headers={H: sid})


def test_a_strategy_program_drives_the_sandbox_through_its_matmul_task():
    """The program returns a cell; the runner holds the environment (whose cells need their own process, which
    a program's sandbox may not start) and asks the program for one cell at a time: the honest program is
    played and scored with its cell's speedup, not refused as a cheat or a crash."""
    from pathlib import Path

    from stratagem.agents.rewards import outcomes
    from stratagem.agents.runner import Runner

    source = (Path(__file__).parents[1] / "examples" / "strategies" / "matmul_cell.py").read_text()
    params = {"task": "matmul", "max_episode_steps": 1, "task_params": {"size": 24, "trials": 1}}
    with Runner("sandbox", params, workers=1) as runner:
        assert runner.mode == "call"
        result = runner.evaluate([source], seeds=[0, 1])[0]
    assert result.error is None and outcomes(result) in (["loss", "loss"], ["win", "loss"], ["loss", "win"],
                                                          ["win", "win"])  # fmt: skip
    assert all(e.score > 0 for e in result.episodes), [e.score for e in result.episodes]  # a speedup (0: wrong)
