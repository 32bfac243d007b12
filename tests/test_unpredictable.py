"""A program cannot predict its environment: the attacker's test, with a fixed false-alarm rate.

The attacker knows our source, the seed schedule (small consecutive seeds) and the default seed;
it does not know the secret (a sandboxed program cannot read it: see test_hostile.py). For every
random event of many episodes (a 2048 spawn, an OpenSpiel chance outcome or "random" opponent
move, a matmul shape and sign), it predicts one outcome with each model it can build:

- the generator we used to use, ``random.Random(seed)`` (a Mersenne Twister anyone can rerun);
- our own source run under a guessed secret (all zeros, the value of an unset secret).

Under the null hypothesis (no knowledge) a prediction hits with exactly the probability the
environment gives the predicted outcome, whatever the predictor does, so hits are a sum of
independent Bernoullis with known means: ``z = (hits - sum p) / sqrt(sum p(1-p))``. An alarm is
``z > 3.09``, a false-alarm rate of 0.1% per test. The same statistic with the true key must raise
the alarm, so the test is shown to catch a predictable environment.

The environments are white-box here (their OpenSpiel state's history): the test is about the
generator, not about what a program may see.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from stratagem.envs import matmul
from stratagem.envs.game2048 import SPAWNS, Game2048Env
from stratagem.envs.matmul import MATRICES, MatmulEnv, reference_matmul
from stratagem.envs.openspiel import CHANCE, OPPONENT, OpenSpielEnv, sample_chance
from stratagem.envs.rng import KEY_BYTES, EpisodeKey, episode_key, episode_rng
from stratagem.sandbox.keys import machine_secret

Z_ALARM = 3.09  # one-sided: P(Z > 3.09) = 0.001
GUESSED_SECRET = bytes(KEY_BYTES)
SEEDS = range(40)  # the schedule's small, consecutive seeds, from the default 0


class Tally:
    """Hits and the null hypothesis's hit probabilities, for one model."""

    def __init__(self) -> None:
        self.hits, self.means = 0, []

    def add(self, hit: bool, p: float) -> None:
        self.hits += hit
        self.means.append(p)

    @property
    def z(self) -> float:
        mean, variance = sum(self.means), sum(p * (1 - p) for p in self.means)
        return (self.hits - mean) / math.sqrt(variance)


# A model: for one seed, a function from the purpose (the stream's name) to the attacker's generator.
Model = Callable[[int], Callable[[str], random.Random]]


def mersenne(seed: int) -> Callable[[str], random.Random]:
    """The generators the environments used before keys: any program could rerun them."""
    return lambda purpose: random.Random(f"opponent-{seed}" if purpose == OPPONENT else seed)


def keyed(secret: bytes) -> Model:
    return lambda seed: lambda purpose: episode_rng(episode_key(seed, secret), purpose)


MODELS: dict[str, Model] = {"old Mersenne Twister": mersenne, "our source, guessed secret": keyed(GUESSED_SECRET)}


def chance_events(env: Any, history: list[int], model: Callable[[str], random.Random], chance: str,
                  agent: int | None) -> Iterator[tuple[bool, float]]:  # fmt: skip
    """(hit, null probability) of every chance outcome and opponent move in ``history``, predicted by ``model``."""
    chance_rng, opponent_rng = model(chance), model(OPPONENT)
    state = env.game.new_initial_state()
    for action in history:
        if state.is_chance_node():
            guess = sample_chance(state, chance_rng)
            yield guess == action, dict(state.chance_outcomes())[guess]
        elif agent is not None and state.current_player() != agent:
            legal = state.legal_actions()
            yield opponent_rng.choice(legal) == action, 1 / len(legal)
        state.apply_action(action)


def play_2048(seed: int) -> list[int]:
    """One game by a fixed policy (the first legal of a seeded cycle); the OpenSpiel history."""
    env, policy = Game2048Env(), random.Random(1000 + seed)
    obs = env.reset(seed=seed)
    while not obs.done and env.state.step_count < 300:
        obs = env.step({"action_id": policy.choice(obs.legal_actions)})
    return env._game_state.history()


def play_openspiel(name: str, seed: int) -> tuple[OpenSpielEnv, list[int]]:
    env, policy = OpenSpielEnv(name), random.Random(2000 + seed)
    obs = env.reset(seed=seed)
    while not obs.done:
        obs = env.step({"action_id": policy.choice(obs.legal_actions)})
    return env, env._game_state.history()


def tallies(events: Callable[[Model, int], Iterator[tuple[bool, float]]], seeds: Any = SEEDS) -> dict[str, Tally]:
    models = {**MODELS, "the true key (control)": keyed(machine_secret())}
    result = {name: Tally() for name in models}
    for seed in seeds:
        for name, model in models.items():
            for hit, p in events(model, seed):
                result[name].add(hit, p)
    return result


def assert_unpredictable(result: dict[str, Tally]) -> None:
    control = result.pop("the true key (control)")
    assert control.z > Z_ALARM, "the test cannot tell a predictable stream from chance"
    for name, tally in result.items():
        assert len(tally.means) >= 500, (name, len(tally.means))
        assert tally.z <= Z_ALARM, f"{name}: {tally.hits} hits of {len(tally.means)}, z = {tally.z:.2f}"


@pytest.fixture(scope="module")
def histories_2048() -> dict[int, list[int]]:
    return {seed: play_2048(seed) for seed in SEEDS}


def test_2048_spawns_cannot_be_predicted(histories_2048):
    env = Game2048Env()
    assert_unpredictable(tallies(lambda model, seed: chance_events(env, histories_2048[seed], model(seed),
                                                                   SPAWNS, agent=None)))  # fmt: skip


@pytest.mark.parametrize("game", ["tic_tac_toe", "kuhn_poker"])
def test_openspiel_chance_and_random_opponent_cannot_be_predicted(game):
    played = {seed: play_openspiel(game, seed) for seed in SEEDS}
    while sum(len(history) for _, history in played.values()) < 1200:  # short games: more of them
        played[len(played)] = play_openspiel(game, len(played))

    def events(model: Model, seed: int) -> Iterator[tuple[bool, float]]:
        env, history = played[seed]
        return chance_events(env, history, model(seed), CHANCE, agent=env.player)

    assert_unpredictable(tallies(events, seeds=list(played)))


def test_matmul_inputs_cannot_be_predicted(monkeypatch):
    """Each trial's shape (n) and the sign of A's first entry, predicted as MatmulEnv._draw would draw them."""
    monkeypatch.setattr(matmul, "thrash_caches", lambda: None)  # the baseline's timing is not under test
    size = 16
    low = size // 2

    def events(model: Model, seed: int) -> Iterator[tuple[bool, float]]:
        env = MatmulEnv(size=size, trials=10)
        obs, rng = env.reset(seed=seed), model(seed)(MATRICES)
        while not obs.done:
            n, k, m = rng.randint(low, size), rng.randint(low, size), rng.randint(low, size)
            first = rng.uniform(-1.0, 1.0)
            for _ in range(n * k + k * m - 1):  # the rest of A and B, as _draw draws them
                rng.uniform(-1.0, 1.0)
            yield n == len(obs.A), 1 / (size - low + 1)
            yield (first > 0) == (obs.A[0][0] > 0), 0.5
            obs = env.step({"C": reference_matmul(obs.A, obs.B), "elapsed_s": 1.0})

    assert_unpredictable(tallies(events))


def test_the_same_seed_and_secret_give_the_same_episode_and_another_secret_another():
    a, b = Game2048Env(), Game2048Env()
    boards = [a.reset(seed=7).board, b.reset(seed=7).board]
    for action in (0, 1, 2, 3, 0, 1):
        boards += [a.step({"action_id": action}).board, b.step({"action_id": action}).board]
    assert boards[0::2] == boards[1::2]
    mine = [episode_key(seed, b"a" * KEY_BYTES) for seed in range(200)]
    theirs = [episode_key(seed, b"b" * KEY_BYTES) for seed in range(200)]
    assert len(set(mine) | set(theirs)) == 400 and all(isinstance(k, EpisodeKey) for k in mine)
    key = episode_key(7)
    assert a.reset(seed=key).board == a.reset(seed=7).board  # a key stands for its seed
    assert "7" not in repr(key) and str(int(key))[:8] not in repr(key)  # and never prints itself


def test_a_worker_is_sent_keys_never_seeds(monkeypatch):
    """What crosses into the sandbox: the program, its own random's seeds and (play mode) the episodes' keys."""
    from stratagem.agents.jobs import Job
    from stratagem.agents.runner import Runner

    sent: list[dict] = []
    original = Job.send
    monkeypatch.setattr(Job, "send", lambda self, message: sent.append(message) or original(self, message))
    seeds = [123456, 654321]
    with Runner("2048", workers=1) as runner:
        runner.evaluate(["def strategy(board):\n    return '0123'[sum(map(sum, board)) % 4]\n"], seeds=seeds)
        keys = [runner.episode_key(seed).key.hex() for seed in seeds]
    [job] = [m for m in sent if "source" in m]
    assert set(job) == {"mode", "source", "sha", "program_seeds", "keys"} and job["keys"] == keys
    assert not any(str(seed) in str(job) for seed in seeds)
