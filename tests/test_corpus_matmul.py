"""The matmul corpus: deterministic, every program passes the sandbox's checks, families ordered in the real task."""

from __future__ import annotations

import statistics

from stratagem.agents.programs import load
from stratagem.agents.rewards import Rubric, outcomes
from stratagem.agents.runner import Runner
from stratagem.envs.spec import resolve
from stratagem.rl.corpus import generate_programs, generate_samples, matmul, program_families


def fenced(source: str) -> str:
    return "```python\n" + source + "```"


def test_deterministic_and_a_prefix():
    assert generate_programs(60, seed=3, task="matmul") == generate_programs(60, seed=3, task="matmul")
    assert generate_programs(60, seed=3, task="matmul") != generate_programs(60, seed=4, task="matmul")
    assert generate_programs(25, seed=3, task="matmul") == generate_programs(60, seed=3, task="matmul")[:25]


def test_families_are_weighted_and_all_appear():
    weights = program_families("matmul")
    assert weights == matmul.FAMILIES and set(weights) == {"bad", "weak", "medium", "good"}
    assert abs(sum(weights.values()) - 1.0) < 1e-9
    samples = generate_samples(1000, seed=0, task="matmul")
    for family, weight in weights.items():
        assert abs(sum(s.family == family for s in samples) / 1000 - weight) < 0.05, family
    assert {s.variant for s in samples} >= {"textbook", "fsum", "reduce", "zip_loop", "aliased", "returns_a"}


def test_every_program_loads_is_short_and_answers_the_matmul_prompt():
    samples = generate_samples(300, seed=7, task="matmul")
    specs = {env: resolve(env) for env in ("matmul", "sandbox")}
    cells = [s for s in samples if s.env == "sandbox"]
    assert 0.1 < len(cells) / len(samples) < 0.3, "a share goes to the sandbox environment's matmul task"
    for sample in samples:
        assert sample.task == "matmul"
        if sample.env == "sandbox":  # the same program, sent as a code cell; the file form loads whole too
            assert sample.params == matmul.SANDBOX_PARAMS and "def strategy(observation)" in sample.prompt_text()
            assert load(sample.source, specs["sandbox"].strategy).source == sample.source
            assert sample.source.startswith('CODE = """\n') and "def matmul(A, B):" in sample.source
        else:
            assert sample.env == "matmul" and set(sample.params) <= {"size"}
            assert "`def matmul(A, B)`" in sample.prompt_text()
        assert load(fenced(sample.source), specs[sample.env].strategy).source == sample.source
    samples = [s for s in samples if s.env == "matmul"]
    lines = [s.source.count("\n") for s in samples]
    assert max(lines) <= 20 and statistics.median(lines) >= 4
    assert len({s.source for s in samples}) >= 25  # varied, not a handful of texts


def test_bad_programs_are_wrong_and_the_others_right_in_the_real_task():
    """One program of each variant (the first of seed 0), one episode: the bad ones' products are wrong (an
    error, reward at most -2), every other one's right (played to the end, won or lost on speed). Their
    speeds are measured by benchmarks/corpus_quality.py, not here: a test asserts no timing."""
    picked: dict[tuple[str, str], str] = {}
    for sample in generate_samples(300, seed=0, task="matmul"):
        if sample.env == "matmul":
            picked.setdefault((sample.family, sample.variant), sample.source)
    keys = sorted(picked)
    with Runner("matmul", {"size": 24, "trials": 1}, workers=1) as runner:
        results = runner.evaluate([fenced(picked[k]) for k in keys], seeds=[0])
        scored = Rubric().score_all(results, runner.spec.reward)
    assert {family for family, _ in keys} == set(matmul.FAMILIES)
    for (family, variant), result, score in zip(keys, results, scored, strict=True):
        kinds = outcomes(result)
        if family == "bad":
            assert not set(kinds) & {"win", "loss"} and score.total <= -2, (variant, kinds)
        else:
            assert set(kinds) <= {"win", "loss"} and score.total > 0, (variant, kinds, result.message)
