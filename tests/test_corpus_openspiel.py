"""The OpenSpiel corpus: deterministic, every program passes the sandbox's checks, legal in games it never
names, and its families ordered on tic_tac_toe (the training target) against the random opponent."""

from __future__ import annotations

import statistics
from collections import Counter

from stratagem.agents.programs import build, load
from stratagem.agents.rewards import Rubric, outcomes
from stratagem.agents.runner import Limits, Runner
from stratagem.envs.openspiel_games import load_servable_game
from stratagem.envs.spec import resolve
from stratagem.rl.corpus import generate_programs, generate_samples, openspiel, program_families

TASK = "openspiel"
LIMITS = Limits(move_s=1.0, episode_s=20, cpu_s=30)


def fenced(source: str) -> str:
    """A program as the model is trained to write it."""
    return "```python\n" + source + "```"


def test_same_seed_same_corpus_and_another_seed_another():
    assert generate_programs(60, seed=3, task=TASK) == generate_programs(60, seed=3, task=TASK)
    assert generate_programs(60, seed=3, task=TASK) != generate_programs(60, seed=4, task=TASK)
    assert generate_programs(25, seed=3, task=TASK) == generate_programs(60, seed=3, task=TASK)[:25]
    assert generate_samples(60, seed=3, task=TASK)[:25] == generate_samples(25, seed=3, task=TASK)


def test_samples_name_the_env_and_a_servable_game():
    samples = generate_samples(300, seed=2, task=TASK)
    assert {(s.task, s.env) for s in samples} == {(TASK, "openspiel")}
    assert {s.family for s in samples} == set(program_families(TASK))
    games = Counter(s.params.get("game", "tic_tac_toe") for s in samples)
    for game in games:
        load_servable_game(game)  # raises for a name OpenSpiel does not know or this environment refuses
    assert all(set(s.params) <= {"game", "player"} for s in samples)
    assert games.most_common(1)[0][0] == "tic_tac_toe" and games["tic_tac_toe"] >= 0.4 * len(samples), games
    assert sum(s.params == {} for s in samples) >= 0.15 * len(samples)  # the default game, as `train` runs it
    assert len(games) >= 12, games  # generic programs over a spread of games
    assert (
        "This run: game=connect_four." in next(s for s in samples if s.params == {"game": "connect_four"}).prompt_text()
    )


def test_families_are_weighted_and_all_appear():
    weights = program_families(TASK)
    assert set(weights) == {"bad", "weak", "medium", "good"}
    assert abs(sum(weights.values()) - 1.0) < 1e-9
    counts = Counter(s.family for s in generate_samples(1000, seed=0, task=TASK))
    for family, weight in weights.items():
        assert abs(counts[family] / 1000 - weight) < 0.05, counts


def test_every_program_passes_the_sandbox_checks_and_is_short():
    strategy = resolve("openspiel").strategy
    samples = generate_samples(300, seed=7, task=TASK)
    for sample in samples:
        program = load(fenced(sample.source), strategy)
        assert program.source == sample.source  # extracted whole: nothing trimmed, nothing added
    lines = [s.source.count("\n") for s in samples]
    assert max(lines) <= 45
    aware = [s.source.count("\n") for s in samples if s.family in ("medium", "good")]
    assert 8 <= statistics.median(aware) <= 35, sorted(aware)
    assert len({s.source for s in samples}) > 100  # varied, not a handful of programs repeated


def test_families_are_ordered_on_tic_tac_toe_in_the_real_sandbox():
    """bad < weak < medium < good in mean reward, on the default game and the same 32 games for all."""
    picked: dict[str, list[str]] = {family: [] for family in program_families(TASK)}
    for sample in generate_samples(400, seed=0, task=TASK):
        if sample.params == {} and len(picked[sample.family]) < 8:
            picked[sample.family].append(sample.source)
    assert all(len(sources) == 8 for sources in picked.values()), {f: len(s) for f, s in picked.items()}
    completions = [fenced(source) for sources in picked.values() for source in sources]
    with Runner("openspiel", {}, workers=2, limits=LIMITS) as runner:
        results = runner.evaluate(completions, seeds=list(range(32)))
        scored = Rubric().score_all(results, runner.spec.reward)
    mean, wins = {}, {}
    for i, family in enumerate(picked):
        mean[family] = statistics.mean(s.total for s in scored[8 * i : 8 * i + 8])
        wins[family] = statistics.mean(r.win_rate for r in results[8 * i : 8 * i + 8])
    assert mean["bad"] < mean["weak"] < mean["medium"] < mean["good"], mean
    bad_kinds = [k for r in results[:8] for k in outcomes(r)]
    assert bad_kinds.count("illegal") + bad_kinds.count("crash") > len(bad_kinds) / 2, Counter(bad_kinds)
    legal_kinds = {k for r in results[8:] for k in outcomes(r)}
    assert legal_kinds <= {"win", "loss"}, legal_kinds
    assert wins["good"] > 0.8 and wins["weak"] < wins["good"], wins


def test_generic_programs_are_legal_in_other_games():
    """The weak family's generic programs (first, last, middle, random, by name...) on games with no
    game-aware program, one of them (phantom_ttt) never named by the corpus: every episode played to its end."""
    generic = {}
    for sample in generate_samples(400, seed=5, task=TASK):
        if sample.family == "weak":
            generic.setdefault(sample.variant, sample.source)
    assert len(generic) >= 6, sorted(generic)
    completions = [fenced(source) for source in generic.values()]
    assert "phantom_ttt" not in openspiel.OTHER_GAMES
    for game in ("breakthrough", "leduc_poker", "othello", "phantom_ttt"):
        with Runner("openspiel", {"game": game}, workers=2, limits=LIMITS) as runner:
            results = runner.evaluate(completions, seeds=[0])
        kinds = {variant: outcomes(r) for variant, r in zip(generic, results, strict=True)}
        assert all(set(k) <= {"win", "loss"} for k in kinds.values()), (game, kinds)


def test_game_aware_programs_win_more_than_random_in_their_games():
    """connect_four, kuhn_poker and goofspiel: the good family beats the weak one against the random opponent."""
    samples = generate_samples(600, seed=11, task=TASK)
    for game in ("connect_four", "kuhn_poker", "goofspiel"):
        picked: dict[str, list[str]] = {"weak": [], "good": []}
        for sample in samples:
            if sample.params == {"game": game} and sample.family in picked and len(picked[sample.family]) < 3:
                picked[sample.family].append(sample.source)
        assert all(picked.values()), (game, {f: len(s) for f, s in picked.items()})
        completions = [fenced(s) for s in picked["weak"] + picked["good"]]
        with Runner("openspiel", {"game": game}, workers=2, limits=LIMITS) as runner:
            results = runner.evaluate(completions, seeds=list(range(40)))
        weak = statistics.mean(r.win_rate for r in results[: len(picked["weak"])])
        good = statistics.mean(r.win_rate for r in results[len(picked["weak"]) :])
        assert good > weak, (game, weak, good)


def tic_tac_toe(xs: set[int], os: set[int], player: int = 0) -> dict:
    """The observation of a tic_tac_toe position, as the environment hands it to a program."""
    marks = ["x" if i in xs else "o" if i in os else "." for i in range(9)]
    text = "\n".join("".join(marks[3 * r : 3 * r + 3]) for r in range(3))
    legal = [{"id": i, "name": f"{'xo'[player]}({i // 3},{i % 3})"} for i in range(9) if marks[i] == "."]
    return {"game": "tic_tac_toe", "player": player, "observation_string": text, "observation_tensor": [],
            "observation_shape": [3, 3, 3], "legal_actions": legal}  # fmt: skip


def test_game_aware_tic_tac_toe_programs_read_the_position():
    """Where x can complete a line (cell 2) and o cannot, every good and every win-first medium program takes it;
    where o threatens (cell 2) and x cannot win, every good and every block-first medium program blocks."""
    spec = resolve("openspiel").strategy
    chosen: dict[str, list] = {"win": [], "block": []}
    for sample in generate_samples(300, seed=4, task=TASK):
        if sample.params.get("game", "tic_tac_toe") == "tic_tac_toe" and sample.params.get("player", 0) == 0:
            move = build(load(fenced(sample.source), spec), spec)
            if sample.family == "good" or sample.variant.startswith("win_then"):
                chosen["win"].append(move)
            if sample.family == "good" or sample.variant.startswith("block_then"):
                chosen["block"].append(move)
    assert len(chosen["win"]) >= 20 and len(chosen["block"]) >= 20, {k: len(v) for k, v in chosen.items()}
    assert len(chosen["win"]) - len(chosen["block"]) >= 8  # win-first medium programs are common
    assert {move(tic_tac_toe({0, 1}, {3, 8})) for move in chosen["win"]} == {2}
    assert {move(tic_tac_toe({3, 8}, {0, 1})) for move in chosen["block"]} == {2}


def test_the_module_keeps_its_dialect():
    """One helper name per role: the legal ids are always `legal`, tic_tac_toe's line finder `completes`."""
    for sample in generate_samples(300, seed=9, task=TASK):
        source = sample.source
        if 'observation["legal_actions"]]' in source and 'a["id"]' in source:
            assert 'legal = [a["id"] for a in observation["legal_actions"]]' in source
        if "LINES" in source:
            assert "def completes(cells, mark):" in source
    assert openspiel.FAMILIES == program_families(TASK)
