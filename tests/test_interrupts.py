"""Interrupts and workers lost from outside, with real processes (issue 22, "Interrupts and run directories").

- Ctrl-C reaches the whole foreground process group: the command, the sandbox's zygote and its workers.
  The zygote and workers ignore it (the command decides); the command ends its pool and reaps every
  process before it exits, and nobody prints a traceback.
- ``Runner.evaluate`` interrupted raises ``Interrupted`` with the episodes that did finish;
  ``on_episode`` sees each episode as it finishes.
- A worker killed from outside (a ``kill``, the OOM killer, a signal to the group the command
  survives) is never blamed on the program: its episode is played again, from the same key; an
  episode lost again and again stops the run with ``WorkersKilled``, which says what happened.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stratagem.agents.job_modes import CallJob, PlayJob
from stratagem.agents.jobs import Job
from stratagem.agents.runner import Interrupted, Limits, Runner, WorkersKilled
from stratagem.sandbox.failures import PoolError
from stratagem.sandbox.pool import LOST
from stratagem.viz.recording import read_recording
from tests.conftest import processes, session_processes

ROOT = Path(__file__).resolve().parents[1]
LIMITS = Limits(move_s=5.0, episode_s=60, memory_mb=256, cpu_s=60)  # generous: a loaded machine times nothing out
SEEDS = list(range(6))
# The first move that changes the board (left, up, right, down): a quick top level, ~200 moves an episode.
CORNER = """def slide(line):
    tiles = [t for t in line if t]
    out, i = [], 0
    while i < len(tiles):
        if i + 1 < len(tiles) and tiles[i] == tiles[i + 1]:
            out.append(tiles[i] * 2)
            i += 2
        else:
            out.append(tiles[i])
            i += 1
    return out + [0] * (len(line) - len(out))


def moves(board, direction):
    n = len(board)
    lines = [[board[r][c] for r in range(n)] for c in range(n)] if direction in (0, 2) else [list(r) for r in board]
    if direction in (1, 2):
        lines = [line[::-1] for line in lines]
    return any(slide(line) != line for line in lines)


def strategy(board):
    for direction in (3, 0, 1, 2):
        if moves(board, direction):
            return str(direction)
    return "0"
"""
# The same moves, ~1 ms each: an episode lasts long enough to be cut short in its middle.
SLOW_CORNER = CORNER.replace("def strategy(board):\n", "def strategy(board):\n    sum(range(50000))\n", 1)


# --- processes, as /proc shows them ------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    return [child for child, (parent, state, _) in processes().items() if parent == pid and state != "Z"]


def _workers(command: int) -> list[int]:
    """The sandbox's workers under a command: children of the zygote proper, the child of the zygote's outer process."""
    return [worker for outer in _children(command) for zygote in _children(outer) for worker in _children(zygote)]


def _cpu_s(pid: int) -> float:
    """The CPU a process has used (user and system), from /proc; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_for(condition, what: str, limit_s: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)
    return value


def _play(strategy: Path, episodes: int, *extra: str, ignore_sigint: bool = False) -> subprocess.Popen[str]:
    def preexec() -> None:
        if ignore_sigint:  # as a shell starts a background job: Python then keeps SIGINT ignored
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.Popen(
        [sys.executable, "-m", "stratagem.cli", "play", "2048", "--strategy", str(strategy), "--episodes",
         str(episodes), "--workers", "2", *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=preexec,
    )  # fmt: skip


@pytest.fixture
def strategy(tmp_path: Path) -> Path:
    path = tmp_path / "slow_corner.py"
    path.write_text(SLOW_CORNER)
    return path


# --- (a) Ctrl-C and SIGTERM end the command with nothing left behind and no traceback -----------------
@pytest.mark.timeout(120)
@pytest.mark.parametrize("when", ["starting", "playing"])
def test_ctrl_c_to_the_process_group_leaves_no_process_and_no_traceback(strategy, when):
    """The terminal's Ctrl-C: SIGINT to every process of the foreground group, while the sandbox starts
    (its zygote importing) or while workers play. Before, the zygote died with a KeyboardInterrupt
    traceback and the command exited before its workers did."""
    play = _play(strategy, 10_000)
    try:
        if when == "starting":
            _wait_for(lambda: _children(play.pid), "the zygote started")
        else:
            _wait_for(lambda: any(_cpu_s(pid) > 0.2 for pid in _workers(play.pid)), "a worker playing")
        os.killpg(play.pid, signal.SIGINT)
        _, err = play.communicate(timeout=60)
    finally:
        if play.poll() is None:
            os.killpg(play.pid, signal.SIGKILL)
            play.wait()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert play.returncode != 0  # what it prints and returns is the command's; see tests/test_cli*.py
    assert session_processes(play.pid) == {}, "a process of the command outlived it"


@pytest.mark.timeout(120)
def test_sigterm_to_the_command_alone_ends_every_process_it_started(strategy):
    play = _play(strategy, 10_000)
    try:
        _wait_for(lambda: any(_cpu_s(pid) > 0.2 for pid in _workers(play.pid)), "a worker playing")
        play.terminate()
        _, err = play.communicate(timeout=60)
    finally:
        if play.poll() is None:
            os.killpg(play.pid, signal.SIGKILL)
            play.wait()
    assert "Traceback" not in err, err
    assert session_processes(play.pid) == {}, "a process of the command outlived it"


# --- (b) a command that survives the signal that hits its workers ------------------------------------
@pytest.mark.timeout(180)
def test_workers_killed_under_a_command_that_ignores_sigint_cost_the_program_nothing(strategy):
    """A script started the command in the background: it ignores SIGINT. A SIGINT sent to its group, then
    SIGKILL to its workers (a `kill`, the OOM killer), twice: every episode is still the program's own
    game, played to its end. Before, each killed worker's episodes were scored as the program's errors."""
    play = _play(strategy, 30, "--json", "--move-timeout", "5", ignore_sigint=True)
    killed = 0
    try:
        for _ in range(2):
            _wait_for(lambda: play.poll() is not None or any(_cpu_s(pid) > 0.5 for pid in _workers(play.pid)),
                      "a worker well into its episodes")  # fmt: skip
            if play.poll() is not None:
                break
            workers = _workers(play.pid)
            os.killpg(play.pid, signal.SIGINT)  # ignored by all: the command decides, and it ignores it
            for pid in _workers(play.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
            _wait_for(lambda workers=workers: not set(workers) & set(_workers(play.pid)), "the workers gone")
        out, err = play.communicate(timeout=150)
    finally:
        if play.poll() is None:
            os.killpg(play.pid, signal.SIGKILL)
            play.wait()
    assert killed >= 2, "no worker was killed: the test proved nothing"
    assert play.returncode == 0, err
    summary = json.loads(out)
    assert summary["episodes"] == 30 and summary["errors"] == {}, summary["first_error"]
    assert "Traceback" not in err


# --- (c) the library: lost workers, replays, partial results ----------------------------------------
def _episode(e):  # type: ignore[no-untyped-def]
    return (e.seed, e.score, e.moves, e.won, e.max_tile, e.error)


def _signature(results):  # type: ignore[no-untyped-def]
    return [[_episode(e) for e in r.episodes] for r in results]


def _kill_in_episodes(monkeypatch, after_s: float, times: int | None = 1) -> list[int]:  # type: ignore[no-untyped-def]
    """SIGKILL, from outside the pool, the worker of each job whose program has started playing (the first
    ``times`` of them; None: every one), ``after_s`` into its episode; returns the pids killed."""
    killed: list[int] = []

    def kill(pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # the run ended first
            pass

    def kill_later(job) -> None:  # type: ignore[no-untyped-def]
        pid = job.worker.host_pid
        if pid is not None and (times is None or len(killed) < times):
            killed.append(pid)
            threading.Timer(after_s, kill, (pid,)).start()

    for kind in (PlayJob, CallJob):
        original = kind.on_built
        monkeypatch.setattr(kind, "on_built", lambda job, original=original: (kill_later(job), original(job))[1])
    return killed


def _jobs_started(monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    started: list[int] = []
    original = Job.start
    monkeypatch.setattr(Job, "start", lambda job, worker: (started.append(job.index), original(job, worker))[1])
    return started


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["play", "call"])
def test_a_worker_killed_mid_episode_gives_the_results_of_an_undisturbed_run(mode, tmp_path, monkeypatch):
    """The worker's episode is played again from its key: the same game, the same result, no error. In call
    mode (the parent holds the game) the cut-short recording is written anew."""
    with Runner("2048", workers=2, limits=LIMITS) as runner:
        runner.mode = mode
        clean = runner.evaluate([SLOW_CORNER], SEEDS)
        killed, started = _kill_in_episodes(monkeypatch, 0.1), _jobs_started(monkeypatch)
        disturbed = runner.evaluate([SLOW_CORNER], SEEDS, record=tmp_path)
    assert len(killed) == 1 and len(started) == 3, "the killed worker's job was not played again"
    assert _signature(disturbed) == _signature(clean)
    assert all(e.error is None for e in disturbed[0].episodes)
    for episode in disturbed[0].episodes:
        recording = read_recording(tmp_path / f"{disturbed[0].sha}-seed{episode.seed}.jsonl.gz")
        assert recording.end["score"] == episode.score and recording.end["moves"] == episode.moves


@pytest.mark.timeout(120)
def test_a_zygote_terminated_from_outside_mid_run_blames_nobody():
    with Runner("2048", workers=2, limits=LIMITS) as runner:
        clean = runner.evaluate([SLOW_CORNER], SEEDS)
        zygote = runner.pool.zygote_pid

        def kill_once(episode):  # type: ignore[no-untyped-def]  # mid-run for sure: after the first episode
            if runner.pool.zygote_pid == zygote and not killed:
                killed.append(os.kill(zygote, signal.SIGTERM))

        killed: list[None] = []
        disturbed = runner.evaluate([SLOW_CORNER], SEEDS, on_episode=kill_once)
        assert killed and runner.pool.zygote_pid != zygote
        assert runner.pool.zygote_deaths == ["killed by signal 15, SIGTERM: a `kill` or a service manager stopping it"]
    assert _signature(disturbed) == _signature(clean)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("when", ["at once", "mid-episode"])
def test_workers_killed_again_and_again_stop_the_run_with_a_clear_error(when, monkeypatch):
    """Every worker is killed from outside as soon as it is handed out (the pool cannot start workers), or
    once its episode is under way (the same episode is lost three times): the run stops saying why, instead
    of scoring the program or looping for ever."""
    with Runner("2048", workers=1, limits=LIMITS) as runner:
        if when == "at once":
            pool, original = runner.pool, runner.pool.acquire

            def acquire():  # type: ignore[no-untyped-def]
                worker = original()
                os.kill(worker.host_pid, signal.SIGKILL)
                return worker

            pool.acquire = acquire  # type: ignore[method-assign]
        else:
            _kill_in_episodes(monkeypatch, 0.1, times=None)
        with pytest.raises(WorkersKilled) as stopped:
            runner.evaluate([SLOW_CORNER], [0, 1])
    message = str(stopped.value)
    expected = "3 in a row died before they started an episode" if when == "at once" else "seed 0 was lost 3 times"
    assert isinstance(stopped.value, PoolError) and expected in message
    assert "killed from outside (killed by signal 9, SIGKILL: the OOM killer or a `kill -9`)" in message


@pytest.mark.timeout(60)
def test_the_pool_tells_its_own_kill_and_the_programs_limits_from_a_kill_from_outside():
    with Runner("2048", workers=1, limits=LIMITS) as runner:
        pool = runner.pool
        outside = pool.acquire()
        os.kill(outside.host_pid, signal.SIGKILL)
        death = pool.death(outside)
        assert death.code == -signal.SIGKILL and death.outside and "SIGKILL" in death.outside
        ours = pool.acquire()
        pool.kill(ours)
        assert pool.death(ours).code == -signal.SIGKILL and pool.death(ours).outside is None
        for signum in (signal.SIGXCPU, signal.SIGSYS, signal.SIGSEGV):  # the sandbox's verdicts, a crash
            worker = pool.acquire()
            os.kill(worker.host_pid, signum)
            assert pool.death(worker).code == -signum and pool.death(worker).outside is None
        assert pool._outside(-signal.SIGKILL, LIMITS.cpu_s + 1) is None  # RLIMIT_CPU's hard limit: the budget
        assert pool._outside(-signal.SIGKILL, 0.5) is not None
        for worker in (outside, ours):
            pool.release(worker)


@pytest.mark.timeout(120)
def test_an_interrupted_evaluate_keeps_the_episodes_that_finished_and_leaves_no_process():
    """A KeyboardInterrupt (here raised by the progress callback after three episodes, as Ctrl-C would land):
    ``Interrupted`` holds every episode that finished, each the same as in a whole run; the pool's
    processes are gone, and the runner starts a fresh pool when used again."""
    seen = []

    def on_episode(episode):  # type: ignore[no-untyped-def]
        seen.append(episode)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with Runner("2048", workers=2, limits=LIMITS) as runner:
        whole = runner.evaluate([SLOW_CORNER, "# another\n" + SLOW_CORNER], SEEDS[:4])
        pids = [runner.pool.zygote_pid, *_children(runner.pool.zygote_pid)]
        with pytest.raises(Interrupted) as interrupted:
            runner.evaluate([SLOW_CORNER, "# another\n" + SLOW_CORNER], SEEDS[:4], on_episode=on_episode)
        exc = interrupted.value
        assert isinstance(exc, KeyboardInterrupt) and type(exc.interrupt) is KeyboardInterrupt
        assert runner._pool is None and not any(os.path.exists(f"/proc/{pid}") for pid in pids)
        assert exc.seeds == SEEDS[:4] and len(exc.results) == 2 and 3 <= exc.episodes_done < 8
        expected = {(r, e.seed): _episode(e) for r, result in enumerate(whole) for e in result.episodes}
        for r, result in enumerate(exc.results):
            assert [e.seed for e in result.episodes] == sorted(e.seed for e in result.episodes)
            assert all(_episode(e) == expected[(r, e.seed)] for e in result.episodes)
        assert {id(e) for e in seen} <= {id(e) for r in exc.results for e in r.episodes}
        [again] = runner.evaluate([SLOW_CORNER], SEEDS[:2])  # a fresh pool
        assert [_episode(e) for e in again.episodes] == [expected[(0, seed)] for seed in SEEDS[:2]]


@pytest.mark.timeout(120)
def test_a_real_sigint_mid_evaluate_raises_interrupted_with_the_finished_episodes():
    with Runner("2048", workers=2, limits=LIMITS) as runner:
        runner.evaluate([SLOW_CORNER], [0])  # the pool is up
        zygote = runner.pool.zygote_pid
        seen = []

        def on_episode(episode):  # type: ignore[no-untyped-def]
            seen.append(episode)
            if len(seen) == 2:
                os.kill(os.getpid(), signal.SIGINT)  # the signal itself, handled by Python's own handler

        with pytest.raises(Interrupted) as interrupted:
            runner.evaluate([SLOW_CORNER], list(range(200)), on_episode=on_episode)
    assert 2 <= interrupted.value.episodes_done < 200 and not os.path.exists(f"/proc/{zygote}")
    assert all(e.error is None for e in interrupted.value.results[0].episodes)


@pytest.mark.timeout(120)
def test_on_episode_sees_every_episode_once_even_when_a_worker_is_lost(monkeypatch):
    seen = []
    with Runner("2048", workers=2, limits=LIMITS) as runner:
        _kill_in_episodes(monkeypatch, 0.1)
        results = runner.evaluate([SLOW_CORNER, "def strategy(board):\n    return 7\n"], SEEDS,
                                  on_episode=seen.append)  # fmt: skip
    assert sorted(id(e) for e in seen) == sorted(id(e) for r in results for e in r.episodes)
    assert len(seen) == 2 * len(SEEDS)


def test_exit_code_still_answers_for_the_code_cell_sandbox():
    """``exit_code`` (the REPL's view) is ``death``'s code: LOST once the zygote is gone."""
    with Runner("2048", workers=1, limits=LIMITS) as runner:
        pool = runner.pool
        worker = pool.acquire()
        os.kill(pool.zygote_pid, signal.SIGKILL)
        assert pool.exit_code(worker, timeout_s=5) == LOST
        death = pool.death(worker, timeout_s=5)
        assert death.code == LOST and death.outside and "zygote died" in death.outside
        pool.release(worker)


def test_a_worker_cannot_fake_a_kill_from_outside():
    """Past the Python-level checks (which are no boundary), a program could SIGKILL or SIGTERM itself to look
    killed from outside: its episode played again, and at last the run stopped. The kernel must refuse it:
    a signal to itself other than abort()'s is a forbidden system call (SIGSYS, a cheat)."""
    from tests.sandbox_raw import run_raw

    for code in ("import signal\nsignal.raise_signal(signal.SIGKILL)\n", "import os\nos.kill(os.getpid(), 15)\n"):
        assert run_raw(code, timeout_s=10).exit_code == -signal.SIGSYS
    assert run_raw("import os\nos.abort()\n", timeout_s=10).exit_code == -signal.SIGABRT


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped interrupt, as expected
def test_a_ctrl_c_swallowed_by_a_finaliser_is_raised_at_the_next_safe_point():
    """Python drops a KeyboardInterrupt raised inside a finaliser ("Exception ignored in ..."); the trainer's
    loop runs under ``sticky_interrupts`` and checks ``raise_if_dropped`` after sampling, rewards and each step."""
    from stratagem.agents import interrupts

    class Swallows:
        def __del__(self):
            interrupts.sticky(signal.SIGINT, None)  # the handler, as if the signal landed in this finaliser

    with interrupts.sticky_interrupts():
        assert signal.getsignal(signal.SIGINT) is interrupts.sticky
        Swallows()  # collected at once: the KeyboardInterrupt it raises is printed and dropped
        with pytest.raises(KeyboardInterrupt):
            interrupts.raise_if_dropped()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    interrupts.raise_if_dropped()  # nothing noted outside
