"""The SFT corpus: deterministic, every program passes the sandbox's checks, families ordered as designed."""

from __future__ import annotations

import statistics

from stratagem.agents.programs import load
from stratagem.agents.rewards import Rubric
from stratagem.agents.runner import Limits, Runner
from stratagem.envs.spec import resolve
from stratagem.rl.corpus import generate_programs, generate_samples, program_families


def fenced(source: str) -> str:
    """A program as the model is trained to write it."""
    return "```python\n" + source + "```"


def test_same_seed_same_corpus_and_another_seed_another():
    assert generate_programs(50, seed=3) == generate_programs(50, seed=3)
    assert generate_programs(50, seed=3) != generate_programs(50, seed=4)
    assert generate_programs(20, seed=3) == generate_programs(50, seed=3)[:20]  # a prefix: n only cuts the stream
    assert generate_programs(0, seed=3) == []


def test_samples_are_the_programs_with_their_families():
    samples = generate_samples(40, seed=1)
    assert [s.source for s in samples] == generate_programs(40, seed=1)
    assert {s.family for s in samples} <= set(program_families())


def test_families_are_weighted_and_all_appear():
    weights = program_families()
    assert set(weights) == {"bad", "weak_legal", "fixed_order", "greedy", "lines"}
    assert abs(sum(weights.values()) - 1.0) < 1e-9
    counts = {family: 0 for family in weights}
    for sample in generate_samples(1000, seed=0):
        counts[sample.family] += 1
    for family, weight in weights.items():
        assert abs(counts[family] / 1000 - weight) < 0.05, counts


def test_every_program_passes_the_sandbox_checks_and_is_short():
    strategy = resolve("2048").strategy
    programs = generate_programs(300, seed=7)
    for source in programs:
        program = load(fenced(source), strategy)
        assert program.source == source  # extracted whole: nothing trimmed, nothing added
    lines = [source.count("\n") for source in programs]
    assert max(lines) <= 50 and 8 <= statistics.median(lines) <= 32


def test_families_are_ordered_in_the_real_sandbox():
    """bad < weak_legal < greedy in mean reward on the same games (4 programs each, 2 seeds)."""
    picked: dict[str, list[str]] = {"bad": [], "weak_legal": [], "greedy": []}
    for sample in generate_samples(200, seed=0):
        if sample.family in picked and len(picked[sample.family]) < 4:
            picked[sample.family].append(sample.source)
    completions = [fenced(source) for sources in picked.values() for source in sources]
    with Runner("2048", workers=2, limits=Limits(move_s=1.0, episode_s=20, cpu_s=30)) as runner:
        results = runner.evaluate(completions, seeds=[0, 1])
        scored = Rubric().score_all(results, runner.spec.reward)
    assert all(r.error is None for r in results), [r.message for r in results if r.error]
    mean = {}
    for i, family in enumerate(picked):
        mean[family] = statistics.mean(s.total for s in scored[4 * i : 4 * i + 4])
    assert mean["bad"] < mean["weak_legal"] < mean["greedy"], mean
    weak_scores = [r.mean_score for r in results[4:8]]
    greedy_scores = [r.mean_score for r in results[8:12]]
    assert statistics.mean(greedy_scores) > 2 * statistics.mean(weak_scores)
