"""The sandbox as a service: the zygote is supervised, missing layers are refused, what the program's
own randomness is seeded with, and ``stratagem doctor``."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest

from stratagem.agents.baselines import HEURISTIC_2048
from stratagem.agents.rewards import outcomes
from stratagem.agents.runner import Limits, Runner, SandboxUnavailable
from stratagem.cli import main
from stratagem.envs.sandbox import SandboxEnv
from stratagem.sandbox.confine import LAYERS
from stratagem.sandbox.keys import derive_seed, machine_secret
from stratagem.sandbox.repl import SandboxStartError

LIMITS = Limits(move_s=2.0, episode_s=30, memory_mb=256, cpu_s=60)
# Slow enough (~0.3 s an episode) that a zygote killed mid-batch takes running workers with it.
SLOW_2048 = HEURISTIC_2048.replace("def strategy(board):\n", "def strategy(board):\n    sum(range(2000))\n", 1)


def test_a_killed_zygote_costs_no_program_its_result():
    """Killing the zygote (as an OOM killer or a stray `kill` would) kills every worker in its pid
    namespace; the runner starts a new zygote and plays the lost work again, so the results are those
    of an undisturbed run and no program is blamed."""
    programs = [f"# variant {i}\n{SLOW_2048}" for i in range(4)]
    seeds = [0, 1, 2]
    with Runner("2048", workers=2, limits=LIMITS) as runner:
        clean = runner.evaluate(programs, seeds)
        first = runner.pool.zygote_pid
        killer = threading.Timer(0.5, lambda: os.kill(first, signal.SIGKILL))
        killer.start()
        disturbed = runner.evaluate(programs, seeds)
        killer.join()
        assert runner.pool.zygote_pid not in (None, first)  # a new zygote took over
    assert [[(e.seed, e.score, e.moves, e.error) for e in r.episodes] for r in disturbed] == [
        [(e.seed, e.score, e.moves, e.error) for e in r.episodes] for r in clean
    ]
    assert all(outcome == "loss" or outcome == "win" for r in disturbed for outcome in outcomes(r))


def test_a_missing_layer_is_refused_unless_weaker_is_allowed(monkeypatch):
    monkeypatch.setenv("STRATAGEM_SANDBOX_DISABLE", "landlock")
    with Runner("2048", workers=1, limits=LIMITS) as runner, pytest.raises(SandboxUnavailable) as refused:
        runner.evaluate([HEURISTIC_2048], [0])
    message = str(refused.value)
    assert "landlock: disabled by STRATAGEM_SANDBOX_DISABLE" in message and "--allow-weaker-sandbox" in message
    with Runner("2048", workers=1, limits=LIMITS, allow_weaker_sandbox=True) as weaker:
        [result] = weaker.evaluate([HEURISTIC_2048], [0])
        assert outcomes(result) in (["loss"], ["win"])
        assert weaker.sandbox["missing"] == {"landlock": "disabled by STRATAGEM_SANDBOX_DISABLE"}
        assert set(weaker.sandbox["applied"]) == set(LAYERS) - {"landlock"} and weaker.sandbox["allow_weaker"]
    sandbox = SandboxEnv(timeout_s=5, memory_mb=256, cpu_s=30)
    try:
        sandbox.reset(seed=0)
        with pytest.raises(SandboxStartError, match="landlock"):
            sandbox.step({"code": "1"})
    finally:
        sandbox.close()


def test_every_layer_is_in_force_on_this_machine():
    """CI runs on a kernel with every layer: the tests exercise the real ones, never a weaker fallback."""
    with Runner("2048", workers=1, limits=LIMITS) as runner:
        assert runner.sandbox["missing"] == {} and set(runner.sandbox["applied"]) == set(LAYERS)


def test_the_programs_random_is_reproducible_and_not_the_games():
    """The game draws its tiles from ``random.Random(seed)``; the program's own ``random`` is seeded from
    a keyed hash of the seed (``sandbox/keys.py``), so knowing the seed's generator predicts nothing."""
    program = "import random\n\ndef strategy(board):\n    return str(int(random.random() * 10**6) % 4)\n"
    spy = "import random\n\ndef strategy(board):\n    raise ValueError(repr(random.random()))\n"
    seeds = list(range(20))
    with Runner("2048", workers=2, limits=LIMITS) as runner:
        first = runner.evaluate([program, spy], seeds)
        again = runner.evaluate([program, spy], seeds)
    assert [(e.score, e.moves) for e in first[0].episodes] == [(e.score, e.moves) for e in again[0].episodes]
    drawn = [float(e.message.split(": ")[1].strip("'")) for e in first[1].episodes]
    secret = machine_secret()
    assert drawn == [random.Random(derive_seed(secret, "program-random", seed)).random() for seed in seeds]
    assert not any(value == random.Random(seed).random() for value, seed in zip(drawn, seeds, strict=True))


def test_stratagem_doctor_reports_every_layer(capsys, monkeypatch):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for layer in LAYERS:
        assert f"{layer:<11} on" in out
    assert "a confined worker sees: pid 2" in out and "open('/etc/passwd'): EACCES" in out
    monkeypatch.setenv("STRATAGEM_SANDBOX_DISABLE", "seccomp")
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "seccomp     MISSING  disabled by STRATAGEM_SANDBOX_DISABLE" in out and "--allow-weaker-sandbox" in out


def test_the_doctor_reports_the_first_worker_however_late_it_is_handed_out(capsys, monkeypatch):
    """On a busy machine the pool hands out its first worker late; the doctor's worker waits to be asked, so it
    is still that worker (pid 2) that answers, not a later spare (it once said pid 3 under a parallel suite)."""
    from stratagem.sandbox.pool import WorkerPool

    acquire = WorkerPool.acquire

    def late(self: WorkerPool):
        time.sleep(1.0)  # the first worker is forked and ready long before this
        return acquire(self)

    monkeypatch.setattr(WorkerPool, "acquire", late)
    assert main(["doctor"]) == 0
    assert "a confined worker sees: pid 2," in capsys.readouterr().out


def test_play_refuses_a_weaker_sandbox_and_records_it_when_allowed(capsys, monkeypatch, tmp_path):
    import json

    strategy = tmp_path / "s.py"
    strategy.write_text(HEURISTIC_2048)
    monkeypatch.setenv("STRATAGEM_SANDBOX_DISABLE", "namespaces")
    assert main(["play", "2048", "--strategy", str(strategy), "--episodes", "1"]) == 2
    err = capsys.readouterr().err
    assert "stratagem play: error: the sandbox cannot run untrusted code safely" in err and "namespaces" in err
    assert main(["play", "2048", "--strategy", str(strategy), "--episodes", "1", "--json",
                 "--allow-weaker-sandbox"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert summary["sandbox"]["missing"]["namespaces"] == "disabled by STRATAGEM_SANDBOX_DISABLE"
    assert summary["episodes"] == 1 and summary["sandbox"]["allow_weaker"] is True


@pytest.mark.timeout(60)
def test_a_worker_stopped_from_outside_is_timed_out_by_the_parents_clock():
    """SIGSTOP freezes the worker between frames: the parent's own clock notices, not the worker's."""
    slow = HEURISTIC_2048.replace("def strategy(board):\n", "def strategy(board):\n    sum(range(20000))\n", 1)
    with Runner("2048", workers=1, limits=Limits(move_s=0.5, episode_s=30, memory_mb=256, cpu_s=60)) as runner:
        pool = runner.pool
        original = pool.acquire

        def acquire_and_freeze():
            worker = original()
            threading.Timer(0.3, lambda: worker.signal(signal.SIGSTOP)).start()
            return worker

        pool.acquire = acquire_and_freeze  # type: ignore[method-assign]
        [result] = runner.evaluate([slow], [0])  # a parent that waited on the frozen worker would hit the timeout
    assert outcomes(result) == ["timeout"] and "took over 0.5 s" in result.episodes[0].message


def test_serve_sandbox_refuses_a_weaker_sandbox_before_it_listens(capsys, monkeypatch):
    from tests.conftest import free_port

    monkeypatch.setenv("STRATAGEM_SANDBOX_DISABLE", "seccomp")
    assert main(["serve", "sandbox", "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "stratagem serve: error: the sandbox cannot run untrusted code safely" in err and "seccomp" in err
    sandbox = SandboxEnv(timeout_s=5, memory_mb=256, cpu_s=30, allow_weaker_sandbox=True)  # what the flag passes on
    try:
        sandbox.reset(seed=0)
        assert sandbox.step({"code": "6 * 7"}).result == "42"
    finally:
        sandbox.close()
