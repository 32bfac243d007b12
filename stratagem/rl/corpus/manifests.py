"""Synthetic user-defined environments: made-up manifests, and programs derived from what each declares.

``stratagem train --env ./their/openenv.yaml`` starts from a manifest the model never saw. What it can rely on is
the prompt: the strategy block's function, arguments, inputs, returns and imports (``agents/prompts.py``). So
each sample here is a made-up manifest (an ``EnvSpec`` built in memory, its prompt built by ``task_prompt``,
exactly as a user's would be) and a program that COPIES the declared names and values into code: the function
and argument names, the bounds, the quoted words, the dict keys, the imports. The surface (themes, names, words,
phrasing) varies from sample to sample, so the model learns to copy, not to remember one manifest.

Archetypes of what users declare (``ARCHETYPES``), each with the same four families:

- ``guess``: a guessing game with feedback, the class of examples/custom_env (held out: its exact manifest is
  never generated). Bounds are literals or arguments; the history is a list of [guess, hint] (or [hint, guess])
  pairs whose hint words the inputs declare, either as where the secret lies ('higher', 'up', ...) or as what
  the guess was ('too high', 'over', ...). bad: out of range, a float, hints read backwards; weak: counting up or
  down, a fixed stride, a random guess (when random is importable); medium: bounds narrowed by the hints, then a
  random guess, a third of the way, a fixed step, or a midpoint whose bounds are off by one; good: the midpoint.
- ``bid``: an int in a range bounded by an argument (coins left): bad out of range or a float; weak 0, all-in,
  random; medium a fixed fraction; good the coins spread over the rounds left.
- ``pick``: one of three quoted names in a cycle of beats (declared in the description): bad an undeclared name;
  weak a constant, a random or cycling pick; medium beat the opponent's last pick; good beat its most frequent.
- ``item``: an item of a list argument: bad an index, a value not in the list; weak the first, last or random;
  medium the median or the best of the first few; good the min / max / closest to a target argument.
- ``threshold``: one of two quoted words from two numeric arguments: bad an undeclared word; weak constant or
  random; medium one threshold on one argument; good thresholds on both.
- ``move``: an action dict with declared keys, from an observation dict with declared keys: bad a wrong key or
  value; weak constant or random; medium along one axis toward the goal; good along both.

Only ``guess`` can be played for real here: ``programs_for(spec, rng)`` reads a real manifest of that class (the
same archetype logic: ``parse_guess`` recovers what ``guess_spec`` writes) and derives its programs. Measured on
examples/custom_env (1..100, 7 guesses, imports math only: no random guesses), 120 programs of ``programs_for(spec,
random.Random(0), 120)`` x 100 games, default rubric, mean reward / win rate: bad -1.24 / 0.00 (reading the hints
backwards plays on and loses, the others are illegal at once); weak 1.09 / 0.07 (counting up 0.06, down 0.09, a
stride 0.05); medium 1.66 / 0.56 (a fixed step 0.28, a third or a quarter of the way 0.68, a midpoint with bounds
off by one 0.99); good 2.16 / 1.00 (every midpoint form wins every game).
"""

from __future__ import annotations

import random
import re

from stratagem.agents.prompts import task_prompt
from stratagem.envs.spec import EnvSpec, StrategySpec
from stratagem.rl.corpus.common import Sample, draw, program

FAMILIES: dict[str, float] = {"bad": 0.15, "weak": 0.35, "medium": 0.3, "good": 0.2}
ARCHETYPES: dict[str, float] = {"guess": 0.3, "bid": 0.14, "pick": 0.14, "item": 0.14, "threshold": 0.14,
                                "move": 0.14}  # fmt: skip
ENV = "manifest-synthetic"  # the samples' env label: their prompt is their own
FUNCTIONS = ("strategy", "strategy", "strategy", "policy", "act", "choose", "decide")
IMPORTS = ("math", "random", "collections", "itertools")
# (secret-relative words: secret above, below), (guess-relative words: guess above, below)
SECRET_WORDS = (("higher", "lower"), ("up", "down"), ("above", "below"), ("bigger", "smaller"), ("more", "less"))
GUESS_WORDS = (("too high", "too low"), ("over", "under"), ("high", "low"), ("too big", "too small"))
UP = ("higher", "above", "greater", "larger", "bigger", "high", "big", "more", "over")
DOWN = ("lower", "below", "smaller", "less", "low", "small", "under")
THINGS = ("secret", "hidden number", "target", "code", "treasure depth", "mystery number", "chosen floor")
TOPS = ("high", "top", "limit", "maximum", "upper", "n", "size", "biggest")
LOWS = ("low", "bottom", "least", "start", "first")
HISTORIES = ("history", "hints", "feedback", "log", "past", "clues", "tries", "answers")
TITLES = ("Higher or lower", "Guess the number", "Hot and cold", "Find the floor", "Crack the code", "Sonar",
          "Number hunt", "Treasure dive", "Lock pick", "Twenty guesses")  # fmt: skip


def generate(rng: random.Random) -> Sample:
    """One program for one made-up manifest; the sample's ``prompt`` is that manifest's task prompt."""
    return case(rng)[1]


def case(rng: random.Random) -> tuple[EnvSpec, Sample]:
    """(the made-up manifest, a sample answering it): the archetype, its declared names and the family from ``rng``."""
    archetype = draw(rng, ARCHETYPES)
    fn, imports = rng.choice(FUNCTIONS), sorted(rng.sample(IMPORTS, rng.choice((0, 1, 1, 2, 3))))
    spec, facts = SPECS[archetype](rng, fn, imports)
    family = draw(rng, FAMILIES)
    variant, source = PROGRAMS[archetype](rng, family, facts)
    return spec, Sample(family, f"{archetype}/{variant}", source, task="manifest", env=ENV, prompt=task_prompt(spec))


def make_spec(rng: random.Random, title: str, description: str, fn: str, args: list[str], goal: str,
              inputs: str, returns: str, imports: list[str]) -> EnvSpec:  # fmt: skip
    name = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") + rng.choice(("", "", "-v2", "-game", "-env"))
    return EnvSpec(name=name, entry_point=f"{name.replace('-', '_')}:Env", description=f"{title}: {description}",
                   strategy=StrategySpec(function=fn, args=args, goal=goal, inputs=inputs, returns=returns,
                                         imports=imports))  # fmt: skip


def listed(names: list[str]) -> str:
    """A list of strings in the corpus's one spelling (double quotes)."""
    return "[" + ", ".join(f'"{name}"' for name in names) + "]"


def signature(facts: dict) -> str:
    return f"def {facts['fn']}({', '.join(facts['args'])}):"


# ---------------------------------------------------------------------------------------------
# guess: the class of examples/custom_env. ``facts``: fn, args, imports, lo/hi (source: a literal or an
# argument), hist, pair (the pair's names in order), up/down (the hint words meaning the secret is above/below).


def guess_spec(rng: random.Random, fn: str, imports: list[str]) -> tuple[EnvSpec, dict]:
    while True:
        hi_arg, hist = rng.choice(TOPS), rng.choice(HISTORIES)
        shape = rng.choice(("top", "top", "both", "literal"))
        lo = rng.choice(LOWS) if shape == "both" else rng.choice(("1", "1", "0"))
        hi = hi_arg if shape != "literal" else str(rng.choice((10, 20, 50, 100, 200, 1000)))
        args = {"top": [hi, hist], "both": [lo, hi, hist], "literal": [hist]}[shape]
        if shape == "top" and rng.random() < 0.2:
            args.reverse()
        secret_side = rng.random() < 0.7
        words = rng.choice(SECRET_WORDS if secret_side else GUESS_WORDS)
        up, down = words if secret_side else words[::-1]  # a guess 'too high' means the secret is below it
        pair = ["guess", rng.choice(("hint", "hint", "clue", "answer"))]
        if rng.random() < 0.2:
            pair.reverse()
        held_out = args == ["high", "history"] and lo == "1" and (up, down) == ("higher", "lower")
        if not held_out:
            break
    thing, tries = rng.choice(THINGS), rng.choice((5, 7, 8, 10, 12))
    label = pair[1] if pair[0] == "guess" else pair[0]
    if secret_side:
        meaning = (f"'{up}' means the {thing} is {rng.choice(('higher than', 'above'))} the guess and '{down}' "
                   f"means it is {rng.choice(('lower', 'below it'))}")  # fmt: skip
    else:
        meaning = f"'{words[0]}' means the guess was {rng.choice(('too high', 'above it'))} and '{words[1]}' " \
                  f"means the guess was {rng.choice(('too low', 'below it'))}"  # fmt: skip
    parts = {hi: f"{hi}: the {thing} is an integer from {lo} to {hi}", lo: f"{lo}: the smallest it can be",
             hist: f"{hist}: the wrong guesses so far, a list of [{pair[0]}, {pair[1]}] pairs, where {label} "
             f"{meaning}"}  # fmt: skip
    inputs = "; ".join(parts[a] for a in args)
    spec = make_spec(rng, rng.choice(TITLES), f"find the {thing}, an integer from {lo} to {hi}, in at most {tries} "
                     "guesses; each wrong guess is answered with a hint.", fn, args,
                     rng.choice(("finds the {t} in as few guesses as possible. It is called once per guess with "
                                 "every hint so far.", "guesses the {t} quickly; fewer guesses score more.")
                                ).format(t=thing), inputs,
                     f"the next guess, an int from {lo} to {hi}", imports)  # fmt: skip
    return spec, {"fn": fn, "args": args, "imports": imports, "lo": lo, "hi": hi, "hist": hist, "pair": pair,
                  "up": up, "down": down}  # fmt: skip


def parse_guess(spec: EnvSpec) -> dict:
    """The facts ``guess_programs`` needs, read from a real manifest of the guess class; ValueError if not one."""
    s = spec.strategy
    bounds = re.search(r"from (-?\d+|[A-Za-z]\w*) to (-?\d+|[A-Za-z]\w*)", s.returns + " " + s.inputs)
    segments = {part.split(":")[0].strip(): part for part in s.inputs.split(";")}
    hist = next((a for a in s.args if "[" in segments.get(a, "") and "'" in segments.get(a, "")), None)
    if bounds is None or hist is None:
        raise ValueError(f"{spec.name}: not a guessing game with bounds and a history of hints")
    pair = re.search(r"\[(\w+), (\w+)\]", segments[hist])
    up = down = None
    for word, meaning in re.findall(r"'([^']+)' (?:means )?([^';]*)", segments[hist]):
        found = [(meaning.find(w), w in UP) for w in UP + DOWN if re.search(rf"\b{w}\b", meaning)]
        if found:
            at, above = min(found)
            if "guess" in meaning[:at]:  # the guess was above: the secret is below
                above = not above
            up, down = (word, down) if above else (up, word)
    if pair is None or up is None or down is None:
        raise ValueError(f"{spec.name}: no [guess, hint] pairs or hint words found in its inputs")
    return {"fn": s.function, "args": list(s.args), "imports": list(s.imports), "lo": bounds[1], "hi": bounds[2],
            "hist": hist, "pair": [pair[1], pair[2]], "up": up, "down": down}  # fmt: skip


def guess_programs(rng: random.Random, family: str, f: dict) -> tuple[str, str]:
    lo, hi, hist, rand = f["lo"], f["hi"], f["hist"], "random" in f["imports"]
    imports = ["import random"] if rand else []

    hint = next(name for name in f["pair"] if name != "guess")

    def narrowed(up: str, down: str, off: int = 1) -> str:
        plus, minus = (f" + {off}", f" - {off}") if off else ("", "")
        a, b = (f"max(lo, guess{plus})", f"min(hi, guess{minus})") if rng.random() < 0.6 else \
            (f"guess{plus}", f"guess{minus}")  # fmt: skip
        other = "else:" if rng.random() < 0.6 else f'elif {hint} == "{down}":'
        return f"""    lo, hi = {lo}, {hi}
    for {", ".join(f["pair"])} in {hist}:
        if {hint} == "{up}":
            lo = {a}
        {other}
            hi = {b}
"""

    def done(kind: str, body: str, *extra: str) -> tuple[str, str]:
        return kind, program(*extra, f"{signature(f)}\n{body}")

    if family == "bad":
        kind = rng.choice(("out_of_range", "float", "backwards"))
        if kind == "out_of_range":
            return done(kind, rng.choice((f"    return {hi} + 1\n", f"    return {lo} - 1\n",
                                          f"    return {hi} + 1 + len({hist})\n")))  # fmt: skip
        if kind == "float":
            return done(kind, narrowed(f["up"], f["down"]) + "    return (lo + hi) / 2\n")
        return done(kind, narrowed(f["down"], f["up"]) + "    return (lo + hi) // 2\n")
    if family == "weak":
        kind = rng.choice(("count_up", "count_down", "stride") + ("random",) * rand)
        body = {"count_up": f"    return {lo} + len({hist})\n", "count_down": f"    return {hi} - len({hist})\n",
                "stride": f"    return min({hi}, {lo} + {rng.choice((3, 5, 10, 15))} * len({hist}))\n",
                "random": f"    return random.randint({lo}, {hi})\n"}[kind]  # fmt: skip
        return done(kind, body, *imports if kind == "random" else [])
    if family == "medium":
        kind = rng.choice(("third", "step", "off_by_one") + ("narrow_random",) * (2 * rand))
        if kind == "off_by_one":
            return done(kind, narrowed(f["up"], f["down"], off=0) + "    return (lo + hi) // 2\n")
        tail = {"narrow_random": "    return random.randint(lo, hi)\n",
                "third": f"    return lo + (hi - lo) // {rng.choice((3, 4))}\n",
                "step": f"    return min(hi, lo + {rng.choice((4, 8, 12))})\n"}[kind]  # fmt: skip
        return done(kind, narrowed(f["up"], f["down"]) + tail, *imports if kind == "narrow_random" else [])
    tails = ["(lo + hi) // 2", "lo + (hi - lo) // 2", "(lo + hi + 1) // 2"]
    tails += ["math.floor((lo + hi) / 2)"] if "math" in f["imports"] else []
    tail = rng.choice(tails)
    return done("midpoint", narrowed(f["up"], f["down"]) + f"    return {tail}\n", *["import math"] * ("math." in tail))


# ---------------------------------------------------------------------------------------------
# The other archetypes: made up only (no real environment of theirs is played here).


def bid_spec(rng: random.Random, fn: str, imports: list[str]) -> tuple[EnvSpec, dict]:
    money, rnd = rng.choice(("coins", "budget", "gold", "cash", "chips")), rng.choice(("round", "turn", "day"))
    rounds, item = rng.choice((5, 8, 10, 20)), rng.choice(("lots", "paintings", "crates", "tickets", "horses"))
    args = [money, rnd] if rng.random() < 0.7 else [rnd, money]
    spec = make_spec(rng, rng.choice(("Auction", "Sealed bids", "Bidding war", "Market day")),
                     f"{rounds} {rnd}s of sealed bids for {item}; the higher bid wins, and every bid is paid.",
                     fn, args, f"wins as many {item} as possible with the {money} it has.",
                     f"{money}: the {money} you have left, an int; {rnd}: this {rnd}'s number, from 1 to {rounds}"
                     if args[0] == money else f"{rnd}: this {rnd}'s number, from 1 to {rounds}; {money}: the "
                     f"{money} you have left, an int", f"your bid, an int from 0 to {money}", imports)  # fmt: skip
    return spec, {"fn": fn, "args": args, "imports": imports, "money": money, "rnd": rnd, "rounds": rounds}


def bid_programs(rng: random.Random, family: str, f: dict) -> tuple[str, str]:
    m, r, rand = f["money"], f["rnd"], "random" in f["imports"]
    options = {"bad": {"over": f"return {m} + 1", "negative": "return -1", "float": f"return {m} / 2"},
               "weak": {"zero": "return 0", "all_in": f"return {m}"} | ({"random": f"return random.randint(0, {m})"}
                                                                        if rand else {}),
               "medium": {"fraction": f"return {m} // {rng.choice((2, 3, 4, 5))}",
                          "capped": f"return min({m}, {rng.choice((5, 10, 20))})"},
               "good": {"spread": f"left = {f['rounds']} - {r} + 1\n    return {m} // left",
                        "spread_extra": f"left = {f['rounds']} - {r} + 1\n    return min({m}, {m} // left + "
                        f"{rng.choice((1, 2, 3))})"}}[family]  # fmt: skip
    kind = rng.choice(sorted(options))
    return kind, program(*["import random"] * ("random." in options[kind]), f"{signature(f)}\n    {options[kind]}")


CYCLES = (("rock", "paper", "scissors"), ("fire", "water", "grass"), ("knight", "archer", "mage"),
          ("cat", "dog", "mouse"), ("sun", "cloud", "wind"), ("stone", "vine", "blade"))  # fmt: skip


def pick_spec(rng: random.Random, fn: str, imports: list[str]) -> tuple[EnvSpec, dict]:
    names, hist = list(rng.choice(CYCLES)), rng.choice(("history", "opponent", "their_moves", "seen", "past"))
    rng.shuffle(names)
    beats = {names[(i + 1) % 3]: names[i] for i in range(3)}  # winner -> loser
    rules = ", ".join(f"'{w}' beats '{loser}'" for w, loser in beats.items())
    quoted = ", ".join(f"'{n}'" for n in names)
    spec = make_spec(rng, rng.choice(("Triad", "Three ways", "Duel", "Showdown")), f"each round both players pick one "
                     f"of {quoted}; {rules}.", fn, [hist], "beats the opponent in as many rounds as possible.",
                     f"{hist}: the opponent's picks in earlier rounds, oldest first (empty at first)",
                     f"one of {quoted}", imports)  # fmt: skip
    return spec, {"fn": fn, "args": [hist], "imports": imports, "names": names, "beats": beats, "hist": hist}


def pick_programs(rng: random.Random, family: str, f: dict) -> tuple[str, str]:
    names, h = f["names"], f["hist"]
    counter = "COUNTER = {" + ", ".join(f'"{loser}": "{w}"' for w, loser in f["beats"].items()) + "}"
    options = {"bad": {"capital": f'return "{names[0].title()}"', "index": "return 0",
                       "undeclared": f'return "{rng.choice(("stone", "paper", "none", "pass"))}"'},
               "weak": {"constant": f'return "{rng.choice(names)}"', "cycle": f"return {listed(names)}[len({h}) % 3]"}
               | ({"random": f"return random.choice({listed(names)})"} if "random" in f["imports"] else {}),
               "medium": {"beat_last": f'if not {h}:\n        return "{names[0]}"\n    return COUNTER[{h}[-1]]'},
               "good": {"beat_most": f"return COUNTER[max({listed(names)}, key={h}.count)]"}}[family]  # fmt: skip
    kind = rng.choice(sorted(options))
    extra = ["import random"] * ("random." in options[kind]) + [counter] * ("COUNTER" in options[kind])
    return kind, program(*extra, f"{signature(f)}\n    {options[kind]}")


def item_spec(rng: random.Random, fn: str, imports: list[str]) -> tuple[EnvSpec, dict]:
    items, attr = rng.choice((("offers", "price"), ("cards", "value"), ("bins", "weight"), ("roads", "length")))
    want = rng.choice(("lowest", "highest", "closest"))
    target = rng.choice(("target", "goal", "aim")) if want == "closest" else None
    args = [items, target] if target else [items]
    goal = f"takes the one whose {attr} is closest to {target}" if target else f"takes the one with the {want} {attr}"
    inputs = f"{items}: the {attr}s on offer this turn, a non-empty list of ints" + \
        (f"; {target}: the {attr} you aim for, an int" if target else "")  # fmt: skip
    title = rng.choice(("Pick one", "Shopping", "Sorting hat", "Take one"))
    spec = make_spec(rng, title, f"each turn shows a list of {items}; you take one.", fn, args, goal + ".", inputs,
                     f"one item of {items}", imports)  # fmt: skip
    return spec, {"fn": fn, "args": args, "imports": imports, "items": items, "want": want, "target": target}


def item_programs(rng: random.Random, family: str, f: dict) -> tuple[str, str]:
    xs, t = f["items"], f["target"]
    best = {"lowest": f"min({xs})", "highest": f"max({xs})"}.get(f["want"], f"min({xs}, key=lambda x: abs(x - {t}))")
    options = {"bad": {"index": f"return {xs}.index({best})", "outside": f"return max({xs}) + 1",
                       "list": f"return {xs}"},
               "weak": {"first": f"return {xs}[0]", "last": f"return {xs}[-1]"}
               | ({"random": f"return random.choice({xs})"} if "random" in f["imports"] else {}),
               "medium": {"median": f"return sorted({xs})[len({xs}) // 2]",
                          "first_few": f"return {best.replace(xs, xs + '[:3]', 1)}"},
               "good": {"best": f"return {best}"}}[family]  # fmt: skip
    kind = rng.choice(sorted(options))
    return kind, program(*["import random"] * ("random." in options[kind]), f"{signature(f)}\n    {options[kind]}")


THRESHOLDS = (
    ("Blackjack", "total", "dealer", "hit", "stand", 21),
    ("Trader", "price", "trend", "buy", "wait", 100),
    ("Arena", "health", "enemy", "attack", "defend", 50),
    ("Garden", "moisture", "sun", "water", "skip", 10),
)


def threshold_spec(rng: random.Random, fn: str, imports: list[str]) -> tuple[EnvSpec, dict]:
    title, a, b, act, rest, top = rng.choice(THRESHOLDS)
    spec = make_spec(rng, title, f"each turn decide whether to {act} or {rest}; the score is kept at the end.", fn,
                     [a, b], f"decides each turn whether to {act} or {rest}, scoring as much as possible.",
                     f"{a}: an int from 0 to {top}; {b}: an int from 0 to {top}",
                     f"'{act}' or '{rest}'", imports)  # fmt: skip
    return spec, {"fn": fn, "args": [a, b], "imports": imports, "act": act, "rest": rest, "top": top}


def threshold_programs(rng: random.Random, family: str, f: dict) -> tuple[str, str]:
    (a, b), act, rest, top = f["args"], f["act"], f["rest"], f["top"]
    t1, t2 = sorted(rng.sample(range(top // 4, top), 2))
    options = {"bad": {"capital": f'return "{act.title()}"', "bool": "return True", "none": "return None"},
               "weak": {"constant": f'return "{rng.choice((act, rest))}"'}
               | ({"random": f'return random.choice(["{act}", "{rest}"])'} if "random" in f["imports"] else {}),
               "medium": {"one": f'return "{act}" if {a} < {t2} else "{rest}"'},
               "good": {"two": f'if {a} < {t1}:\n        return "{act}"\n    if {a} < {t2} and {b} > {top // 2}:\n'
                        f'        return "{act}"\n    return "{rest}"'}}[family]  # fmt: skip
    kind = rng.choice(sorted(options))
    return kind, program(*["import random"] * ("random." in options[kind]), f"{signature(f)}\n    {options[kind]}")


GRIDS = (("x", "y", "goal_x", "goal_y"), ("col", "row", "target_col", "target_row"), ("px", "py", "fx", "fy"))


def move_spec(rng: random.Random, fn: str, imports: list[str]) -> tuple[EnvSpec, dict]:
    keys, (dx, dy) = rng.choice(GRIDS), rng.choice((("dx", "dy"), ("move_x", "move_y"), ("h", "v")))
    obs, goal = rng.choice(("observation", "obs", "state")), rng.choice(("exit", "flag", "food", "goal"))
    spec = make_spec(rng, rng.choice(("Grid walk", "Maze", "Forager", "Rover")), f"walk a grid to the {goal} in as "
                     "few steps as possible.", fn, [obs], f"reaches the {goal} quickly.",
                     f"{obs}: a dict with '{keys[0]}' and '{keys[1]}' (your cell) and '{keys[2]}' and '{keys[3]}' "
                     f"(the cell of the {goal}), all ints", f"a dict {{'{dx}': -1, 0 or 1, '{dy}': -1, 0 or 1}}",
                     imports)  # fmt: skip
    return spec, {"fn": fn, "args": [obs], "imports": imports, "keys": keys, "dx": dx, "dy": dy}


def move_programs(rng: random.Random, family: str, f: dict) -> tuple[str, str]:
    o, (x, y, gx, gy), dx, dy = f["args"][0], f["keys"], f["dx"], f["dy"]
    sx, sy = f'({o}["{gx}"] > {o}["{x}"]) - ({o}["{gx}"] < {o}["{x}"])', f'({o}["{gy}"] > {o}["{y}"]) - ' \
        f'({o}["{gy}"] < {o}["{y}"])'  # fmt: skip
    options = {"bad": {"wrong_key": f'return {{"{x}": 1, "{y}": 0}}', "too_far": f'return {{"{dx}": 2, "{dy}": 0}}',
                       "tuple": "return (1, 0)"},
               "weak": {"constant": f'return {{"{dx}": {rng.choice((-1, 1))}, "{dy}": 0}}'}
               | ({"random": f'return {{"{dx}": random.choice([-1, 0, 1]), "{dy}": random.choice([-1, 0, 1])}}'}
                  if "random" in f["imports"] else {}),
               "medium": {"one_axis": f'return {{"{dx}": {sx}, "{dy}": 0}}'},
               "good": {"both_axes": f'return {{"{dx}": {sx}, "{dy}": {sy}}}'}}[family]  # fmt: skip
    kind = rng.choice(sorted(options))
    return kind, program(*["import random"] * ("random." in options[kind]), f"{signature(f)}\n    {options[kind]}")


SPECS = {"guess": guess_spec, "bid": bid_spec, "pick": pick_spec, "item": item_spec, "threshold": threshold_spec,
         "move": move_spec}  # fmt: skip
PROGRAMS = {"guess": guess_programs, "bid": bid_programs, "pick": pick_programs, "item": item_programs,
            "threshold": threshold_programs, "move": move_programs}  # fmt: skip


def programs_for(spec: EnvSpec, rng: random.Random, n: int = 1, family: str | None = None) -> list[Sample]:
    """``n`` programs for a real manifest of the guess class (families drawn by ``FAMILIES`` unless given), derived
    as the synthetic ones are; raises ValueError for a manifest of another class."""
    facts = parse_guess(spec)
    samples = []
    for _ in range(n):
        fam = family or draw(rng, FAMILIES)
        variant, source = guess_programs(rng, fam, facts)
        samples.append(Sample(fam, f"guess/{variant}", source, task="manifest", env=str(spec.source or spec.name),
                              prompt=task_prompt(spec)))  # fmt: skip
    return samples
