"""The Atari corpus: deterministic, every program passes the sandbox's checks, prompts name their game, and the
families ordered on Pong and Breakout (the training targets) in short episodes in the real sandbox."""

from __future__ import annotations

import statistics
from collections import Counter

from stratagem.agents.programs import load
from stratagem.agents.rewards import Rubric, outcomes
from stratagem.agents.runner import Limits, Runner
from stratagem.envs.spec import resolve
from stratagem.rl.corpus import atari, generate_programs, generate_samples, program_families

TASK = "atari"
LIMITS = Limits(move_s=1.0, episode_s=60, cpu_s=60)


def fenced(source: str) -> str:
    """A program as the model is trained to write it."""
    return "```python\n" + source + "```"


def game_of(sample) -> str:
    return sample.variant.split("/")[0]


def test_same_seed_same_corpus_and_another_seed_another():
    assert generate_programs(60, seed=3, task=TASK) == generate_programs(60, seed=3, task=TASK)
    assert generate_programs(60, seed=3, task=TASK) != generate_programs(60, seed=4, task=TASK)
    assert generate_samples(25, seed=3, task=TASK) == generate_samples(60, seed=3, task=TASK)[:25]
    assert generate_programs(0, seed=3, task=TASK) == []


def test_samples_name_their_game_pong_and_breakout_most():
    samples = generate_samples(1000, seed=2, task=TASK)
    assert {s.task for s in samples} == {TASK}
    names = {"pong": "Pong", "breakout": "Breakout", "freeway": "Freeway", "space_invaders": "SpaceInvaders",
             "ms_pacman": "MsPacman"}  # fmt: skip
    for s in samples:
        game = names[game_of(s)]
        assert set(s.params) <= {"game", "max_episode_steps", "target_score"}, s.params
        if s.env == "atari":  # the atari manifest plays Pong unless the prompt names another game
            assert s.params.get("game", "Pong") == game, (s.variant, s.params)
        else:
            assert (s.env, s.params.get("game")) in (("pong", None), ("breakout", None)) and s.env == game.lower()
    games = Counter(game_of(s) for s in samples)
    assert games["pong"] + games["breakout"] > 0.6 * len(samples) and min(games.values()) > 0.05 * len(samples)
    envs = Counter((s.env, s.params.get("game")) for s in samples if game_of(s) == "pong")
    assert envs[("pong", None)] > envs[("atari", None)] > 0 and envs[("atari", "Pong")] > 0, envs
    short = [s for s in samples if "max_episode_steps" in s.params]
    assert 0.1 * len(samples) < len(short) < 0.3 * len(samples)  # a share names the short training episodes
    assert {game_of(s) for s in short} == {"pong", "breakout"}
    freeway = next(s for s in samples if s.params == {"game": "Freeway"})
    assert "This run: game=Freeway." in freeway.prompt_text()
    assert "This run:" not in next(s for s in samples if s.env == "pong" and not s.params).prompt_text()


def test_families_are_weighted_and_all_appear_in_every_game():
    weights = program_families(TASK)
    assert set(weights) == {"bad", "weak", "medium", "good"}
    assert abs(sum(weights.values()) - 1.0) < 1e-9
    samples = generate_samples(1000, seed=0, task=TASK)
    counts = Counter(s.family for s in samples)
    for family, weight in weights.items():
        assert abs(counts[family] / 1000 - weight) < 0.05, counts
    assert {(game_of(s), s.family) for s in samples} == {(g, f) for g in atari.GAMES for f in weights}


def test_every_program_passes_the_sandbox_checks_and_is_short():
    samples = generate_samples(300, seed=7, task=TASK)
    strategies = {env: resolve(env).strategy for env in ("pong", "breakout", "atari")}
    for sample in samples:
        program = load(fenced(sample.source), strategies[sample.env])
        assert program.source == sample.source  # extracted whole: nothing trimmed, nothing added
        assert 'o = obs["objects"]' in sample.source or "o[" not in sample.source  # one dialect
    lines = [s.source.count("\n") for s in samples]
    assert max(lines) <= 45
    aware = [s.source.count("\n") for s in samples if s.family in ("medium", "good") and "track" in s.source]
    assert 8 <= statistics.median(aware) <= 35, sorted(aware)
    assert len({s.source for s in samples}) > 150  # varied, not a handful of programs repeated


def pick(game: str, per_family: int, seed: int = 0) -> dict[str, list[str]]:
    picked: dict[str, list[str]] = {family: [] for family in program_families(TASK)}
    for sample in generate_samples(600, seed=seed, task=TASK):
        if game_of(sample) == game and len(picked[sample.family]) < per_family:
            picked[sample.family].append(sample.source)
    assert all(len(sources) == per_family for sources in picked.values()), picked
    return picked


def play(env: str, params: dict, picked: dict[str, list[str]], seeds: list[int]) -> dict[str, list]:
    """(result, scored) pairs per family, every program on the same seeds."""
    completions = [fenced(source) for sources in picked.values() for source in sources]
    with Runner(env, params, workers=2, limits=LIMITS) as runner:
        results = runner.evaluate(completions, seeds=seeds)
        scored = Rubric().score_all(results, runner.spec.reward)
    assert all(set(outcomes(r)) <= {"win", "loss"} for r in results), [r.message for r in results if r.error]
    pairs, n = list(zip(results, scored, strict=True)), len(next(iter(picked.values())))
    return {family: pairs[n * i : n * i + n] for i, family in enumerate(picked)}


def test_pong_families_are_ordered_by_points_in_short_episodes():
    """bad < weak < medium and good in the points difference after 500 steps; not behind (target_score=0) is a
    win, which bad programs never get and good ones do."""
    by_family = play("pong", atari.SHORT["pong"] | {"max_episode_steps": 500}, pick("pong", 3), seeds=[0, 1])
    points = {f: statistics.mean(r.mean_score for r, _ in pairs) for f, pairs in by_family.items()}
    wins = {f: statistics.mean(r.win_rate for r, _ in pairs) for f, pairs in by_family.items()}
    assert points["bad"] < points["weak"] - 3 < points["medium"] - 3, points
    assert points["weak"] + 3 < points["good"] and points["good"] > -2, points
    assert wins["bad"] == 0 and wins["good"] > 0.3, wins


def test_breakout_families_are_ordered_by_score_and_reward():
    by_family = play("breakout", {"max_episode_steps": 1200}, pick("breakout", 2), seeds=[0, 1])
    score = {f: statistics.mean(r.mean_score for r, _ in pairs) for f, pairs in by_family.items()}
    reward = {f: statistics.mean(s.total for _, s in pairs) for f, pairs in by_family.items()}
    assert score["bad"] < score["weak"] < 20 < score["medium"] < score["good"] - 20, score
    assert reward["bad"] < reward["weak"] < reward["medium"] < reward["good"], reward
