"""The synthetic-manifest corpus: made-up manifests whose programs copy what each declares, and programs derived
the same way for the real, held-out examples/custom_env, ordered when played there."""

from __future__ import annotations

import random
import re
import statistics
from pathlib import Path

import pytest

from stratagem.agents.programs import load
from stratagem.agents.prompts import task_prompt
from stratagem.agents.rewards import Rubric, outcomes
from stratagem.agents.runner import Runner
from stratagem.envs.spec import resolve
from stratagem.rl.corpus import generate_programs, generate_samples, manifests, program_families

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = ROOT / "examples" / "custom_env" / "openenv.yaml"


def fenced(source: str) -> str:
    return "```python\n" + source + "```"


def cases(n: int, seed: int) -> list:
    rng = random.Random(seed)
    return [manifests.case(rng) for _ in range(n)]


def test_deterministic_a_prefix_and_the_cases_are_the_samples():
    assert generate_programs(80, seed=3, task="manifest") == generate_programs(80, seed=3, task="manifest")
    assert generate_programs(80, seed=3, task="manifest") != generate_programs(80, seed=4, task="manifest")
    assert generate_samples(30, seed=3, task="manifest") == generate_samples(80, seed=3, task="manifest")[:30]
    assert [sample for _, sample in cases(50, 5)] == generate_samples(50, seed=5, task="manifest")


def test_families_and_archetypes_are_weighted():
    weights = program_families("manifest")
    assert weights == manifests.FAMILIES and abs(sum(weights.values()) - 1.0) < 1e-9
    samples = generate_samples(1500, seed=0, task="manifest")
    for family, weight in weights.items():
        assert abs(sum(s.family == family for s in samples) / 1500 - weight) < 0.05, family
    for archetype, weight in manifests.ARCHETYPES.items():
        share = sum(s.variant.startswith(archetype + "/") for s in samples) / 1500
        assert abs(share - weight) < 0.05, archetype


def test_every_program_loads_against_its_own_manifest_and_copies_its_names():
    for spec, sample in cases(300, 7):
        assert (sample.task, sample.env) == ("manifest", manifests.ENV)
        assert sample.prompt == sample.prompt_text() == task_prompt(spec)  # the prompt a user's manifest gets
        strategy = spec.strategy
        assert load(fenced(sample.source), strategy).source == sample.source  # its function, args and imports
        assert f"def {strategy.function}({', '.join(strategy.args)}):" in sample.source
        assert sample.source.count("\n") <= 20
        if sample.family == "good":  # a good program uses the values the prompt declares, quoted words included
            declared = set(re.findall(r"'([^']+)'", strategy.inputs + " " + strategy.returns))
            used = set(re.findall(r'"([^"]+)"', sample.source))
            assert used <= declared | set(re.findall(r"'([^']+)'", spec.description)), (used, declared)


def test_the_surface_varies():
    specs = [spec for spec, _ in cases(400, 11)]
    assert len({s.strategy.function for s in specs}) >= 5
    assert len({a for s in specs for a in s.strategy.args}) >= 30
    assert len({s.description for s in specs}) >= 150
    words = {(f["up"], f["down"]) for f in (manifests.parse_guess(s) for s in specs if "[" in s.strategy.inputs)}
    assert len(words) >= 6


def test_guess_manifests_read_back_as_written_and_the_held_out_one_is_never_made():
    rng = random.Random(2)
    held_out = resolve(HELD_OUT)
    held_facts = manifests.parse_guess(held_out)
    assert held_facts == {"fn": "strategy", "args": ["high", "history"], "imports": ["math"], "lo": "1", "hi": "high",
                          "hist": "history", "pair": ["guess", "hint"], "up": "higher", "down": "lower"}  # fmt: skip
    for _ in range(400):
        spec, facts = manifests.guess_spec(rng, "strategy", ["math"])
        assert manifests.parse_guess(spec) == facts
        assert facts != held_facts
    prompts = {sample.prompt for _, sample in cases(600, 3)}
    assert task_prompt(held_out) not in prompts
    for other in ("matmul", ROOT / "tests" / "toy_env" / "openenv.yaml"):
        with pytest.raises(ValueError):
            manifests.programs_for(resolve(other), random.Random(0))


def test_derived_programs_are_ordered_on_the_held_out_environment():
    """programs_for on examples/custom_env: 4 programs a family, 12 games each. bisection (good) always wins,
    counting and strides (weak) rarely, the bad ones err."""
    spec = resolve(HELD_OUT)
    rng = random.Random(0)
    picked = {family: manifests.programs_for(spec, rng, 4, family=family) for family in manifests.FAMILIES}
    samples = [s for family in picked.values() for s in family]
    for sample in samples:
        load(fenced(sample.source), spec.strategy)
    with Runner(HELD_OUT, workers=2) as runner:
        results = runner.evaluate([fenced(s.source) for s in samples], seeds=list(range(12)))
        scored = Rubric().score_all(results, runner.spec.reward)
    reward = {f: statistics.mean(x.total for s, x in zip(samples, scored, strict=True) if s.family == f)
              for f in picked}  # fmt: skip
    wins = {f: statistics.mean(r.win_rate for s, r in zip(samples, results, strict=True) if s.family == f)
            for f in picked}  # fmt: skip
    assert reward["bad"] < reward["weak"] < reward["medium"] < reward["good"], reward
    assert wins["good"] == 1.0 and wins["weak"] < 0.25, wins
    bad = [r for s, r in zip(samples, results, strict=True) if s.family == "bad"]
    assert all({"illegal"} & set(outcomes(r)) for r in bad)
