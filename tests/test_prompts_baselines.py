"""Prompts from manifests; baseline programs pass the policy and the heuristic beats random."""

from __future__ import annotations

import random
import statistics

from stratagem.agents.baselines import HEURISTIC_2048, RANDOM_2048
from stratagem.agents.programs import build, check
from stratagem.agents.prompts import task_prompt
from stratagem.envs import InvalidAction, load_spec, resolve
from stratagem.envs.game2048 import Game2048Env


def test_2048_prompt_states_the_task():
    prompt = task_prompt(resolve("2048"))
    assert "def strategy(board)" in prompt
    assert "a list of 4 rows" in prompt and "'0', '1', '2', '3'" in prompt
    assert "math" in prompt and "```python" in prompt


def test_a_new_environment_gets_a_prompt_from_its_manifest(toy_manifest):
    prompt = task_prompt(load_spec(toy_manifest))
    assert "def strategy(observation)" in prompt and "Count to a target" in prompt


def test_the_prompt_names_the_runs_environment_parameters():
    """One manifest serves many games: the prompt must say which (and say nothing extra without parameters)."""
    atari = resolve("atari")
    assert "This run" not in task_prompt(atari)
    freeway = task_prompt(atari, {"game": "Freeway", "frameskip": 4})
    assert "This run: frameskip=4, game=Freeway." in freeway
    assert freeway != task_prompt(atari, {"game": "MsPacman"})


def play(source: str, seeds: range) -> list[int]:
    strategy = resolve("2048").strategy
    fn = build(check(source, strategy), strategy)
    scores = []
    for seed in seeds:
        random.seed(seed)
        env = Game2048Env()
        obs = env.reset(seed=seed)
        while not obs.done:
            try:
                obs = env.step({"action_id": int(fn([row[:] for row in obs.board]))})
            except InvalidAction:
                break  # an illegal move ends a baseline's game here, as it will in the runner
        scores.append(obs.score)
    return scores


def test_heuristic_beats_random_by_a_wide_margin():
    heuristic, rand = play(HEURISTIC_2048, range(3)), play(RANDOM_2048, range(3))
    assert statistics.mean(heuristic) > 5 * statistics.mean(rand)
    assert max(heuristic) >= 2000


def test_the_matmul_prompt_states_its_own_goal():
    prompt = task_prompt(resolve("matmul"))
    assert "def matmul(A, B)" in prompt and "as fast as possible in pure Python" in prompt
    assert "plays this game" not in prompt and "math, itertools, functools" in prompt
